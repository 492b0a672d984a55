"""Reading the audit stream `gridbus.audit`: every event that crossed `gridbus.events`,
kept by RabbitMQ (a stream queue) for audit and replay."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator

from shared.amqpclient import body_bytes, connection, consume
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
    with connection(amqp_uri) as conn:
        seen = 0
        for msg in consume(conn, Q_AUDIT, idle_timeout=idle_timeout, arguments={"x-stream-offset": offset}):
            try:
                event = json.loads(body_bytes(msg))
            except ValueError:
                continue
            if case_id is None or event.get("case_id") == case_id:
                yield event
            seen += 1
            if seen >= limit:
                break
