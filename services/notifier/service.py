"""notifier: the nameko shell around deliveries.py and the channels."""
from __future__ import annotations

import time
from typing import Any

import structlog
from nameko.extensions import DependencyProvider

from services.notifier.channels.base import ChannelSettings, send
from services.notifier.deliveries import AddressBook, Delivery, next_step, outgoing, plan_deliveries
from shared import metrics, topology
from shared import redis_keys as keys
from shared.bus import Bus
from shared.config import get_settings
from shared.departments import load_departments
from shared.models import NotificationFailed, parse_event
from shared.nameko_ext import (
    BusProvider,
    EntrypointMetrics,
    RedisProvider,
    Rejected,
    TopologyDeclarer,
    consume_reliably,
    dead_letter,
)

log = structlog.get_logger("gridbus.notifier")
SENT_TTL_S = 30 * 86400  # how long a sent delivery is remembered for dedup


class Channels(DependencyProvider):
    def setup(self) -> None:
        self.settings = ChannelSettings.from_env()
        self.addresses = AddressBook(load_departments(), get_settings())

    def get_dependency(self, worker_ctx: Any) -> "Channels":
        return self


class NotifierService:
    name = "notifier"

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    bus: Bus = BusProvider()
    redis = RedisProvider()
    channels: Channels = Channels()

    @consume_reliably(topology.Q_NOTIFIER_EVENTS)
    def on_event(self, body: Any) -> None:
        try:
            event = parse_event(body)
        except ValueError as exc:
            raise Rejected(f"not a lifecycle event: {exc}", "invalid_event") from None
        for delivery in plan_deliveries(event):
            self.bus.publish(topology.EX_NOTIFY, topology.RK_DELIVERY, delivery,
                             message_id=delivery.delivery_id, correlation_id=delivery.correlation_id,
                             kind="delivery")

    @consume_reliably(topology.Q_NOTIFIER_DELIVERIES)
    def deliver(self, body: Any) -> None:
        try:
            delivery = Delivery.model_validate(body)
        except ValueError as exc:
            raise Rejected(f"not a delivery: {exc}", "invalid_delivery") from None
        sent_key = keys.delivery_sent(delivery.delivery_id)
        if self.redis.exists(sent_key):
            log.info("delivery_duplicate", case_id=delivery.case_id, delivery_id=delivery.delivery_id)
            return
        address = self.channels.addresses.resolve(delivery.recipient, delivery.channel)
        if address is None:
            log.info("no_address", case_id=delivery.case_id, recipient=delivery.recipient,
                     channel=delivery.channel.value)
            metrics.NOTIFICATIONS.labels(delivery.channel.value, "no_address").inc()
            return
        started = time.perf_counter()
        outcome = send(outgoing(delivery, address), self.channels.settings)
        metrics.NOTIFICATION_LATENCY.labels(delivery.channel.value).observe(time.perf_counter() - started)
        metrics.NOTIFICATIONS.labels(delivery.channel.value, outcome.kind).inc()
        step = next_step(delivery, outcome)
        if step.action == "delivered":
            self.redis.set(sent_key, str(int(time.time())), ex=SENT_TTL_S)
        elif step.action == "retry":
            retry = delivery.model_copy(update={"attempt": delivery.attempt + 1})
            self.bus.publish(topology.EX_NOTIFY, topology.retry_routing_key(step.delay_s), retry,
                             message_id=retry.delivery_id, correlation_id=retry.correlation_id, kind="retry")
            log.info("delivery_retry", case_id=delivery.case_id, delivery_id=delivery.delivery_id,
                     attempt=delivery.attempt, delay_s=step.delay_s, reason=step.reason)
        else:
            dead_letter(self.bus, topology.Q_NOTIFIER_DELIVERIES, delivery.model_dump_json().encode(),
                        "application/json", step.reason, "delivery_failed", message_id=delivery.delivery_id)
            self.bus.publish_event(NotificationFailed(
                message_id=f"failed:{delivery.delivery_id}", case_id=delivery.case_id,
                correlation_id=delivery.correlation_id, channel=delivery.channel.value,
                recipient=delivery.recipient, reason=step.reason, attempts=delivery.attempt))
            log.warning("delivery_dead", case_id=delivery.case_id, delivery_id=delivery.delivery_id,
                        reason=step.reason)
