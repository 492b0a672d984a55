"""Reading the audit stream `gridbus.audit`: every event that crossed `gridbus.events`,
kept by RabbitMQ (a stream queue) for audit and replay."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator

import pika

from shared.topology import Q_AUDIT


def read_audit(
    amqp_uri: str,
    offset: str | int | datetime = "first",
    case_id: str | None = None,
    idle_timeout: float = 1.0,
    limit: int = 100_000,
) -> Iterator[dict[str, Any]]:
    """Events from the stream, oldest first, until nothing new arrives for `idle_timeout`.

    A stream is read with a consumer offset (`first`, `last`, `next`, a number or a
    timestamp) and needs a prefetch limit and manual acks; reading never removes anything.
    """
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=500)
        seen = 0
        for method, _props, body in channel.consume(
            Q_AUDIT, arguments={"x-stream-offset": offset}, inactivity_timeout=idle_timeout
        ):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            try:
                event = json.loads(body)
            except ValueError:
                continue
            if case_id is None or event.get("case_id") == case_id:
                yield event
            seen += 1
            if seen >= limit:
                break
        channel.cancel()
    finally:
        connection.close()
