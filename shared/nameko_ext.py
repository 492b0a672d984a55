"""nameko extensions: the only place gridbus touches nameko internals.

- `consume_reliably(queue)`: like `nameko.messaging.consume`, but a message is never
  dropped. Success → ack. `Rejected` (the message itself is bad) → published to the
  dead-letter queue with the reason in headers, then acked. A dependency down (Redis,
  the broker…: shared/resilience.py) → held and tried again with back-off until it is
  back, never requeued (the delivery limit is for poison messages only). Any other error
  → a few tries with back-off, then dead-lettered with the exception as the reason.
  A body that cannot even be decoded is dead-lettered the same way.
- `HealthChecks`: registers the broker and Redis checks of `GET /healthz`.
- `BusProvider`: a confirmed, mandatory publisher (`shared.bus.Bus`).
- `RedisProvider`: a Redis client.
- `EntrypointMetrics`: counts, errors and latency of every entrypoint.
- `TopologyDeclarer`: declares the whole topology when the service starts, before any
  consumer or publisher is used.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import eventlet
import redis  # noqa: F401 (type of the dependency)
import structlog
from kombu import Exchange as KExchange
from kombu import Queue as KQueue
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer, QueueConsumer

from shared import metrics, topology
from shared.amqpclient import QueueDepths
from shared.bus import Bus
from shared.config import get_settings
from shared.deadletters import ERROR_HEADER, REASON_HEADER, SERVICE_HEADER  # named once, there
from shared.health import HEALTH
from shared.redisdb import connect
from shared.resilience import Ledger, Stall, backoff_delay, transient_dependency

log = structlog.get_logger("gridbus.messaging")


class Rejected(Exception):
    """The message is invalid and will never succeed: dead-letter it with this reason."""

    def __init__(self, reason: str, error: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def kombu_queue(name: str) -> KQueue:
    """A kombu Queue declared exactly as the topology declares it (no argument clash)."""
    q = topology.default_topology().queue(name)
    return KQueue(
        name,
        exchange=KExchange(topology.EX_DEAD, type="topic"),
        routing_key=name,
        durable=True,
        queue_arguments=q.arguments,
        no_declare=True,
    )


def dead_letter(
    bus: Bus,
    queue: str,
    body: bytes,
    content_type: str | None,
    reason: str,
    error: str,
    headers: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> None:
    """Publish a message to `<queue>.dead` with the reason; confirmed before returning."""
    hdrs = dict(headers or {})
    hdrs.update({REASON_HEADER: reason[:1000], ERROR_HEADER: error, SERVICE_HEADER: bus.service})
    bus.publish(
        topology.EX_DEAD,
        queue,
        body,
        headers=hdrs,
        message_id=message_id,
        content_type=content_type or "application/octet-stream",
        kind="dead",
    )
    metrics.DEAD_LETTERED.labels(bus.service, queue, error).inc()


class ReliableQueueConsumer(QueueConsumer):
    """Dead-letters bodies that cannot be decoded instead of crashing the consumer, and
    knows whether its consumers are attached to a live channel (the `consumers` check of
    /healthz; the watchdog ends the process when they stay detached too long) and what
    became of every message they took (`ledger`: the `messages` and `held` checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.current_channel: Any = None
        self.current_connection: Any = None
        self.ledger = Ledger()

    def setup(self) -> None:
        super().setup()
        settings = get_settings()
        HEALTH.register("consumers", self.attached, fatal_after=settings.consumer_reattach_seconds)
        stuck = settings.consumer_stuck_seconds
        # a message nobody tries any more comes back only when the channel closes: exit
        HEALTH.register("messages", partial(self.ledger.stuck, stuck), fatal_after=0.0)
        # held that long: true while an outage lasts, a lie-detector once it is over; not
        # for liveness (a Redis outage must not restart every replica)
        HEALTH.register("held", partial(self.ledger.held_too_long, stuck), cheap=False)

    def get_consumers(self, consumer_cls, channel):
        # Recorded before the first basic.consume: the broker delivers to the first
        # consumer while the next one's consume round trip is in flight, and those
        # messages are settled before `on_consume_ready` runs.
        self.current_channel = channel
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = lambda message, exc, p=provider: p.handle_undecodable(message, exc)
        return consumers

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        self.current_connection, self.current_channel = connection, channel
        log.info(
            "consumers_attached",
            queues=sorted(p.queue_name for p in self._providers if isinstance(p, ReliableConsumer)),
        )
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def on_connection_revived(self) -> None:
        """After a reconnect, declare the topology again before consuming: a broker that
        came back without its queues (a node replaced without its data, a queue deleted by
        hand) gets them back instead of refusing basic.consume forever. Idempotent; a
        failure is logged and the reconnect loop tries again."""
        super().on_connection_revived()
        if not getattr(self, "_revived_before", False):
            self._revived_before = True  # the first connection: TopologyDeclarer has just declared it
            return
        now = time.monotonic()
        if now - getattr(self, "_redeclared_at", -REDECLARE_EVERY_S) < REDECLARE_EVERY_S:
            return  # kombu reconnects about once a second: do not declare ~60 queues each time
        self._redeclared_at = now
        try:
            topology.apply(self.amqp_uri)
        except Exception as exc:
            log.warning("topology_redeclare_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.current_connection = self.current_channel = None
        super().on_connection_error(exc, interval)

    def attached(self) -> tuple[bool, str]:
        channel, connection = self.current_channel, self.current_connection
        if channel is None or connection is None:
            return False, "not connected to the broker"
        if not getattr(channel, "is_open", False) or channel.connection is None or not connection.connected:
            return False, "consumer channel closed (reconnecting)"
        queues = sorted(p.queue_name for p in self._consumers if isinstance(p, ReliableConsumer))
        if len(self._consumers) < len(self._providers):
            return False, f"{len(self._consumers)} of {len(self._providers)} consumers attached"
        return True, f"consuming {', '.join(queues)}"

    @staticmethod
    def channel_alive(message: Any) -> bool:
        """Whether `message` can still be settled: the channel it came on is open on a
        connected connection. Judged by that channel itself, never by comparing it with
        the consumer's current one: a message that arrived on a new channel before the
        consumer recorded it is on a live channel, and skipping its ack would leave it
        unacknowledged for good (the broker redelivers only when the channel closes).
        A channel that died is closed by kombu before it reconnects (py-amqp's `collect`
        clears `is_open` and `connection`), and its messages are the broker's again."""
        channel = getattr(message, "channel", None)
        if channel is None or not getattr(channel, "is_open", False):
            return False
        connection = getattr(channel, "connection", None)
        return connection is not None and bool(getattr(connection, "connected", False))


class ReliableConsumer(Consumer):
    """Settles every message exactly one way (shared/resilience.py says which):

    - success → ack;
    - `Rejected` → dead-letter with the reason, then ack;
    - a dependency down (transient) → *held*: left unacked and handled again in-process
      after a capped exponential back-off (0.2 s doubling up to CONSUMER_RETRY_MAX_SECONDS),
      for as long as it takes. It is never requeued, so it never counts against the queue's
      delivery limit. Held messages wait outside the worker pool (HTTP and timers keep
      their workers) and at most the prefetch count are unacked per consumer (nameko
      2.14 sets each consumer's basic.qos to `max_workers`, 20 here; its PREFETCH_COUNT
      key is not read), so a stalled consumer takes nothing more from the broker: a pause;
    - anything else (a bug) → tried BUG_ATTEMPTS times in all (earlier deliveries count),
      with the same back-off, then dead-lettered with the exception as the reason.

    Acking or rejecting on a dead channel is skipped or swallowed (the broker hands the
    message out again; consumers are idempotent): nameko runs this outside any try, and an
    exception here would kill the container."""

    queue_consumer = ReliableQueueConsumer()

    def __init__(self, queue_name: str, with_properties: bool = False, **kwargs: Any) -> None:
        """`with_properties`: the handler also receives the AMQP properties (e.g. the
        broker-validated `user_id`) as a second argument."""
        self.queue_name = queue_name
        self.with_properties = with_properties
        self.stopping = False
        super().__init__(queue=None, **kwargs)

    def setup(self) -> None:
        self.queue = kombu_queue(self.queue_name)
        service = self.container.service_name
        self.bus = Bus(self.container.config["AMQP_URI"], service=service)
        self.retry_cap = get_settings().consumer_retry_max_seconds
        self._probing = False  # an idle stall's look at its dependency is running
        self.stall = Stall(service, self.queue_name, on_change=self._stall_changed)
        metrics.CONSUMER_HELD.labels(service, self.queue_name).set(0)
        for dependency in DEPENDENCIES:  # every label set exists from the start (increase() sees the first)
            metrics.CONSUMER_STALLS.labels(service, self.queue_name, dependency)
        super().setup()

    def stop(self) -> None:
        self.stopping = True
        super().stop()

    def _stall_changed(self, stall: Stall) -> None:
        metrics.CONSUMER_HELD.labels(stall.service, stall.queue).set(stall.held)
        if stall.idle and not self._probing and not self.stopping:
            self._probing = True
            self.container.spawn_managed_thread(self._end_idle_stall, identifier=f"{self.queue_name}.idle_stall")

    def _end_idle_stall(self) -> None:
        """A stall with nothing held ends when its dependency answers again: no message is
        left to go through and end it, and the next outage must be a stall of its own (its
        log line, its count in CONSUMER_STALLS). The dependency's /healthz check (`redis`,
        `broker`: shared.nameko_ext.HealthChecks) is tried every CONSUMER_RETRY_MAX_SECONDS
        while the stall stays idle. A dependency without a check (postgres, an HTTP peer,
        the network) waits for the next message that goes through; nothing is held
        meanwhile, so nothing waits on it but the log line."""
        try:
            while not self.stopping and self.stall.idle:
                eventlet.sleep(self.retry_cap)
                check = HEALTH.checks.get(self.stall.dependency)
                if check is None or not self.stall.idle or self.stopping:
                    return
                try:
                    ok = check.fn()[0]
                except Exception:  # still down: look again later
                    ok = False
                if ok and self.stall.idle:
                    self.stall.recovered("its dependency answers again (no message held)")
        finally:
            self._probing = False

    # -- delivery

    def handle_message(self, body: Any, message: Any) -> None:
        self.queue_consumer.ledger.trying(
            id(message), self.queue_name, partial(self.queue_consumer.channel_alive, message)
        )
        args = (body, dict(message.properties)) if self.with_properties else (body,)
        try:
            self.container.spawn_worker(
                self,
                args,
                {},
                context_data=self.unpack_message_headers(message),
                handle_result=partial(self._handled, body, message),
            )
        except ContainerBeingKilled:
            self._requeue(message)

    def _handled(
        self, body: Any, message: Any, worker_ctx: Any, result: Any = None, exc_info: Any = None
    ) -> tuple[Any, Any]:
        try:
            self._settle(body, message, exc_info)
        except Exception:  # never out of here: nameko would kill the container
            log.exception("settle_failed", queue=self.queue_name)
        return result, exc_info

    def _settle(self, body: Any, message: Any, exc_info: Any) -> None:
        if exc_info is None:
            self.stall.recovered()
            self._ack(message)
            return
        exc = exc_info[1]
        if isinstance(exc, Rejected):
            self._dead_letter(body, message, exc.reason, exc.error)
            return
        dependency = transient_dependency(exc)
        if dependency is not None:
            if self.stall.hold(dependency, exc):
                metrics.CONSUMER_STALLS.labels(self.stall.service, self.queue_name, dependency).inc()
            self.queue_consumer.ledger.held(id(message), dependency)
            self._again(body, message, held=True)
            return
        tries = _count(message, "_gridbus_bug_tries") + _earlier_deliveries(message)
        if tries < BUG_ATTEMPTS:
            self.queue_consumer.ledger.retrying(id(message))
            self._again(body, message, held=False, attempt=tries)
            return
        self._dead_letter(body, message, f"handler failed {tries} times: {type(exc).__name__}: {exc}", "handler_error")

    def _again(self, body: Any, message: Any, held: bool, attempt: int | None = None) -> None:
        """Handle the message again after a back-off, unless its channel died meanwhile."""
        n = attempt if attempt is not None else _count(message, "_gridbus_holds")
        delay = backoff_delay(n, cap=self.retry_cap)

        def later() -> None:
            eventlet.sleep(delay)
            if held:
                self.stall.release()
            if self.stopping or not self.queue_consumer.channel_alive(message):
                self.queue_consumer.ledger.settled(id(message))
                log.info(
                    "held_message_released",
                    queue=self.queue_name,
                    reason="stopping" if self.stopping else "channel closed: the broker delivers it again",
                )
                return
            try:
                self.handle_message(body, message)
            except Exception:
                log.exception("retry_failed", queue=self.queue_name)

        self.container.spawn_managed_thread(later, identifier=f"{self.queue_name}.again")

    # -- settling, safely

    def _ack(self, message: Any) -> None:
        self.queue_consumer.ledger.settled(id(message))
        if not self.queue_consumer.channel_alive(message):
            log.info("ack_skipped", queue=self.queue_name, reason="channel closed: the broker delivers it again")
            return
        try:
            message.ack()
        except Exception as exc:  # the connection died under us: it will be redelivered
            log.warning("ack_failed", queue=self.queue_name, error=repr(exc))

    def _requeue(self, message: Any) -> None:
        self.queue_consumer.ledger.settled(id(message))
        if not self.queue_consumer.channel_alive(message):
            return
        try:
            message.requeue()
        except Exception as exc:
            log.warning("requeue_failed", queue=self.queue_name, error=repr(exc))

    def _dead_letter(self, body: Any, message: Any, reason: str, error: str) -> None:
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        try:
            dead_letter(
                self.bus,
                self.queue_name,
                raw,
                message.content_type,
                reason,
                error,
                headers=message.headers,
                message_id=message.properties.get("message_id"),
            )
        except Exception as exc:  # the broker is the dependency that is down: hold, then decide again
            if self.stall.hold(transient_dependency(exc) or "broker", exc):
                metrics.CONSUMER_STALLS.labels(
                    self.stall.service, self.queue_name, transient_dependency(exc) or "broker"
                ).inc()
            self.queue_consumer.ledger.held(id(message), transient_dependency(exc) or "broker")
            self._again(body, message, held=True)
            return
        self._ack(message)

    def handle_undecodable(self, message: Any, exc: Exception) -> None:
        """Runs in the consumer's own thread (kombu's decode-error hook): must not raise."""
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        try:
            dead_letter(
                self.bus,
                self.queue_name,
                raw,
                message.content_type,
                f"undecodable body: {exc}",
                "undecodable",
                message_id=message.properties.get("message_id"),
            )
        except Exception:
            log.exception("dead_letter_failed", queue=self.queue_name)
            delay = backoff_delay(_count(message, "_gridbus_holds"), cap=self.retry_cap)

            def later() -> None:
                eventlet.sleep(delay)
                if not self.stopping and self.queue_consumer.channel_alive(message):
                    self.handle_undecodable(message, exc)

            self.container.spawn_managed_thread(later, identifier=f"{self.queue_name}.undecodable")
            return
        self._ack(message)


REDECLARE_EVERY_S = 10.0
#: tries of a message whose handler fails for a reason that is not a dependency (a bug)
BUG_ATTEMPTS = topology.DELIVERY_LIMIT
DEPENDENCIES = ("redis", "broker", "postgres", "http", "network")


def _count(message: Any, attr: str) -> int:
    """Increment and return a per-message counter (kombu messages take attributes)."""
    n = int(getattr(message, attr, 0)) + 1
    setattr(message, attr, n)
    return n


def _earlier_deliveries(message: Any) -> int:
    """Deliveries of this message before this one (quorum queues count them in `x-delivery-count`)."""
    try:
        return int((message.headers or {}).get("x-delivery-count") or 0)
    except (TypeError, ValueError):
        return 0


class _TransientWorkerErrors(logging.Filter):
    """nameko logs every failed worker with a traceback; a held message is tried again
    every few seconds while Redis is down, and the stall already has its log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or transient_dependency(exc) is None


logging.getLogger("nameko.containers").addFilter(_TransientWorkerErrors())


consume_reliably = ReliableConsumer.decorator


class BusProvider(DependencyProvider):
    def setup(self) -> None:
        self.bus = Bus(self.container.config["AMQP_URI"], service=self.container.service_name)

    def start(self) -> None:
        self.bus.warm_up()

    def get_dependency(self, worker_ctx: Any) -> Bus:
        return self.bus


class QueueDepthsProvider(DependencyProvider):
    """One kept connection for a metrics timer's queue depths (`amqpclient.QueueDepths`)."""

    def setup(self) -> None:
        self.depths = QueueDepths(self.container.config["AMQP_URI"])

    def stop(self) -> None:
        self.depths.close()

    def get_dependency(self, worker_ctx: Any) -> QueueDepths:
        return self.depths


class RedisProvider(DependencyProvider):
    def setup(self) -> None:
        self.client = connect()

    def stop(self) -> None:
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> redis.Redis:
        return self.client


class EntrypointMetrics(DependencyProvider):
    """Counts every worker of the service: messages in, errors, latency."""

    def setup(self) -> None:
        self._started: dict[int, float] = {}
        # entrypoint → its (MESSAGES_IN, HANDLER_LATENCY) children: `labels()` takes the
        # metric's lock and builds the key on every call, a few µs per message
        self._children: dict[str, tuple[Any, Any]] = {}

    def _metrics(self, name: str) -> tuple[Any, Any]:
        children = self._children.get(name)
        if children is None:
            service = self.container.service_name
            children = (metrics.MESSAGES_IN.labels(service, name), metrics.HANDLER_LATENCY.labels(service, name))
            self._children[name] = children
        return children

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[id(worker_ctx)] = time.perf_counter()
        self._metrics(worker_ctx.entrypoint.method_name)[0].inc()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        name = worker_ctx.entrypoint.method_name
        started = self._started.pop(id(worker_ctx), None)
        if started is not None:
            self._metrics(name)[1].observe(time.perf_counter() - started)
        if exc_info is None:
            return
        if isinstance(exc_info[1], Rejected):  # a refusal on purpose (dead-lettered with the reason), not a fault
            metrics.MESSAGES_REJECTED.labels(self.container.service_name, name).inc()
        else:
            metrics.HANDLER_ERRORS.labels(self.container.service_name, name, type(exc_info[1]).__name__).inc()
            if transient_dependency(exc_info[1]) is None:  # a stall has its own log line
                log.error("handler_failed", entrypoint=name, error=repr(exc_info[1]))


class HealthChecks(DependencyProvider):
    """The `broker` and `redis` checks of /healthz: a fresh connection to the broker, a
    PING on a client of its own with short timeouts (a hung Redis must not hang the probe)."""

    def setup(self) -> None:
        self.amqp_uri = self.container.config["AMQP_URI"]
        self.client = connect(socket_timeout=2.0, socket_connect_timeout=2.0)
        HEALTH.register("broker", self.broker, cheap=False)
        HEALTH.register("redis", self.redis, cheap=False)

    def stop(self) -> None:
        self.client.close()

    def broker(self) -> tuple[bool, str]:
        from kombu import Connection

        with Connection(self.amqp_uri, connect_timeout=2.0) as conn:
            conn.connect()
        return True, "connected"

    def redis(self) -> tuple[bool, str]:
        self.client.ping()
        return True, "PONG"


class TopologyDeclarer(DependencyProvider):
    """Declares the topology in `setup`, which nameko runs before any extension starts."""

    def setup(self) -> None:
        topology.apply(self.container.config["AMQP_URI"])


def event_or_reject(body: Any) -> Any:
    """The lifecycle event in a message body, or `Rejected` (dead-letter with the reason)."""
    from shared.models import parse_event

    try:
        return parse_event(body if isinstance(body, dict) else {})
    except ValueError as exc:
        raise Rejected(f"not a lifecycle event: {exc}", "invalid_event") from None


class GridbusService:
    """What every gridbus service has: the topology declared before anything starts,
    metrics of every entrypoint, and a confirmed publisher. Services subclass it (nameko
    collects dependencies and entrypoints from base classes)."""

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    health_checks = HealthChecks()
    bus: Bus = BusProvider()
