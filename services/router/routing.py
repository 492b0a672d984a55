"""The router's work on one `router.cases` message, apart from the nameko shell: the
service's entrypoint and the framework benchmark (bench/bench_framework.py) run the very
same code, so the benchmark's bare consumers do what the deployed router does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from services.router.dispatch import Dispatcher, DispatchPlan, withdrawal_routing_key
from shared import metrics, topology
from shared.bus import Outgoing
from shared.departments import GRID_STATION
from shared.models import DispatchWithdrawn, Envelope
from shared.nameko_ext import Rejected, event_or_reject

log = structlog.get_logger("gridbus.router")


@dataclass(frozen=True)
class Routed:
    """What to publish for one message (one confirm round for all of it), and why."""

    event: Envelope
    batch: list[Outgoing]
    plan: DispatchPlan | None  # None: a withdrawal passed on to the department


def route(dispatcher: Dispatcher, body: Any, max_rejections: int) -> Routed:
    """The messages a `router.cases` body leads to; `Rejected` for one router does not handle."""
    event = event_or_reject(body)
    if isinstance(event, DispatchWithdrawn):
        # intake closed the order; the department hears it on its own queue
        notice = Outgoing(
            topology.EX_DISPATCH,
            withdrawal_routing_key(event),
            event,
            event.message_id,
            event.correlation_id,
            kind="dispatch_withdrawn",
        )
        return Routed(event, [notice], None)
    plan = dispatcher.plan_event(event, max_rejections=max_rejections)
    if plan is None:
        raise Rejected(f"router does not handle {type(event).__name__}", "invalid_event")
    # Orders first (one channel keeps the order): once case_dispatched is out, deadlines
    # run, so the orders must be queued.
    batch = [Outgoing(topology.EX_DISPATCH, key, order, kind="dispatch_order") for key, order in plan.orders]
    batch.append(Outgoing.event(plan.dispatched))
    if plan.unroutable is not None:
        batch.append(Outgoing.event(plan.unroutable))
    return Routed(event, batch, plan)


def record(routed: Routed) -> None:
    """Metrics and the log line of a message whose batch the broker confirmed."""
    event, plan = routed.event, routed.plan
    if plan is None:
        assert isinstance(event, DispatchWithdrawn)
        log.info(
            "order_withdrawn", case_id=event.case_id, order_id=event.order_id, dept=event.dept, round=event.round_no
        )
        return
    for _, order in plan.orders:
        metrics.CASES_DISPATCHED.labels(order.dept, order.street).inc()
    if plan.unroutable is not None:
        metrics.CASES_UNROUTABLE.labels(plan.unroutable.case.street).inc()
    log.info(
        "case_routed",
        case_id=event.case_id,
        round=plan.dispatched.round_no,
        disputed=plan.dispatched.disputed,
        receivers=[f"{o.dept}@L{o.level}:{o.route}" for _, o in plan.orders],
        triage=any(o.dept == GRID_STATION for _, o in plan.orders),
    )
