"""sla: the nameko shell around deadlines.py (clocks, timers, escalation, ledger, indicators)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.sla.deadlines import Deadlines
from services.sla.reconcile import apply_repair, repair_missing
from shared import metrics, topology
from shared.bus import Bus
from shared.config import get_settings
from shared.departments import load_department_codes, load_departments
from shared.grid import load_grid
from shared.health import HEALTH, Heartbeat
from shared.indicators import refresh_gauges
from shared.models import CaseEscalated, DeadlineBreached, DeadlineWarning
from shared.nameko_ext import EntrypointMetrics, HealthChecks, Rejected, TopologyDeclarer, consume_reliably
from shared.policies import load_policies
from shared.reconcile import take_turn
from shared.redisdb import connect
from shared.worktime import load_calendar

log = structlog.get_logger("gridbus.sla")

PUBLISH_CHECK_S = 1.0  #: the publishing loop looks for committed events at least this often
INDICATORS_EVERY_S = 30.0
TICK = Heartbeat(30.0)  #: beats at every run of `fire_due` (one sla service per process)


class DeadlinesProvider(DependencyProvider):
    """One `Deadlines` per process, its own Redis client and confirmed publisher; the
    timers are rebuilt from the stored clock documents when the service starts."""

    def setup(self) -> None:
        settings = get_settings()
        self.client = connect(settings)
        self.bus = Bus(self.container.config["AMQP_URI"], service=self.container.service_name)
        self.deadlines = Deadlines(
            self.client,
            load_policies(),
            load_calendar(),
            self.bus.publish_event,
            grid=load_grid(),
            departments=load_departments(),
            publish_many=self.bus.publish_events,
        )

        # the tick loop must keep running: /healthz fails and the watchdog ends the
        # process once it has not run for SLA_TICK_STALE_SECONDS (a tick that fails because
        # Redis is down still counts as running; the redis check reports that)
        TICK.stale_after = settings.sla_tick_stale_seconds
        TICK.beat()
        HEALTH.register("tick", TICK.check, fatal_after=0.0)

    def start(self) -> None:
        self.deadlines.rebuild()
        TICK.beat()
        self.container.spawn_managed_thread(self._publish_fired, identifier="sla.publish_fired")

    def _publish_fired(self) -> None:
        """Publish what the tick committed as soon as it did, in this thread of its own (a
        slow broker must not hold back the next commits). It sleeps until the tick wakes it:
        polling every 50 ms was 20 wake-ups a second of an idle sla; once a second it looks
        anyway, should a wake-up ever be missed."""
        wake = threading.Event()
        self.deadlines.on_unpublished = wake.set
        while True:
            wake.wait(PUBLISH_CHECK_S)
            wake.clear()
            try:
                self.deadlines.publish_pending()
            except Exception as exc:  # Redis (the outbox hold) down: the relay publishes from the outbox
                log.warning("publish_fired_failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        try:  # timers claimed ahead go back to `due` now rather than when their leases run out
            released = self.deadlines.release_ready()
            if released:
                log.info("sla_timers_released", count=released)
        except redis.exceptions.RedisError as exc:
            log.warning("sla_timers_not_released", error=str(exc))
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> Deadlines:
        return self.deadlines


class SlaService:
    name = "sla"

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    health_checks = HealthChecks()
    deadlines: Deadlines = DeadlinesProvider()

    @consume_reliably(topology.Q_SLA_EVENTS)
    def on_event(self, body: Any) -> None:
        try:
            published = self.deadlines.handle(body)
        except ValueError as exc:
            raise Rejected(f"not a lifecycle event: {exc}", "invalid_event") from None
        self._count(published)

    @timer(interval=get_settings().sla_tick_seconds)
    def fire_due(self) -> None:
        """Claim and commit what is due; publishing is `DeadlinesProvider._publish_fired`'s
        (a slow broker must not hold back the next commits)."""
        settings = get_settings()
        try:
            report = self.deadlines.fire_due(
                lease_s=settings.sla_lease_seconds,
                publish=False,
                ahead=settings.sla_fire_ahead_seconds,
                wait=settings.sla_tick_seconds,
            )
            for fired in report.fired:
                if fired.effects.events:
                    metrics.TIMER_LATENESS.observe(max(0.0, fired.committed - fired.due))
                self._count(fired.effects.events)
            pending = report.pending if report.pending is not None else self.deadlines.timers.pending()
            metrics.TIMERS_PENDING.set(pending)
        finally:
            TICK.beat()

    @timer(interval=2.0)
    def relay_outbox(self) -> None:
        relayed = self.deadlines.relay(get_settings().outbox_relay_after_seconds)
        if relayed:
            metrics.REPAIRS.labels("sla", "outbox_relayed").inc(relayed)
        metrics.SLA_OUTBOX_PENDING.set(self.deadlines.store.outbox.size())
        metrics.OUTBOX_OLDEST_AGE.set(self.deadlines.store.outbox.oldest_age())
        # here, not in fire_due: a firing loop that is stuck must still show its lag
        metrics.TIMER_LAG.set(self.deadlines.timers.lag(time.time()))

    @timer(interval=get_settings().reconcile_seconds)
    def reconcile(self) -> None:
        """Orders of cases being handled without clocks get them (one replica a turn)."""
        settings = get_settings()
        client = self.deadlines.store.r
        if not take_turn(client, "sla", settings.reconcile_seconds):
            return
        repaired = repair_missing(
            client,
            self.deadlines.store,
            lambda repair: self._count(apply_repair(self.deadlines, repair)),
            settings.reconcile_after_seconds,
            settings.reconcile_window_seconds,
        )
        if repaired:
            metrics.REPAIRS.labels("sla", "clocks_rearmed").inc(len(repaired))

    @timer(interval=INDICATORS_EVERY_S, eager=True)  # eager: counts read 0 from the start, not after 30 s
    def refresh_indicators(self) -> None:
        refresh_gauges(
            self.deadlines.store.r, self.deadlines.engine.tz, depts=load_department_codes(), streets=load_grid().streets
        )

    @staticmethod
    def _count(events: list[Any]) -> None:
        for event in events:
            if isinstance(event, DeadlineBreached):
                metrics.DEADLINES_BREACHED.labels(event.dept, event.deadline.value).inc()
            elif isinstance(event, DeadlineWarning):
                metrics.DEADLINE_WARNINGS.labels(event.dept, event.deadline.value).inc()
            elif isinstance(event, CaseEscalated):
                metrics.ESCALATIONS.labels(event.dept, str(event.to_level)).inc()
