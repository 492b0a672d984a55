"""The operations centre's pipeline indicators, observed where intake applies changes."""

from __future__ import annotations

from datetime import datetime

from shared import metrics
from shared.models import Assignment, Case, CaseDispatched, CaseStatus, CaseUpdated, Envelope, utcnow


def observe(case: Case, events: list[Envelope], now: datetime | None = None, applied: Envelope | None = None) -> None:
    """Count replies (on time or not) and the time from registration to each stage.
    `applied`: the event just applied to the case (the router's `case_dispatched` is
    followed by no case_updated: its first dispatch is read from the case's timeline)."""
    now = now or utcnow()
    age = max(0.0, (now - case.registered_at).total_seconds())
    if isinstance(applied, CaseDispatched):
        entry = next((t for t in reversed(case.timeline) if t.message_id == applied.message_id), None)
        if entry is not None and entry.action == "dispatch" and entry.from_status is CaseStatus.registered:
            metrics.PIPELINE_LATENCY.labels("dispatched").observe(age)
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
            if event.action == "acknowledge":
                due = order.ack_due
            elif event.action == "resolve":
                due = order.handle_due
        on_time = "n/a" if due is None else ("yes" if now <= due else "no")
        metrics.REPLIES.labels(event.dept, event.action, on_time).inc()
        if event.action == "acknowledge" and event.to_status.value == "acknowledged":
            metrics.PIPELINE_LATENCY.labels("acknowledged").observe(age)
        if event.action == "resolve" and event.to_status.value == "resolved":
            metrics.PIPELINE_LATENCY.labels("resolved").observe(age)


AGE_BUCKETS = ((4 * 3600, "lt_4h"), (86400, "4h_1d"), (3 * 86400, "1d_3d"), (7 * 86400, "3d_7d"))


def age_bucket(seconds: float) -> str:
    return next((name for limit, name in AGE_BUCKETS if seconds < limit), "gt_7d")


def backlog(cases: list[Case], now: datetime | None = None) -> dict[tuple[str, str, str, str], int]:
    """Open cases by (street, department, level, age bucket); a case dispatched to several
    departments counts for each, one not yet dispatched under department `none`."""
    now = now or utcnow()
    counts: dict[tuple[str, str, str, str], int] = {}
    for case in cases:
        age = age_bucket((now - case.registered_at).total_seconds())
        active: list[Assignment | None] = [a for a in case.assignments if a.active] or [None]
        for a in active:
            key = (case.street, a.dept if a else "none", str(a.level) if a else "0", age)
            counts[key] = counts.get(key, 0) + 1
    return counts


def publish_backlog(counts: dict[tuple[str, str, str, str], int]) -> None:
    metrics.OPEN_CASES.clear()  # a department whose backlog emptied must drop to nothing, not stay stale
    for labels, n in counts.items():
        metrics.OPEN_CASES.labels(*labels).set(n)
