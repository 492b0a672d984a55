"""sla's domain: which timers a dispatch arms, which an update stops, and what a firing
timer turns into."""
from __future__ import annotations

from datetime import datetime, timezone

from services.sla.clocks import WorkCalendar
from services.sla.policies import PolicyBook
from services.sla.timers import Claimed, TimerStore
from shared.lifecycle import CLOCK_STOPPED_STATES
from shared.models import (
    CaseDispatched,
    CaseStatus,
    CaseUpdated,
    DeadlineBreached,
    DeadlineEvent,
    DeadlineKind,
    DeadlineWarning,
)

WARNING, BREACH = "warning", "breach"


def timer_id(order_id: str, deadline: str, phase: str, token: int) -> str:
    return f"{order_id}|{deadline}|{phase}|{token}"


class Deadlines:
    def __init__(self, timers: TimerStore, policies: PolicyBook, calendar: WorkCalendar) -> None:
        self.timers = timers
        self.policies = policies
        self.calendar = calendar

    def arm_dispatch(self, event: CaseDispatched) -> int:
        """Arm acknowledge and handling deadlines (and their warnings) of each new order.

        Idempotent: a redelivered event finds its orders already armed.
        """
        armed = 0
        existing = {t.split("|")[0] for t in self.timers.case_timers(event.case_id)}
        for a in event.assignments:
            if not a.active or a.order_id in existing:
                continue
            policy = self.policies.for_case(event.case.category, event.case.filing_condition,
                                            event.case.severity.value, a.sla_policy)
            for deadline, limit, due in ((DeadlineKind.acknowledge, policy.ack_limit, a.ack_due),
                                         (DeadlineKind.handle, policy.handle_limit, a.handle_due)):
                due = due or self.calendar.due(a.dispatched_at, limit)
                warn_at = self.calendar.at_fraction(a.dispatched_at, limit, policy.warn_fraction)
                token = self.timers.next_token(event.case_id, a.order_id, deadline.value)
                base = {"case_id": event.case_id, "correlation_id": event.correlation_id,
                        "order_id": a.order_id, "dept": a.dept, "street": a.street, "level": a.level,
                        "deadline": deadline.value, "due_at": due.isoformat(), "token": token}
                for phase, at in ((WARNING, warn_at), (BREACH, due)):
                    tid = timer_id(a.order_id, deadline.value, phase, token)
                    self.timers.arm(event.case_id, tid, at.timestamp(), {**base, "phase": phase})
                    armed += 1
        return armed

    def apply_update(self, event: CaseUpdated) -> list[str]:
        """Stop the clocks the update ends; returns the cancelled timer ids.

        A department's reply concerns its own order (joint dispatch: each department has
        its own clocks); a status that ends the case stops every clock.
        """
        ids = self.timers.case_timers(event.case_id)
        if event.to_status in CLOCK_STOPPED_STATES:
            stop = ids
        elif event.order_id and event.action in ("reject", "resolve"):
            stop = [t for t in ids if t.split("|")[0] == event.order_id]
        elif event.order_id and event.action in ("acknowledge", "progress"):
            stop = [t for t in ids if t.split("|")[0] == event.order_id
                    and t.split("|")[1] == DeadlineKind.acknowledge.value]
        elif event.to_status in (CaseStatus.acknowledged, CaseStatus.in_progress):
            stop = [t for t in ids if t.split("|")[1] == DeadlineKind.acknowledge.value]
        elif event.to_status == CaseStatus.rejected:
            stop = ids
        else:
            stop = []
        for order_deadline in {tuple(t.split("|")[:2]) for t in stop}:
            self.timers.next_token(event.case_id, *order_deadline)  # fences off in-flight firings
        self.timers.cancel(event.case_id, stop)
        return stop

    def firing_event(self, claimed: Claimed, now: datetime) -> DeadlineEvent | None:
        """The event a claimed timer publishes, or None when it is stale (fenced off)."""
        p = claimed.payload
        if not p:
            return None
        if self.timers.current_token(p["case_id"], p["order_id"], p["deadline"]) != p["token"]:
            return None
        common = dict(message_id=f"{p['phase']}:{claimed.timer_id}", case_id=p["case_id"],
                      correlation_id=p["correlation_id"], dept=p["dept"], street=p["street"],
                      level=p["level"], order_id=p["order_id"], deadline=DeadlineKind(p["deadline"]),
                      due_at=datetime.fromisoformat(p["due_at"]), occurred_at=now)
        if p["phase"] == WARNING:
            return DeadlineWarning(**common)
        late = max(0.0, now.timestamp() - claimed.due)
        return DeadlineBreached(late_seconds=round(late, 3), **common)


def utc_from_ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)
