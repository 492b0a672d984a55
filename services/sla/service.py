"""sla: the nameko shell around deadlines.py and timers.py."""
from __future__ import annotations

import time
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.sla.clocks import load_calendar
from services.sla.deadlines import Deadlines
from services.sla.policies import load_policies
from services.sla.timers import TimerStore
from shared import metrics, topology
from shared.bus import Bus
from shared.config import get_settings
from shared.models import CaseDispatched, CaseUpdated, DeadlineBreached, parse_event, utcnow
from shared.nameko_ext import (
    BusProvider,
    EntrypointMetrics,
    RedisProvider,
    Rejected,
    TopologyDeclarer,
    consume_reliably,
)

log = structlog.get_logger("gridbus.sla")


class DeadlinesProvider(DependencyProvider):
    def setup(self) -> None:
        self.policies = load_policies()
        self.calendar = load_calendar()

    def get_dependency(self, worker_ctx: Any) -> "DeadlinesProvider":
        return self

    def for_client(self, client: Any) -> Deadlines:
        return Deadlines(TimerStore(client), self.policies, self.calendar)


class SlaService:
    name = "sla"

    declare_topology = TopologyDeclarer()
    entrypoint_metrics = EntrypointMetrics()
    bus: Bus = BusProvider()
    redis = RedisProvider()
    deadlines: DeadlinesProvider = DeadlinesProvider()

    @consume_reliably(topology.Q_SLA_EVENTS)
    def on_event(self, body: Any) -> None:
        try:
            event = parse_event(body)
        except ValueError as exc:
            raise Rejected(f"not a lifecycle event: {exc}", "invalid_event") from None
        deadlines = self.deadlines.for_client(self.redis)
        if isinstance(event, CaseDispatched):
            armed = deadlines.arm_dispatch(event)
            if armed:
                metrics.TIMERS_ARMED.labels("all").inc(armed)
            log.info("deadlines_armed", case_id=event.case_id, timers=armed)
        elif isinstance(event, CaseUpdated):
            stopped = deadlines.apply_update(event)
            if stopped:
                log.info("deadlines_stopped", case_id=event.case_id, status=event.to_status.value,
                         timers=len(stopped))

    @timer(interval=get_settings().sla_tick_seconds)
    def fire_due(self) -> None:
        settings = get_settings()
        deadlines = self.deadlines.for_client(self.redis)
        for claimed in deadlines.timers.claim(time.time(), settings.sla_lease_seconds):
            now = utcnow()
            event = deadlines.firing_event(claimed, now)
            case_id = claimed.payload.get("case_id", "")
            if event is not None:
                self.bus.publish_event(event)
                metrics.TIMER_LATENESS.observe(max(0.0, now.timestamp() - claimed.due))
                if isinstance(event, DeadlineBreached):
                    metrics.DEADLINES_BREACHED.labels(event.dept, event.deadline.value).inc()
                else:
                    metrics.DEADLINE_WARNINGS.labels(event.dept, event.deadline.value).inc()
                log.info(event.event, case_id=case_id, dept=event.dept, deadline=event.deadline.value)
            deadlines.timers.done(case_id, claimed.timer_id)
        metrics.TIMERS_PENDING.set(deadlines.timers.pending())
