"""nameko extensions: the only place gridbus touches nameko internals.

- `consume_reliably(queue)`: like `nameko.messaging.consume`, but a message is never
  dropped. Success → ack. `Rejected` (the message itself is bad) → published to the
  dead-letter queue with the reason in headers, then acked. Any other error → requeued;
  the quorum queue's delivery limit dead-letters it after a few tries instead of looping.
  A body that cannot even be decoded is dead-lettered the same way.
- `BusProvider`: a confirmed, mandatory publisher (`shared.bus.Bus`).
- `RedisProvider`: a Redis client.
- `EntrypointMetrics`: counts, errors and latency of every entrypoint.
- `TopologyDeclarer`: declares the whole topology when the service starts, before any
  consumer or publisher is used.
"""
from __future__ import annotations

import time
from typing import Any

import redis  # noqa: F401 (type of the dependency)
import structlog
from kombu import Exchange as KExchange
from kombu import Queue as KQueue
from nameko.extensions import DependencyProvider
from functools import partial

from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import Consumer, QueueConsumer

from shared import metrics, topology
from shared.bus import Bus
from shared.redisdb import connect

log = structlog.get_logger("gridbus.messaging")

REASON_HEADER = "x-gridbus-reason"
ERROR_HEADER = "x-gridbus-error"
SERVICE_HEADER = "x-gridbus-service"


class Rejected(Exception):
    """The message is invalid and will never succeed: dead-letter it with this reason."""

    def __init__(self, reason: str, error: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def kombu_queue(name: str) -> KQueue:
    """A kombu Queue declared exactly as the topology declares it (no argument clash)."""
    q = topology.default_topology().queue(name)
    return KQueue(name, exchange=KExchange(topology.EX_DEAD, type="topic"), routing_key=name,
                  durable=True, queue_arguments=q.arguments, no_declare=True)


def dead_letter(bus: Bus, queue: str, body: bytes, content_type: str | None, reason: str,
                error: str, headers: dict[str, Any] | None = None, message_id: str | None = None) -> None:
    """Publish a message to `<queue>.dead` with the reason; confirmed before returning."""
    hdrs = dict(headers or {})
    hdrs.update({REASON_HEADER: reason[:1000], ERROR_HEADER: error, SERVICE_HEADER: bus.service})
    bus.publish(topology.EX_DEAD, queue, body, headers=hdrs, message_id=message_id,
                content_type=content_type or "application/octet-stream", kind="dead")
    metrics.DEAD_LETTERED.labels(bus.service, queue, error).inc()


class ReliableQueueConsumer(QueueConsumer):
    """Dead-letters bodies that cannot be decoded instead of crashing the consumer."""

    def get_consumers(self, consumer_cls, channel):  # type: ignore[no-untyped-def]
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = lambda message, exc, p=provider: p.handle_undecodable(message, exc)
        return consumers


class ReliableConsumer(Consumer):
    queue_consumer = ReliableQueueConsumer()

    def __init__(self, queue_name: str, with_properties: bool = False, **kwargs: Any) -> None:
        """`with_properties`: the handler also receives the AMQP properties (e.g. the
        broker-validated `user_id`) as a second argument."""
        self.queue_name = queue_name
        self.with_properties = with_properties
        super().__init__(queue=None, **kwargs)

    def handle_message(self, body: Any, message: Any) -> None:
        if not self.with_properties:
            return super().handle_message(body, message)
        handle_result = partial(self.handle_result, message)
        try:
            self.container.spawn_worker(self, (body, dict(message.properties)), {},
                                        context_data=self.unpack_message_headers(message),
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def setup(self) -> None:
        self.queue = kombu_queue(self.queue_name)
        service = self.container.service_name
        self.bus = Bus(self.container.config["AMQP_URI"], service=service)
        super().setup()

    def handle_undecodable(self, message: Any, exc: Exception) -> None:
        try:
            dead_letter(self.bus, self.queue_name, message.body if isinstance(message.body, bytes)
                        else str(message.body).encode(), message.content_type,
                        f"undecodable body: {exc}", "undecodable", message_id=message.properties.get("message_id"))
            message.ack()
        except Exception:  # broker trouble: leave it for redelivery
            log.exception("dead_letter_failed", queue=self.queue_name)
            message.requeue()

    def handle_message_processed(self, message: Any, result: Any = None, exc_info: Any = None) -> None:
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return
        exc = exc_info[1]
        if isinstance(exc, Rejected):
            try:
                raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
                dead_letter(self.bus, self.queue_name, raw, message.content_type, exc.reason, exc.error,
                            headers=message.headers, message_id=message.properties.get("message_id"))
                self.queue_consumer.ack_message(message)
            except Exception:
                log.exception("dead_letter_failed", queue=self.queue_name)
                self.queue_consumer.requeue_message(message)
            return
        # Transient or unexpected: give it back; the delivery limit ends a poison loop.
        self.queue_consumer.requeue_message(message)


consume_reliably = ReliableConsumer.decorator


class BusProvider(DependencyProvider):
    def setup(self) -> None:
        self.bus = Bus(self.container.config["AMQP_URI"], service=self.container.service_name)

    def start(self) -> None:
        self.bus.warm_up()

    def get_dependency(self, worker_ctx: Any) -> Bus:
        return self.bus


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

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[id(worker_ctx)] = time.perf_counter()
        metrics.MESSAGES_IN.labels(self.container.service_name, worker_ctx.entrypoint.method_name).inc()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        name = worker_ctx.entrypoint.method_name
        started = self._started.pop(id(worker_ctx), None)
        if started is not None:
            metrics.HANDLER_LATENCY.labels(self.container.service_name, name).observe(time.perf_counter() - started)
        if exc_info is None:
            return
        if isinstance(exc_info[1], Rejected):  # a refusal on purpose (dead-lettered with the reason), not a fault
            metrics.MESSAGES_REJECTED.labels(self.container.service_name, name).inc()
        else:
            metrics.HANDLER_ERRORS.labels(self.container.service_name, name, type(exc_info[1]).__name__).inc()
            log.error("handler_failed", entrypoint=name, error=repr(exc_info[1]))


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
    bus: Bus = BusProvider()
