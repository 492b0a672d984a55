"""The operations centre's pipeline indicators, observed where intake applies changes."""
from __future__ import annotations

from datetime import datetime

from shared import metrics
from shared.models import Case, CaseUpdated, Envelope, utcnow


def observe(case: Case, events: list[Envelope], now: datetime | None = None) -> None:
    """Count replies (on time or not) and the time from registration to each stage."""
    now = now or utcnow()
    age = max(0.0, (now - case.registered_at).total_seconds())
    for event in events:
        if not isinstance(event, CaseUpdated):
            continue
        if event.action == "dispatch" and event.from_status and event.from_status.value == "registered":
            metrics.PIPELINE_LATENCY.labels("dispatched").observe(age)
        if event.dept is None or event.order_id is None:
            continue
        order = next((a for a in case.assignments if a.order_id == event.order_id), None)
        due = None
        if order is not None:
            due = order.ack_due if event.action == "acknowledge" else order.handle_due if event.action == "resolve" else None
        on_time = "n/a" if due is None else ("yes" if now <= due else "no")
        metrics.REPLIES.labels(event.dept, event.action, on_time).inc()
        if event.action == "acknowledge" and event.to_status.value == "acknowledged":
            metrics.PIPELINE_LATENCY.labels("acknowledged").observe(age)
        if event.action == "resolve" and event.to_status.value == "resolved":
            metrics.PIPELINE_LATENCY.labels("resolved").observe(age)
