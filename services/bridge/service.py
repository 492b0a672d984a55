"""bridge: the nameko shell of the city-platform bridge (信息共享, district plan §四(三)3):
case events out as CloudEvents, city tasks in as reports (services/bridge/forward.py)."""

from __future__ import annotations

import json
from typing import Any

import structlog
from nameko.extensions import DependencyProvider

from services.bridge.forward import Forwarder, Targets
from shared import amqpclient, topology
from shared.bus import Bus
from shared.config import get_settings
from shared.crosswalk import load_crosswalk
from shared.nameko_ext import GridbusService, Rejected, consume_reliably
from shared.redisdb import connect

log = structlog.get_logger("gridbus.bridge")


class ForwarderProvider(DependencyProvider):
    def setup(self) -> None:
        s = get_settings()
        targets = Targets(
            source=s.bridge_source or f"urn:gridbus:{s.district_code}",
            type_prefix=s.bridge_type_prefix,
            http_url=s.bridge_http_url,
            http_tries=s.bridge_http_tries,
            timeout_s=s.bridge_timeout_seconds,
            amqp_exchange=s.bridge_amqp_exchange,
        )
        self.city_bus: Bus | None = None
        publish = None
        if s.bridge_amqp_exchange:
            uri = s.bridge_amqp_uri or s.amqp_uri
            with amqpclient.connection(uri) as conn:  # the city's exchange, declared once
                amqpclient.channel(conn).exchange_declare(
                    s.bridge_amqp_exchange, "topic", durable=True, auto_delete=False
                )
            self.city_bus = Bus(uri, service="bridge")
            bus, exchange = self.city_bus, s.bridge_amqp_exchange

            def publish(routing_key: str, body: bytes, properties: dict[str, Any]) -> None:
                bus.publish(
                    exchange,
                    routing_key,
                    body,
                    kind="cloudevent",
                    content_type=properties.get("content-type", "application/cloudevents+json"),
                )

        self.forwarder = Forwarder(connect(s), load_crosswalk(), targets, amqp_publish=publish)

    def get_dependency(self, worker_ctx: Any) -> Forwarder:
        return self.forwarder


class BridgeService(GridbusService):
    name = "bridge"

    forwarder: Forwarder = ForwarderProvider()

    @consume_reliably(topology.Q_BRIDGE_EVENTS)
    def forward_event(self, body: Any) -> None:
        if not isinstance(body, dict) or "case_id" not in body or "event" not in body:
            raise Rejected("not a case event", "invalid_event")
        self.forwarder.forward(body)

    @consume_reliably(topology.Q_BRIDGE_INBOUND)
    def take_in_task(self, body: Any) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode() if not isinstance(body, bytes) else body
        report = self.forwarder.take_in(raw)
        # into intake's queue as any report: intake registers it (same report id → same case)
        self.bus.publish(
            topology.EX_REPORTS,
            topology.RK_REPORT,
            report,
            message_id=report.report_id,
            correlation_id=report.report_id,
            kind="report",
        )
        log.info("city_task_taken_in", report_id=report.report_id, source=report.source.system if report.source else "")
