"""Publishing to the bus: persistent, confirmed by the broker, and `mandatory`.

A message that no queue would receive raises `Unroutable` instead of being silently
confirmed and dropped, and a publish that the broker refuses raises too, so a caller
acks its own input only after its output is safely queued.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher, UndeliverableMessage
from pydantic import BaseModel

from shared import metrics
from shared.models import Envelope
from shared.topology import EVENT_ROUTING_KEYS, EX_EVENTS


class Unroutable(RuntimeError):
    """The broker had no queue bound for this message (mandatory publish returned)."""


class PublishFailed(RuntimeError):
    """The broker could not be reached or refused the message."""


def to_json_bytes(body: BaseModel | Mapping[str, Any]) -> bytes:
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode()
    return json.dumps(body, ensure_ascii=False, default=str).encode()


class Bus:
    """A confirmed, mandatory publisher; safe to share between green threads."""

    def __init__(self, amqp_uri: str, service: str = "cli") -> None:
        self.amqp_uri = amqp_uri
        self.service = service
        self._publisher = Publisher(
            amqp_uri,
            use_confirms=True,
            mandatory=True,
            delivery_mode=2,
            serializer="json",
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        )

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: BaseModel | Mapping[str, Any] | bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        kind: str = "",
        content_type: str = "application/json",
        expiration: float | None = None,
    ) -> None:
        payload = body if isinstance(body, bytes) else to_json_bytes(body)
        if isinstance(body, Envelope):
            message_id = message_id or body.message_id
            correlation_id = correlation_id or body.correlation_id
        try:
            self._publisher.publish(
                payload,
                exchange=exchange,
                routing_key=routing_key,
                content_type=content_type,
                content_encoding="utf-8",
                message_id=message_id,
                correlation_id=correlation_id,
                extra_headers=dict(headers or {}),
                expiration=expiration,
            )
        except UndeliverableMessage as exc:
            raise Unroutable(f"no queue bound for {exchange!r} / {routing_key!r}") from exc
        except OperationalError as exc:
            raise PublishFailed(str(exc)) from exc
        metrics.MESSAGES_OUT.labels(self.service, exchange, kind or routing_key.split(".")[0]).inc()

    def publish_event(self, event: Envelope) -> None:
        name = getattr(event, "event")
        self.publish(EX_EVENTS, EVENT_ROUTING_KEYS[name], event, kind=name)
