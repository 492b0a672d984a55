"""The broker baseline: raw py-amqp publish → quorum queue → consume, one hop (py-amqp
is gridbus' one AMQP client, shared/amqpclient.py, and nameko's underneath kombu).

Every message is persistent, published `mandatory` through a topic exchange into a
quorum queue (as gridbus' work queues are), and consumed with manual acks by a consumer
in another process. Three ways of publishing are measured:

- `confirm_sync`: a publisher confirm awaited after each message (`ConfirmChannel.publish_one`;
  what nameko's Publisher and so `Bus.publish` do);
- `confirm_pipelined`: confirms read as they come with up to `window` messages
  outstanding (`ConfirmChannel.send`/`wait`; what `Bus.publish_batch` does per batch);
- `unconfirmed`: no confirms at all (the upper bound, not a safe way to publish).

"messages/s per hop" is count ÷ (last message consumed − first message published): the
rate at which one hop moves messages end to end with publisher and consumer running.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
import uuid
from typing import Any, Callable

from bench.common import envelope, wall
from shared.amqpclient import ConfirmChannel, PublishFailed, Unroutable, channel, close_quietly, connect, message

MODES = ("confirm_sync", "confirm_pipelined", "unconfirmed")
EXCHANGE = "bench.hop"


def payload(size: int) -> bytes:
    """A JSON body of exactly `size` bytes (at least the JSON overhead)."""
    head, tail = b'{"case_id":"bench","pad":"', b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def properties(seq: int, run_tag: str) -> dict[str, Any]:
    mid = f"bench-{run_tag}-{seq:07d}"
    return {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": mid,
        "correlation_id": mid,
    }


# ------------------------------------------------------------------ pipelined confirms
class AsyncConfirmPublisher:
    """Publishes with pipelined publisher confirms (a `ConfirmChannel`: publish without
    waiting, read the confirms as they arrive).

    `rate=None`: as fast as the window of unconfirmed messages allows; otherwise message
    `i` is due at `start + i / rate` (open loop: a late tick publishes every message
    already due). `body_for(i)` gives the bytes and properties of message i. Records when
    each message was handed to the client (`sent[i]`) and confirmed (`confirmed[i]`) on the
    shared monotonic clock; nacked / returned messages are counted, not confirmed.
    """

    def __init__(
        self,
        amqp_uri: str,
        exchange: str,
        routing_key: str,
        count: int,
        body_for: Callable[[int], tuple[bytes, dict[str, Any]]],
        rate: float | None = None,
        window: int = 1000,
        mandatory: bool = True,
        deadline_s: float | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.amqp_uri = amqp_uri
        self.exchange, self.routing_key, self.count = exchange, routing_key, count
        self.body_for, self.rate, self.window, self.mandatory = body_for, rate, window, mandatory
        self.deadline_s = deadline_s
        self.on_progress = on_progress
        self.sent: list[float | None] = [None] * count
        self.confirmed: list[float | None] = [None] * count
        self.nacked = 0
        self.returned = 0
        self.error: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._next = 0
        self._tag_to_seq: dict[int, int] = {}
        self._done = 0

    def run(self) -> "AsyncConfirmPublisher":
        pub = ConfirmChannel(self.amqp_uri)
        try:
            pub.open()
        except Exception as exc:  # reported in the result, never hidden
            self.error = f"connection failed: {exc}"
            return self
        pub.on_confirm = self._on_confirm
        pub.channel.events["basic_return"].add(self._on_return)
        self.started_at = wall()
        try:
            self._loop(pub)
        except Exception as exc:  # the connection broke: reported in the result
            self.error = f"connection closed: {type(exc).__name__}: {exc}"
        finally:
            self.finished_at = wall()
            pub.close()
        return self

    def _due(self, now: float) -> int:
        if self.rate is None:
            return self.count
        assert self.started_at is not None
        return min(self.count, int((now - self.started_at) * self.rate) + 1)

    def _loop(self, pub: ConfirmChannel) -> None:
        assert self.started_at is not None and pub.connection is not None
        while self._done < self.count:
            now = wall()
            offering = self.deadline_s is None or now - self.started_at <= self.deadline_s
            if not offering and not pub.pending:
                return  # gave up offering: time is over and nothing is outstanding
            due = self._due(now)
            while offering and self._next < due and len(pub.pending) < self.window:
                i = self._next
                body, props = self.body_for(i)
                self.sent[i] = wall()
                self._tag_to_seq[pub.send(self.exchange, self.routing_key, body, props, self.mandatory)] = i
                self._next += 1
            if self.rate is None or self._next >= self.count or not offering:
                wait = 0.05  # only waiting for confirms (or for the deadline) now
            else:
                wait = max(0.0, min(0.005, self.started_at + self._next / self.rate - wall()))
            if pub.pending:
                try:
                    pub.connection.drain_events(timeout=wait if self.rate is not None else 1.0)
                except socket.timeout:
                    pass
            elif wait:
                time.sleep(wait)

    def _on_return(self, *_args: Any) -> None:
        self.returned += 1

    def _on_confirm(self, tag: int, ok: bool) -> None:
        seq = self._tag_to_seq.pop(tag, None)
        if seq is None:
            return
        if ok:
            self.confirmed[seq] = wall()
        else:
            self.nacked += 1
        self._done += 1
        if self.on_progress is not None:
            self.on_progress(self._next, self._done)


# ------------------------------------------------------------------ the consumer process
def _consume(amqp_uri: str, queue: str, count: int, ready: Any, out: Any, timeout_s: float) -> None:
    conn = connect(amqp_uri)
    ch = channel(conn)
    ch.basic_qos(0, 200, False)
    state: dict[str, Any] = {"n": 0, "first": None, "last": None}

    def on_message(msg: Any) -> None:
        now = wall()
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        state["n"] += 1
        ch.basic_ack(msg.delivery_tag)

    ch.basic_consume(queue, callback=on_message)
    ready.set()
    deadline = wall() + timeout_s
    while state["n"] < count and wall() < deadline:
        try:
            conn.drain_events(timeout=0.2)
        except socket.timeout:
            pass
    out.put(dict(state))
    close_quietly(conn)


# ------------------------------------------------------------------ one mode
def _declare(ch: Any, queue: str) -> None:
    ch.exchange_declare(EXCHANGE, "topic", durable=True, auto_delete=False)
    ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue, EXCHANGE, routing_key=queue)


def run_mode(
    amqp_uri: str, mode: str, size: int, count: int, window: int = 1000, timeout_s: float = 120.0
) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    run_tag = uuid.uuid4().hex[:8]
    queue = f"bench.hop.{mode}.{run_tag}"
    setup = connect(amqp_uri)
    _declare(channel(setup), queue)
    body = payload(size)

    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(amqp_uri, queue, count, ready, out, timeout_s), daemon=True)
    consumer.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the consumer process did not start")
        nacked = returned = 0
        cpu_before = time.process_time()  # the publisher's CPU (the consumer is another process)
        if mode == "confirm_pipelined":
            pub = AsyncConfirmPublisher(
                amqp_uri, EXCHANGE, queue, count, lambda i: (body, properties(i, run_tag)), window=window
            ).run()
            if pub.error:
                raise RuntimeError(pub.error)
            started, finished = pub.started_at, pub.finished_at
            nacked, returned = pub.nacked, pub.returned
        elif mode == "confirm_sync":
            sync = ConfirmChannel(amqp_uri)
            sync.open()
            started = wall()
            for i in range(count):
                try:
                    sync.publish_one(EXCHANGE, queue, body, **properties(i, run_tag))
                except (Unroutable, PublishFailed):
                    nacked += 1
            finished = wall()
            sync.close()
        else:
            conn = connect(amqp_uri)
            ch = channel(conn)
            started = wall()
            for i in range(count):
                ch.basic_publish(message(body, **properties(i, run_tag)), EXCHANGE, queue, mandatory=True)
            finished = wall()
            close_quietly(conn)
        publisher_cpu_s = time.process_time() - cpu_before
        state = out.get(timeout=timeout_s)
        consumer.join(10)
    finally:
        if consumer.is_alive():
            consumer.terminate()
            consumer.join(5)
        try:
            channel(setup).queue_delete(queue)
        finally:
            close_quietly(setup)
    assert started is not None and finished is not None
    consumed = state["n"]
    hop_s = (state["last"] - started) if state["last"] else None
    return {
        "mode": mode,
        "count": count,
        "size_bytes": len(body),
        "window": window if mode == "confirm_pipelined" else None,
        "publish_s": round(finished - started, 3),
        "publish_per_s": round(count / (finished - started), 1) if finished > started else None,
        "consumed": consumed,
        "hop_s": round(hop_s, 3) if hop_s else None,
        "hop_per_s": round(consumed / hop_s, 1) if hop_s else None,
        "nacked": nacked,
        "returned": returned,
        # CPU is what a loaded machine does not distort: compare libraries and modes by this
        "publisher_cpu_us_per_msg": round(publisher_cpu_s / count * 1e6, 1),
    }


def run_broker_bench(
    amqp_uri: str,
    size: int,
    count: int,
    modes: tuple[str, ...] = MODES,
    window: int = 1000,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "size_bytes": size,
        "count": count,
        "queue_type": "quorum",
        "persistent": True,
        "modes": {},
    }
    for mode in modes:
        r = run_mode(amqp_uri, mode, size, count, window=window)
        result["modes"][mode] = r
        if echo:
            echo(
                f"  broker {mode:18s} publish {r['publish_per_s']:>8} msg/s   "
                f"hop (publish→consume) {r['hop_per_s']:>8} msg/s   ({count} × {r['size_bytes']} B)"
            )
    return result


def broker_main(
    amqp_uri: str,
    mgmt_url: str,
    size: int,
    count: int,
    modes: tuple[str, ...],
    window: int,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """`gridbus bench broker`: the baseline alone, in its own throwaway vhost."""
    from bench.common import throwaway_vhost

    result = envelope("broker", {"size": size, "count": count, "modes": list(modes), "window": window})
    with throwaway_vhost(amqp_uri, mgmt_url) as (uri, _name):
        result.update(run_broker_bench(uri, size, count, modes, window, echo))
    return result
