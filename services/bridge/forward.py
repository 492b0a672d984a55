"""The bridge's work, without nameko: a case event out as a CloudEvent to the city
platform (HTTP and/or AMQP), a city task in as a report.

Delivery: HTTP POST in structured mode, BRIDGE_HTTP_TRIES attempts with a short back-off;
2xx is delivered; a 4xx other than 408/429 means the platform refuses this event for good
(dead-lettered with its answer); anything else — 5xx, timeout, refused connection — and
the event is held and tried again with back-off until the platform is back (the
consumer's transient path, shared/resilience.py). AMQP: a confirmed, mandatory publish to
BRIDGE_AMQP_EXCHANGE with the event type as routing key; unroutable or unconfirmed →
held the same way. An event is acked only when every configured target has it; a retry
after a partial success sends the same CloudEvent `id` again (receivers drop repeats).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import redis
import structlog

from services.bridge import cloud
from shared import metrics
from shared import redis_keys as keys
from shared.crosswalk import Crosswalk
from shared.models import Report
from shared.nameko_ext import Rejected
from shared.resilience import DependencyUnavailable

log = structlog.get_logger("gridbus.bridge")
KEEP_S = 400 * 86400  # how long a case's city identity is remembered (a year and a bit)
RETRYABLE = {408, 429}

AmqpPublish = Callable[[str, bytes, dict[str, Any]], None]  # routing key, body, properties


@dataclass(frozen=True)
class Targets:
    source: str
    type_prefix: str
    http_url: str = ""
    http_tries: int = 3
    timeout_s: float = 5.0
    amqp_exchange: str = ""


class Forwarder:
    def __init__(
        self,
        client: redis.Redis,
        crosswalk: Crosswalk,
        targets: Targets,
        http: httpx.Client | None = None,
        amqp_publish: AmqpPublish | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.r = client
        self.crosswalk = crosswalk
        self.targets = targets
        self.http = http or httpx.Client(timeout=targets.timeout_s)
        self.amqp_publish = amqp_publish
        self.sleep = sleep

    # -- what the city knows a case as

    def _identity(self, body: dict[str, Any]) -> tuple[str | None, tuple[str, str] | None]:
        case_id = body["case_id"]
        summary = body.get("case") if isinstance(body.get("case"), dict) else None
        key = keys.bridge_external(case_id)
        if summary is not None:
            fields: dict[Any, Any] = {"grid": summary.get("grid", "")}  # redis-py types mapping keys invariantly
            source = summary.get("source") or {}
            if source:
                fields.update(system=source["system"], external_id=source["external_id"])
            self.r.hset(key, mapping=fields)
            self.r.expire(key, KEEP_S)
        stored = self.r.hgetall(key)
        known = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in stored.items()
        }
        grid = known.get("grid") or None
        external = (known["system"], known["external_id"]) if known.get("external_id") else None
        return (self.crosswalk.to_city(grid) if grid else None), external

    # -- out

    def forward(self, body: dict[str, Any]) -> cloud.CloudEvent:
        citygrid, external = self._identity(body)
        event = cloud.outbound(body, self.targets.source, self.targets.type_prefix, citygrid, external)
        if self.targets.http_url:
            self._post(event)
        if self.targets.amqp_exchange and self.amqp_publish is not None:
            properties, payload = cloud.amqp_message(event)
            try:
                self.amqp_publish(event.get_type(), payload, properties)
            except Exception as exc:
                metrics.BRIDGE_EVENTS_OUT.labels("amqp", "retried").inc()
                raise DependencyUnavailable("city-amqp", f"{type(exc).__name__}: {exc}") from exc
            metrics.BRIDGE_EVENTS_OUT.labels("amqp", "delivered").inc()
        log.info(
            "event_bridged",
            case_id=body["case_id"],
            type=event.get_type(),
            id=event.get_id(),
            external=external[1] if external else None,
        )
        return event

    def _post(self, event: cloud.CloudEvent) -> None:
        headers, payload = cloud.http_message(event)
        last = ""
        for attempt in range(self.targets.http_tries):
            if attempt:
                self.sleep(0.2 * 2 ** (attempt - 1))
            try:
                answer = self.http.post(self.targets.http_url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= answer.status_code < 300:
                metrics.BRIDGE_EVENTS_OUT.labels("http", "delivered").inc()
                return
            if 400 <= answer.status_code < 500 and answer.status_code not in RETRYABLE:
                metrics.BRIDGE_EVENTS_OUT.labels("http", "rejected").inc()
                raise Rejected(f"city platform answered {answer.status_code}: {answer.text[:200]}", "bridge_refused")
            last = f"HTTP {answer.status_code}"
        metrics.BRIDGE_EVENTS_OUT.labels("http", "retried").inc()
        raise DependencyUnavailable("http", f"city platform {self.targets.http_url}: {last}")

    # -- in

    def take_in(self, raw: bytes) -> Report:
        """A city task (a structured JSON CloudEvent) → the report to submit; Rejected
        (dead-lettered with the reason) when it is not a valid task."""
        try:
            report = cloud.report_of(cloud.parse(raw), self.crosswalk)
        except ValueError as exc:
            metrics.BRIDGE_TASKS_IN.labels("invalid").inc()
            raise Rejected(str(exc), "invalid_city_task") from None
        metrics.BRIDGE_TASKS_IN.labels("accepted").inc()
        return report
