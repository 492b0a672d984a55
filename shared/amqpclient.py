"""The AMQP client for everything that is not nameko's own consumers: py-amqp (`amqp`),
the library nameko already uses underneath kombu, so gridbus carries one client and one
set of broker exceptions (shared/resilience.py classifies them).

What several places need, written once:

- `connect` / `connection`: a blocking connection from an `amqp://` URI, with retries
  for a broker that is still starting;
- `message` / `props`: building a message, reading its properties without AttributeError;
- `ConfirmChannel`: publisher confirms, pipelined (a whole batch, then one wait) or one by
  one, with `mandatory` returns turned into `Unroutable` and nacks into `PublishFailed`;
- `consume`: the messages of a queue as an iterator that ends when the queue is idle
  (streams are read this way, with an `x-stream-offset`);
- `queue_info`, `queue_depth`: a queue's ready count (and consumers), without consuming;
  `stream_end`: a stream's last offset (a stream reports no depth).

Channels are opened with `auto_decode` off: a body is always `bytes`, as it was sent.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import unquote, urlparse

import amqp
import amqp.exceptions

from shared.resilience import DependencyUnavailable

#: a (exchange, routing key, body, properties) to publish; properties as `message` takes them
Publication = tuple[str, str, bytes, dict[str, Any]]


class BrokerUnreachable(DependencyUnavailable, ConnectionError):
    """No connection could be opened (refused, timed out, handshake refused). Transient
    (`shared.resilience` reads it as the broker's outage) and still an OSError for callers
    that wait for the broker to come up."""

    def __init__(self, host: str, error: BaseException) -> None:
        DependencyUnavailable.__init__(self, "broker", f"{host}: {type(error).__name__}: {error}")


class Unroutable(RuntimeError):
    """The broker had no queue bound for this message (mandatory publish returned)."""


class PublishFailed(RuntimeError):
    """The broker could not be reached or refused the message."""


class Nacked(PublishFailed):
    """The broker refused a message of the batch (a nack: e.g. a full queue that rejects
    publishes), not the connection or a confirm that did not come in time."""


#: a queue or exchange that does not exist (404) and a refused permission (403): the
#: broker closes the channel, the connection stays usable
NotFound = amqp.exceptions.NotFound
AccessRefused = amqp.exceptions.AccessRefused
AMQPError = amqp.exceptions.AMQPError


def connect(
    amqp_uri: str,
    *,
    userid: str | None = None,
    password: str | None = None,
    attempts: int = 1,
    retry_delay: float = 1.0,
    connect_timeout: float = 30.0,
    heartbeat: int = 0,
    client_properties: dict[str, Any] | None = None,
) -> amqp.Connection:
    """An open connection to the broker (and vhost) of `amqp_uri`; `userid`/`password`
    override the URI's. Tries `attempts` times, `retry_delay` apart, so that a caller that
    starts with the broker does not fail on its first refused handshake; then raises
    `BrokerUnreachable`. A refused login (403 ACCESS_REFUSED) is not retried: it will not
    change by waiting."""
    u = urlparse(amqp_uri)
    host = f"{u.hostname or '127.0.0.1'}:{u.port or 5672}"
    for attempt in range(1, attempts + 1):
        conn = amqp.Connection(
            host=host,
            userid=userid if userid is not None else unquote(u.username or "guest"),
            password=password if password is not None else unquote(u.password or "guest"),
            virtual_host=unquote(u.path[1:]) if len(u.path) > 1 else "/",
            ssl=u.scheme == "amqps",
            connect_timeout=connect_timeout,
            heartbeat=heartbeat,
            client_properties=client_properties,
        )
        # Not asking for connection.blocked notifications: with them py-amqp polls the socket
        # before every publish, half of a publish's CPU (bench/README.md), and gridbus has no
        # on_blocked handler to tell. A blocked broker shows as confirms that do not come in
        # time (PublishFailed: transient, the message is held and tried again).
        conn.negotiate_capabilities = {**conn.negotiate_capabilities, "connection.blocked": False}
        try:
            conn.connect()
            return conn
        except (OSError, amqp.exceptions.ConnectionError) as exc:
            if attempt >= attempts:
                raise BrokerUnreachable(host, exc) from exc
            time.sleep(retry_delay)
    raise AssertionError("unreachable")  # attempts >= 1


def pump(conn: amqp.Connection, seconds: float) -> None:
    """Handle whatever arrives on `conn` (deliveries to consumers' callbacks, confirms) for
    `seconds`, then return."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            conn.drain_events(timeout=left)
        except socket.timeout:
            return


def close_quietly(conn: amqp.Connection | None) -> None:
    """Close a connection that may already be broken (nothing left to release then)."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # already closed by the broker or the network: nothing to release
        try:
            conn.collect()
        except Exception:  # nothing to release
            pass


@contextmanager
def connection(amqp_uri: str, **kwargs: Any) -> Iterator[amqp.Connection]:
    """`connect(...)`, closed (quietly) on the way out."""
    conn = connect(amqp_uri, **kwargs)
    try:
        yield conn
    finally:
        close_quietly(conn)


def channel(conn: amqp.Connection) -> Any:
    """A new channel whose message bodies stay `bytes`."""
    ch = conn.channel()
    ch.auto_decode = False
    return ch


def message(body: bytes | str, **properties: Any) -> amqp.Message:
    """A message; `headers=` is the application headers, None properties are left out."""
    headers = properties.pop("headers", None)
    if headers is not None:
        properties["application_headers"] = dict(headers)
    return amqp.Message(body, **{k: v for k, v in properties.items() if v is not None})


def props(msg: amqp.Message) -> dict[str, Any]:
    """A received message's properties (`message_id`, `user_id`, …; absent ones absent)
    plus `headers` (the application headers, {} when there are none)."""
    out = dict(msg.properties)
    out["headers"] = dict(out.pop("application_headers", None) or {})
    return out


def body_bytes(msg: amqp.Message) -> bytes:
    body = msg.body
    return body.encode() if isinstance(body, str) else bytes(body)


@contextmanager
def one_write(transport: Any) -> Iterator[None]:
    """The frames py-amqp writes inside go to the socket in one `sendall` on the way out
    instead of one per message: on loopback a send costs the sender the kernel's delivery
    of the packet, and a batch's publishes were ~12 % of a consumer's CPU
    (bench/README.md, "Framework ceiling"). Whole frames only (py-amqp writes each
    message's frames in full); nothing is sent if the block raises, and the caller closes
    the connection then, as after any failed publish. Relies on py-amqp's transport
    writing through its `_write` attribute (amqp 5.x)."""
    chunks = bytearray()
    real = transport._write
    transport._write = chunks.extend  # copies: py-amqp hands over a view of a buffer it reuses
    try:
        yield
    finally:
        transport._write = real
    if chunks:
        transport.write(chunks)  # its error handling: a failed send marks the transport disconnected


class ConfirmChannel:
    """A channel in publisher-confirm mode on its own connection. `publish` sends a whole
    batch, then waits once for the broker to confirm all of it: one round trip per batch
    instead of one per message (the pipeline benchmark measures ~7× the per-message rate
    on this machine). Not re-entrant: callers serialise batches (shared.bus.Bus holds a
    lock). The connection opens on first use; after any failure `close` it and the next
    publish opens a new one."""

    def __init__(self, amqp_uri: str, **connect_kwargs: Any) -> None:
        self.amqp_uri = amqp_uri
        self.connect_kwargs = connect_kwargs
        self.connection: amqp.Connection | None = None
        self.channel: Any = None
        self.sequence = 0
        #: delivery tags not confirmed yet, oldest first (a multiple ack settles a prefix)
        self.pending: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.failed: list[str] = []
        #: called with (delivery tag, acked) for every confirm (the broker benchmark times them)
        self.on_confirm: Callable[[int, bool], None] | None = None

    def open(self) -> None:
        self.connection = connect(self.amqp_uri, **self.connect_kwargs)
        self.channel = channel(self.connection)
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self.sequence = 0
        self.pending = collections.OrderedDict()

    def close(self) -> None:
        close_quietly(self.connection)
        self.connection = self.channel = None

    def _settle(self, tag: int, multiple: bool) -> list[int]:
        # O(settled), not O(outstanding): the broker benchmark keeps thousands in flight
        if not multiple:
            return [tag] if self.pending.pop(tag, 0) is None else []
        done = []
        while self.pending and next(iter(self.pending)) <= tag:
            done.append(self.pending.popitem(last=False)[0])
        return done

    def _on_ack(self, tag: int, multiple: bool) -> None:
        done = self._settle(tag, multiple)
        if self.on_confirm is not None:
            for t in done:
                self.on_confirm(t, True)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        for t in self._settle(tag, multiple):
            self.failed.append(f"nacked by the broker (delivery tag {t})")
            if self.on_confirm is not None:
                self.on_confirm(t, False)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.failed.append(f"unroutable: {exchange!r} / {routing_key!r}")

    def send(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any], mandatory: bool) -> int:
        """Publish without waiting; the delivery tag the broker will confirm."""
        if self.connection is None:
            self.open()
        self.channel.basic_publish(
            message(body, **properties), exchange=exchange, routing_key=routing_key, mandatory=mandatory
        )
        self.sequence += 1
        self.pending[self.sequence] = None
        return self.sequence

    def wait(self, timeout: float | None, until: int = 0) -> None:
        """Read confirms (and returns) until at most `until` messages are outstanding, or
        `timeout` s pass (then socket.timeout; None waits as long as it takes)."""
        assert self.connection is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.pending) > until:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise socket.timeout(f"{len(self.pending)} messages unconfirmed after {timeout:g} s")
            self.connection.drain_events(timeout=left)

    def publish(self, batch: Sequence[Publication], timeout: float, mandatory: bool = True) -> None:
        """Publish all of `batch`, then wait for every confirm. Raises `Unroutable` when a
        message was returned, `PublishFailed` when one was nacked or unconfirmed in time."""
        if self.connection is None:
            self.open()
        assert self.connection is not None
        self.pending, self.failed = collections.OrderedDict(), []
        with one_write(self.connection.transport):
            for exchange, routing_key, body, properties in batch:
                self.send(exchange, routing_key, body, properties, mandatory)
        try:
            self.wait(timeout)
        except socket.timeout:
            raise PublishFailed(
                f"{len(self.pending)} of {len(batch)} messages unconfirmed after {timeout:g} s"
            ) from None
        if self.failed:
            unroutable = [f for f in self.failed if f.startswith("unroutable")]
            raise (Unroutable if unroutable else Nacked)("; ".join(self.failed))

    def publish_one(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        timeout: float = 30.0,
        mandatory: bool = True,
        **properties: Any,
    ) -> None:
        """One message, confirmed before this returns (the same rules as `publish`)."""
        self.publish([(exchange, routing_key, body, properties)], timeout, mandatory)


def consume(
    conn: amqp.Connection,
    queue: str,
    *,
    idle_timeout: float = 1.0,
    prefetch: int = 500,
    arguments: dict[str, Any] | None = None,
    ack: bool = True,
) -> Iterator[amqp.Message]:
    """The messages of `queue`, in order, until none arrives for `idle_timeout` s. Each is
    acked after the caller's loop body has run for it (`ack=False`: left unacked, so that
    closing the channel gives them back). A stream needs the prefetch and manual acks;
    `arguments` carries its `x-stream-offset`."""
    ch = channel(conn)
    ch.basic_qos(0, prefetch, False)
    arrived: list[amqp.Message] = []
    tag = ch.basic_consume(queue, callback=arrived.append, arguments=arguments or {})
    try:
        while True:
            if not arrived:
                try:
                    conn.drain_events(timeout=idle_timeout)
                except socket.timeout:
                    return
                continue
            msg = arrived.pop(0)
            yield msg
            if ack:
                ch.basic_ack(msg.delivery_tag)
    finally:
        if ch.is_open and conn.connected:
            try:
                ch.basic_cancel(tag)
                ch.close()
            except (OSError, AMQPError):  # the connection went away: the broker cancels for us
                pass


STREAM_OFFSET_HEADER = "x-stream-offset"  # the offset of each message a stream delivers


def stream_offset(msg: amqp.Message) -> int:
    """The stream offset of a message delivered by a stream consumer."""
    return int((msg.properties.get("application_headers") or {})[STREAM_OFFSET_HEADER])


def stream_end(conn: amqp.Connection, stream: str, idle_timeout: float = 0.1, within: float = 0.25) -> int | None:
    """The offset of a stream's last message, None when it holds none. A stream answers a
    passive declare with 0 messages and 0 consumers, so its end is read instead: a consumer
    at `last` gets the stream's last chunk (a few messages, never the stream); the highest
    offset seen until it is idle, or `within` s under a steady flow."""
    last: int | None = None
    deadline = time.monotonic() + within
    for msg in consume(conn, stream, idle_timeout=idle_timeout, arguments={STREAM_OFFSET_HEADER: "last"}):
        last = max(last if last is not None else -1, stream_offset(msg))
        if time.monotonic() >= deadline:
            break
    return last


def queue_info(conn: amqp.Connection, queue: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of `queue` (a passive declare); None when it does not
    exist."""
    ch = channel(conn)
    try:
        _name, count, consumers = ch.queue_declare(queue, passive=True)
    except NotFound:
        return None  # the broker closed that channel; the connection is fine
    ch.close()
    return int(count), int(consumers)


def queue_depth(conn: amqp.Connection, queue: str) -> int | None:
    """Ready messages of `queue`; None when it does not exist."""
    info = queue_info(conn, queue)
    return None if info is None else info[0]


def wait_for_broker(amqp_uri: str, timeout: float, interval: float = 0.5) -> None:
    """Return once a connection opens; OSError/AMQPError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            close_quietly(connect(amqp_uri, connect_timeout=min(5.0, max(0.5, timeout))))
            return
        except (OSError, AMQPError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)


class QueueDepths:
    """Ready counts of queues read now and then over one kept connection (metrics timers).

    Opening a connection for every reading costs a TCP and AMQP handshake on both sides
    (on the broker: a connection and channel process, authentication) every few seconds of
    an idle stack; this one opens on the first reading and again only after an error.
    No heartbeats: between readings nothing is sent, and a connection the broker dropped
    fails the next reading, which opens a new one and tries once more."""

    def __init__(self, amqp_uri: str) -> None:
        self.amqp_uri = amqp_uri
        self._conn: amqp.Connection | None = None
        self._lock = threading.Lock()

    def read(self, queues: Sequence[str]) -> dict[str, int | None]:
        """{queue: ready messages, None when it does not exist}."""
        return self._on_connection(lambda conn: {q: queue_depth(conn, q) for q in queues})

    def stream_end(self, stream: str) -> int | None:
        """The stream's last offset (`stream_end`), None when it holds nothing."""
        return self._on_connection(lambda conn: stream_end(conn, stream))

    def _on_connection(self, fn: Callable[[amqp.Connection], Any]) -> Any:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = connect(self.amqp_uri)
                    return fn(self._conn)
                except (OSError, AMQPError):
                    self.close()
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            close_quietly(self._conn)
            self._conn = None
