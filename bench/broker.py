"""The broker baseline: raw pika publish → quorum queue → consume, one hop.

Every message is persistent, published `mandatory` through a topic exchange into a
quorum queue (as gridbus' work queues are), and consumed with manual acks by a consumer
in another process. Three ways of publishing are measured:

- `confirm_sync`: a publisher confirm awaited after each message (BlockingChannel with
  `confirm_delivery()`; what nameko's Publisher and so `shared.bus.Bus` do);
- `confirm_pipelined`: confirms handled asynchronously (SelectConnection) with up to
  `window` messages outstanding;
- `unconfirmed`: no confirms at all (the upper bound, not a safe way to publish).

"messages/s per hop" is count ÷ (last message consumed − first message published): the
rate at which one hop moves messages end to end with publisher and consumer running.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import uuid
from typing import Any, Callable

import pika

from bench.common import envelope, wall

MODES = ("confirm_sync", "confirm_pipelined", "unconfirmed")
EXCHANGE = "bench.hop"


def payload(size: int) -> bytes:
    """A JSON body of exactly `size` bytes (at least the JSON overhead)."""
    head, tail = b'{"case_id":"bench","pad":"', b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def properties(seq: int, run_tag: str) -> pika.BasicProperties:
    mid = f"bench-{run_tag}-{seq:07d}"
    return pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2, message_id=mid, correlation_id=mid
    )


# ------------------------------------------------------------------ async confirms
class AsyncConfirmPublisher:
    """Publishes with asynchronous publisher confirms on a pika SelectConnection.

    `rate=None`: as fast as the window of unconfirmed messages allows; otherwise message
    `i` is due at `start + i / rate` (open loop: a late tick publishes every message
    already due). `body_for(i)` gives the bytes and properties of message i. Records when
    each message was handed to pika (`sent[i]`) and confirmed (`confirmed[i]`) on the
    shared monotonic clock; nacked / returned messages are counted, not confirmed.
    """

    def __init__(
        self,
        amqp_uri: str,
        exchange: str,
        routing_key: str,
        count: int,
        body_for: Callable[[int], tuple[bytes, pika.BasicProperties]],
        rate: float | None = None,
        window: int = 1000,
        mandatory: bool = True,
        deadline_s: float | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.params = pika.URLParameters(amqp_uri)
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
        self._tag_to_seq: "collections.OrderedDict[int, int]" = collections.OrderedDict()
        self._tag = 0
        self._done = 0
        self._conn: Any = None
        self._ch: Any = None
        self._stopping = False

    # -- lifecycle
    def run(self) -> "AsyncConfirmPublisher":
        self._conn = pika.SelectConnection(
            self.params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_close,
        )
        self._conn.ioloop.start()
        return self

    def _on_open_error(self, _conn: Any, err: Any) -> None:
        self.error = f"connection failed: {err}"
        self._conn.ioloop.stop()

    def _on_close(self, _conn: Any, reason: Any) -> None:
        if not self._stopping:
            self.error = f"connection closed: {reason}"
        self._conn.ioloop.stop()

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, ch: Any) -> None:
        self._ch = ch
        ch.add_on_return_callback(self._on_return)
        ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self.started_at = wall()
        self._pump()

    def _finish(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.finished_at = wall()
        try:
            self._conn.close()
        except Exception:
            self._conn.ioloop.stop()

    # -- publishing
    def _due(self, now: float) -> int:
        if self.rate is None:
            return self.count
        assert self.started_at is not None
        return min(self.count, int((now - self.started_at) * self.rate) + 1)

    def _pump(self) -> None:
        if self._stopping:
            return
        now = wall()
        assert self.started_at is not None
        if self.deadline_s is not None and now - self.started_at > self.deadline_s and not self._tag_to_seq:
            self._finish()  # gave up offering: time is over and nothing is outstanding
            return
        due = self._due(now)
        offering = self.deadline_s is None or now - self.started_at <= self.deadline_s
        while offering and self._next < due and len(self._tag_to_seq) < self.window:
            i = self._next
            body, props = self.body_for(i)
            self._tag += 1
            self._tag_to_seq[self._tag] = i
            self.sent[i] = wall()
            self._ch.basic_publish(self.exchange, self.routing_key, body, props, mandatory=self.mandatory)
            self._next += 1
        if self._done >= self.count:
            self._finish()
            return
        if self.rate is not None:
            if self._next >= self.count or not offering:
                delay = 0.05  # only waiting for confirms (or for the deadline) now
            else:
                delay = max(0.0, min(0.005, self.started_at + self._next / self.rate - wall()))
            self._conn.ioloop.call_later(delay, self._pump)

    def _on_return(self, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        self.returned += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tag = method.delivery_tag
        now = wall()
        tags = []
        if method.multiple:
            while self._tag_to_seq and next(iter(self._tag_to_seq)) <= tag:
                tags.append(self._tag_to_seq.popitem(last=False))
        elif tag in self._tag_to_seq:
            tags.append((tag, self._tag_to_seq.pop(tag)))
        for _, seq in tags:
            if ok:
                self.confirmed[seq] = now
            else:
                self.nacked += 1
        self._done += len(tags)
        if self.on_progress is not None:
            self.on_progress(self._next, self._done)
        if self._done >= self.count:
            self._finish()
        elif self.rate is None:
            self._pump()


# ------------------------------------------------------------------ the consumer process
def _consume(amqp_uri: str, queue: str, count: int, ready: Any, out: Any, timeout_s: float) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=200)
    state: dict[str, Any] = {"n": 0, "first": None, "last": None}

    def on_message(ch_: Any, method: Any, _props: Any, _body: bytes) -> None:
        now = wall()
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        state["n"] += 1
        ch_.basic_ack(method.delivery_tag)
        if state["n"] >= count:
            ch_.stop_consuming()

    ch.basic_consume(queue, on_message)
    ready.set()
    deadline = wall() + timeout_s
    while state["n"] < count and wall() < deadline:
        conn.process_data_events(time_limit=0.2)
    out.put(dict(state))
    conn.close()


# ------------------------------------------------------------------ one mode
def _declare(ch: Any, queue: str) -> None:
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_bind(queue, EXCHANGE, routing_key=queue)


def run_mode(
    amqp_uri: str, mode: str, size: int, count: int, window: int = 1000, timeout_s: float = 120.0
) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    run_tag = uuid.uuid4().hex[:8]
    queue = f"bench.hop.{mode}.{run_tag}"
    setup = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    _declare(setup.channel(), queue)
    body = payload(size)

    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(amqp_uri, queue, count, ready, out, timeout_s), daemon=True)
    consumer.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the consumer process did not start")
        nacked = returned = 0
        if mode == "confirm_pipelined":
            pub = AsyncConfirmPublisher(
                amqp_uri, EXCHANGE, queue, count, lambda i: (body, properties(i, run_tag)), window=window
            ).run()
            if pub.error:
                raise RuntimeError(pub.error)
            started, finished = pub.started_at, pub.finished_at
            nacked, returned = pub.nacked, pub.returned
        else:
            conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
            ch = conn.channel()
            if mode == "confirm_sync":
                ch.confirm_delivery()
            started = wall()
            for i in range(count):
                try:
                    ch.basic_publish(EXCHANGE, queue, body, properties(i, run_tag), mandatory=True)
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    nacked += 1
            finished = wall()
            conn.close()
        state = out.get(timeout=timeout_s)
        consumer.join(10)
    finally:
        if consumer.is_alive():
            consumer.terminate()
            consumer.join(5)
        try:
            setup.channel().queue_delete(queue)
        finally:
            setup.close()
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
