"""Dead letters: read `<queue>.dead` without losing anything, and move messages back.

Two ways a message reaches a dead-letter queue (shared/topology.py): a consumer refuses it
(`shared.nameko_ext.dead_letter`: headers `x-gridbus-reason`, `x-gridbus-error`,
`x-gridbus-service`), or the quorum queue's delivery limit moves it (the broker's `x-death`
header, reason `delivery_limit`). `reason_of` reads either.

Reading takes messages with `basic_get` and never acks them: closing the channel gives
every one back to the queue, in order. Replaying publishes each chosen message, with its
message id, correlation id and body unchanged, straight to the queue it left (default
exchange, routing key = queue name, so no other queue bound to the original exchange gets
a second copy), persistent, `mandatory` and with publisher confirms; only once the broker
has confirmed the copy is the dead letter acked. A replay interrupted between the two
leaves the message in the dead queue *and* in the work queue: replaying again delivers it
twice, which the idempotent consumers drop by message id.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import amqp

from shared.amqpclient import (
    ConfirmChannel,
    PublishFailed,
    Unroutable,
    body_bytes,
    channel,
    close_quietly,
    connect,
    props,
    queue_depth,
)

# the headers a consumer's dead letter carries (shared/nameko_ext.dead_letter writes them)
REASON_HEADER = "x-gridbus-reason"
ERROR_HEADER = "x-gridbus-error"
SERVICE_HEADER = "x-gridbus-service"
REPLAYED_HEADER = "x-gridbus-replayed"
DEAD_SUFFIX = ".dead"

#: headers that describe the dead-lettering, not the message: not carried into a replay
_DEATH_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    REASON_HEADER,
    ERROR_HEADER,
    SERVICE_HEADER,
)

#: `x-gridbus-error` kinds that mean the message itself is bad (it will never succeed as
#: it is), plus `delivery_failed`: the notifier gave up on a recipient by design after its
#: own retries (alerted as GridbusNotificationsGivenUp). Anything else — `handler_error`,
#: the broker's `delivery_limit` — is a failure around a message that may well be good:
#: replay it once the cause is fixed (alert GridbusDeadLetteredForFailure).
INPUT_ERRORS = frozenset(
    {
        "invalid",
        "invalid_event",
        "invalid_report",
        "invalid_reply",
        "invalid_delivery",
        "undecodable",
        "illegal_transition",
        "no_user_id",
        "not_assigned",
        "unknown_case",
        "delivery_failed",
    }
)


def work_queue_of(queue: str) -> str:
    """`router.cases.dead` or `router.cases` → `router.cases`."""
    return queue[: -len(DEAD_SUFFIX)] if queue.endswith(DEAD_SUFFIX) else queue


def dead_queue_of(queue: str) -> str:
    return work_queue_of(queue) + DEAD_SUFFIX


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def reason_of(headers: dict[str, Any] | None) -> tuple[str, str]:
    """(error kind, reason text) of a dead letter: the consumer's headers, else the broker's
    x-death entry (`delivery_limit`, `rejected`, `expired`, `maxlen`), else `unknown`."""
    headers = headers or {}
    if ERROR_HEADER in headers or REASON_HEADER in headers:
        return _text(headers.get(ERROR_HEADER)) or "refused", _text(headers.get(REASON_HEADER))
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths, list) and isinstance(deaths[0], dict):
        d = deaths[0]
        why = _text(d.get("reason")) or "unknown"
        return why, f"{why} on {_text(d.get('queue'))} (x {d.get('count', 1)})"
    last = _text(headers.get("x-last-death-reason"))
    return (last, last) if last else ("unknown", "")


def is_input_error(kind: str) -> bool:
    return kind in INPUT_ERRORS


@dataclass
class DeadLetter:
    queue: str  # the dead-letter queue it sits in
    kind: str  # error kind (`invalid_event`, `delivery_limit`, …)
    reason: str
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any]
    body: bytes
    properties: dict[str, Any] = field(repr=False, default_factory=dict)
    delivery_tag: int = 0

    @property
    def source(self) -> str:
        return work_queue_of(self.queue)

    @property
    def input_error(self) -> bool:
        return is_input_error(self.kind)

    def matches(self, reason: str | None) -> bool:
        """`reason` is an error kind (exact) or a piece of the reason text."""
        return reason is None or reason == self.kind or reason in self.reason

    def to_dict(self) -> dict[str, Any]:
        try:
            body: Any = self.body.decode("utf-8")
        except UnicodeDecodeError:
            body = repr(self.body)
        return {
            "queue": self.queue,
            "source": self.source,
            "kind": self.kind,
            "reason": self.reason,
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "headers": {k: _plain(v) for k, v in self.headers.items()},
            "body": body,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _connect(amqp_uri: str) -> amqp.Connection:
    return connect(amqp_uri, attempts=3, retry_delay=1)


def _take(ch: Any, queue: str, limit: int | None) -> Iterator[DeadLetter]:
    """Messages of `queue`, oldest first, left unacked (closing the channel returns them).
    Stops after `limit` or when the queue has no more ready messages."""
    n = 0
    while limit is None or n < limit:
        msg = ch.basic_get(queue, no_ack=False)
        if msg is None:
            return
        p = props(msg)
        headers = p["headers"]
        kind, reason = reason_of(headers)
        n += 1
        yield DeadLetter(
            queue,
            kind,
            reason,
            p.get("message_id"),
            p.get("correlation_id"),
            headers,
            body_bytes(msg),
            p,
            msg.delivery_tag,
        )


def peek(amqp_uri: str, queue: str, limit: int | None = None, reason: str | None = None) -> list[DeadLetter]:
    """Up to `limit` dead letters of `queue` (matching `reason`), left in the queue."""
    queue = dead_queue_of(queue)
    conn = _connect(amqp_uri)
    try:
        ch = channel(conn)
        out = []
        for dl in _take(ch, queue, None):
            if dl.matches(reason):
                out.append(dl)
                if limit is not None and len(out) >= limit:
                    break
        return out
    finally:
        close_quietly(conn)  # every message read goes back to the queue


def counts(amqp_uri: str, queue: str) -> collections.Counter[str]:
    """Dead letters of `queue` by error kind."""
    return collections.Counter(dl.kind for dl in peek(amqp_uri, queue))


def depth(amqp_uri: str, queue: str) -> int | None:
    """Ready messages of a queue (passive declare); None if it does not exist."""
    conn = _connect(amqp_uri)
    try:
        return queue_depth(conn, queue)
    finally:
        close_quietly(conn)


@dataclass
class ReplayResult:
    queue: str
    target: str
    replayed: list[str] = field(default_factory=list)  # message ids (or delivery tags) moved back
    kept: int = 0  # read but not matching: left in the dead queue
    failed: str = ""  # why the replay stopped early


def _replay_properties(dl: DeadLetter, user: str) -> dict[str, Any]:
    p = dl.properties
    headers = {k: v for k, v in dl.headers.items() if k not in _DEATH_HEADERS}
    headers[REPLAYED_HEADER] = int(_text(dl.headers.get(REPLAYED_HEADER)) or 0) + 1
    return {
        "content_type": p.get("content_type"),
        "content_encoding": p.get("content_encoding"),
        "headers": headers,
        "delivery_mode": 2,
        "priority": p.get("priority"),
        "correlation_id": p.get("correlation_id"),
        "reply_to": p.get("reply_to"),
        "message_id": p.get("message_id"),
        "timestamp": p.get("timestamp") or int(time.time()),
        "type": p.get("type"),
        "app_id": p.get("app_id"),
        # the broker validates `user_id` against the connection's user: a department's reply
        # keeps it only when replayed as that department (an operator cannot forge it)
        "user_id": p.get("user_id") if p.get("user_id") == user else None,
    }


def replay(amqp_uri: str, queue: str, reason: str | None = None, limit: int | None = None) -> ReplayResult:
    """Move dead letters of `queue` (matching `reason`, at most `limit`) back to the queue
    they left. Each is acked in the dead queue only after the broker confirmed its copy."""
    dead = dead_queue_of(queue)
    result = ReplayResult(dead, work_queue_of(queue))
    user = unquote(urlparse(amqp_uri).username or "guest")
    conn = _connect(amqp_uri)
    writer = ConfirmChannel(amqp_uri, attempts=3, retry_delay=1)
    try:
        reader = channel(conn)
        for dl in _take(reader, dead, None):
            if limit is not None and len(result.replayed) >= limit:
                break
            if not dl.matches(reason):
                result.kept += 1
                continue
            try:
                writer.publish_one("", result.target, dl.body, **_replay_properties(dl, user))
            except (Unroutable, PublishFailed) as exc:
                result.failed = f"{type(exc).__name__} publishing to {result.target}: {exc}"
                break
            reader.basic_ack(dl.delivery_tag)
            result.replayed.append(dl.message_id or f"tag:{dl.delivery_tag}")
    finally:
        writer.close()
        close_quietly(conn)  # what was read and not replayed goes back to the dead queue
    return result
