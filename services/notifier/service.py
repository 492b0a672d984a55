"""notifier: the nameko shell around sender.py (planning, sending, digests).

Entrypoints: `on_event` (queue notifier.events) fans an event out into deliveries and
sends them in the same worker (plans.py); `deliver` (queue notifier.deliveries: retries
fed back by the delay queues, parked copies, digests) sends one;
`flush_digests` (timer, every replica; claims are atomic in Redis) sends held messages
as digests; `poll_queues` (timer) reads the depth of the notifier's queues for metrics.
"""

from __future__ import annotations

from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.notifier.addresses import AddressBook
from services.notifier.channels.base import ChannelName, ChannelSettings, warm_up
from services.notifier.deliveries import Delivery
from services.notifier.planner import Planner
from services.notifier.render import Renderer
from services.notifier.sender import Notifier
from services.notifier.subscriptions import load_notify
from shared import metrics, topology
from shared.amqpclient import QueueDepths
from shared.bus import Bus
from shared.catalog import load_catalog
from shared.config import get_settings
from shared.departments import load_departments
from shared.grid import load_grid
from shared.nameko_ext import (
    GridbusService,
    QueueDepthsProvider,
    RedisProvider,
    Rejected,
    consume_reliably,
    event_or_reject,
)

log = structlog.get_logger("gridbus.notifier")

WATCHED_QUEUES = (
    topology.Q_NOTIFIER_EVENTS,
    topology.Q_NOTIFIER_DELIVERIES,
    topology.dead_queue(topology.Q_NOTIFIER_DELIVERIES),
    *(topology.retry_queue(d) for d in topology.NOTIFIER_RETRY_DELAYS_S),
)


class NotifierConfig(DependencyProvider):
    """Configuration loaded once at start (a bad notify.yaml stops the service with file:line)."""

    def setup(self) -> None:
        settings = get_settings()
        departments = load_departments()
        self.notify = load_notify(departments={d.code for d in departments})
        grid = load_grid()
        self.addresses = AddressBook(departments, grid, self.notify, settings)
        renderer = Renderer(settings.config_dir / "notify_templates")
        self.planner = Planner(self.notify, self.addresses, renderer, grid, load_catalog())
        self.channel_settings = ChannelSettings.from_settings()
        self.settings = settings
        self._notifiers: dict[tuple[int, int], Notifier] = {}
        warm_up(self.channel_settings)
        disabled = self.channel_settings.disabled()
        for channel in ChannelName:
            metrics.NOTIFY_CHANNEL_ENABLED.labels(channel.value).set(0 if channel in disabled else 1)
        if disabled:  # once, here: not one warning (or dead letter) per message
            log.warning(
                "channels_disabled",
                channels=sorted(c.value for c in disabled),
                enable_with=sorted(disabled.values()),
                effect="deliveries fall back to the next channel or count as no_address",
            )

    def get_dependency(self, worker_ctx: Any) -> NotifierConfig:
        return self

    def notifier(self, client: Any, bus: Bus) -> Notifier:
        """One Notifier per (Redis client, bus): both are the process's own, so this is
        built once, not per message (it registers its Lua scripts when built)."""
        key = (id(client), id(bus))
        found = self._notifiers.get(key)
        if found is None:
            found = self._notifiers[key] = Notifier(
                client,
                bus,
                self.planner,
                self.addresses,
                self.notify,
                self.channel_settings,
                tz=self.settings.timezone,
                lease_s=self.settings.notifier_send_lease_seconds,
            )
        return found


class NotifierService(GridbusService):
    name = "notifier"

    redis = RedisProvider()
    config: NotifierConfig = NotifierConfig()
    depths: QueueDepths = QueueDepthsProvider()

    @consume_reliably(topology.Q_NOTIFIER_EVENTS)
    def on_event(self, body: Any) -> None:
        event = event_or_reject(body)
        planned = self.config.notifier(self.redis, self.bus).on_event(event)
        log.info(
            "event_planned", case_id=event.case_id, event_type=getattr(event, "event", ""), deliveries=len(planned)
        )

    @consume_reliably(topology.Q_NOTIFIER_DELIVERIES)
    def deliver(self, body: Any) -> None:
        try:
            delivery = Delivery.model_validate(body)
        except ValueError as exc:
            raise Rejected(f"not a delivery: {exc}", "invalid_delivery") from None
        self.config.notifier(self.redis, self.bus).deliver(delivery)

    @timer(interval=get_settings().notifier_flush_seconds)
    def flush_digests(self) -> None:
        self.config.notifier(self.redis, self.bus).flush()

    @timer(interval=get_settings().notifier_queue_poll_seconds, eager=True)  # depths from the start
    def poll_queues(self) -> None:
        notifier = self.config.notifier(self.redis, self.bus)
        metrics.NOTIFICATIONS_HELD.set(notifier.holds.held_count())
        for queue, depth in self.depths.read(WATCHED_QUEUES).items():
            if depth is not None:  # None: deleted under us; the service declares it again at start
                metrics.NOTIFIER_QUEUE_MESSAGES.labels(queue).set(depth)
