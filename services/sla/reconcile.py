"""sla's reconciler: orders of cases being handled that have no clocks.

When sla's `case.dispatched` was lost (dead-lettered before the consumers held messages,
or a second of Redis writes lost in a crash after sla had acked it), the case goes on at
intake — dispatched, then acknowledged, in progress, perhaps suspended — but nobody is
held to its deadlines. This pass reads intake's case documents (read only, as the
notifier does) for open cases in a state whose orders have clocks (`CLOCKED_STATES`)
dispatched more than RECONCILE_AFTER_SECONDS ago, and for those with an active order sla
does not know, rebuilds sla's view of the current round from intake's record in one
change of sla's document (`rearm`):

1. the round's `case.dispatched`, with the due times the department was given (a
   deadline that passed meanwhile fires at once);
2. then, each at the time it happened: every acknowledgement of an order (its
   acknowledge clock stops, so an acknowledged case gets no acknowledge breach), every
   order resolved on its own in a joint dispatch, every suspension and resumption of the
   round (paused clocks keep the time used before the pause, resumed ones count on from
   the resumption);
3. the case's status as intake has it.

Safe with several replicas: one takes a turn per period (shared/reconcile.py), and the
change is a compare-and-commit that does nothing when sla knows every active order by
then (another replica, or the original event, got there first). An acknowledgement that
came after its acknowledge deadline is recorded as it is, not judged again: the breach
that was never fired is not invented afterwards (no ledger entry, no escalation), but the
decision is counted as what it was: breached, not met.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, cast

import redis
import structlog

from services.sla.codec import unpack_doc
from services.sla.state import CaseClocks, Effects, Engine
from services.sla.store import SlaStore
from shared import redis_keys as keys
from shared.models import Case, CaseDispatched, CaseStatus, CaseUpdated, Envelope, summary_of
from shared.reconcile import MAX_REPAIRS_PER_CASE, count_repair

if TYPE_CHECKING:
    from services.sla.deadlines import Deadlines

log = structlog.get_logger("gridbus.sla")

#: the states in which the active orders' clocks run (or are paused, `suspended`)
CLOCKED_STATES = frozenset(
    {CaseStatus.dispatched, CaseStatus.acknowledged, CaseStatus.in_progress, CaseStatus.suspended}
)
ACTOR = "reconciler"


@dataclass(frozen=True)
class Repair:
    """What sla applies for one case: its current round and what happened to it since."""

    case_id: str
    status: CaseStatus
    dispatched: CaseDispatched
    since: list[tuple[float, CaseUpdated]]  # (when it happened, the change), oldest first
    acked_late: frozenset[str] = frozenset()  # departments that acknowledged after their acknowledge deadline

    @property
    def orders(self) -> list[str]:
        return [a.order_id for a in self.dispatched.assignments]


def _round_of(case: Case) -> int:
    rounds = [
        int(m.group(1))
        for a in case.assignments
        if a.active
        for m in [re.match(rf"^{re.escape(case.case_id)}/(\d+)/", a.order_id)]
        if m
    ]
    return max(rounds) if rounds else max(1, case.last_round)


def repair_event(case: Case) -> CaseDispatched:
    """The case's current round as a `case.dispatched`, from intake's record of it."""
    round_no = _round_of(case)
    return CaseDispatched(
        message_id=f"repair:dispatched:{case.case_id}:{round_no}",
        case_id=case.case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        assignments=[a for a in case.assignments if a.active],
        round_no=round_no,
    )


def repair_of(case: Case) -> Repair:
    """The repair of a case whose current round sla has no clocks for."""
    dispatched = repair_event(case)
    round_no = dispatched.round_no
    since: list[tuple[float, CaseUpdated]] = []

    def change(what: str, at: float, frm: CaseStatus, to: CaseStatus, **extra: str) -> CaseUpdated:
        return CaseUpdated(
            message_id=f"repair:{what}:{case.case_id}:{round_no}",
            case_id=case.case_id,
            correlation_id=case.correlation_id,
            occurred_at=datetime.fromtimestamp(at, timezone.utc),
            from_status=frm,
            to_status=to,
            actor=ACTOR,
            **extra,
        )

    for a in dispatched.assignments:
        if a.acknowledged_at is not None:
            at = a.acknowledged_at.timestamp()
            since.append(
                (
                    at,
                    change(
                        f"acknowledge:{a.order_id}",
                        at,
                        CaseStatus.dispatched,
                        CaseStatus.acknowledged,
                        action="acknowledge",
                        dept=a.dept,
                        order_id=a.order_id,
                    ),
                )
            )
        if a.resolved_at is not None:  # its part of a joint dispatch: the case is still open
            at = a.resolved_at.timestamp()
            since.append(
                (
                    at,
                    change(
                        f"resolve:{a.order_id}",
                        at,
                        CaseStatus.in_progress,
                        CaseStatus.in_progress,
                        action="resolve",
                        dept=a.dept,
                        order_id=a.order_id,
                    ),
                )
            )
    start = min((a.dispatched_at.timestamp() for a in dispatched.assignments), default=0.0)
    for i, entry in enumerate(case.timeline):
        at = entry.at.timestamp()
        if at < start or entry.to_status is None:
            continue
        frm = entry.from_status
        if entry.to_status is CaseStatus.suspended and frm is not CaseStatus.suspended:
            since.append(
                (at, change(f"suspend:{i}", at, CaseStatus.in_progress, CaseStatus.suspended, action="suspend"))
            )
        elif frm is CaseStatus.suspended and entry.to_status is not CaseStatus.suspended:
            since.append((at, change(f"resume:{i}", at, CaseStatus.suspended, CaseStatus.in_progress, action="resume")))
    since.sort(key=lambda item: item[0])
    late = frozenset(
        a.dept
        for a in dispatched.assignments
        if a.acknowledged_at is not None and a.ack_due is not None and a.acknowledged_at > a.ack_due
    )
    return Repair(case.case_id, case.status, dispatched, since, late)


def _merge(into: Effects, fx: Effects) -> None:
    if fx.stale:
        return
    for name in ("arm", "cancel", "events", "ledger", "ledger_end", "counts", "decided"):
        getattr(into, name).extend(getattr(fx, name))


def rearm(engine: Engine, doc: CaseClocks | None, repair: Repair, now: float) -> tuple[CaseClocks | None, Effects]:
    """sla's document of the case with the repair applied (steps 1–3 above), as one
    change; stale (nothing written) when sla knows every active order already."""
    if doc is not None and all(order_id in doc.orders for order_id in repair.orders):
        return doc, Effects(stale=True)
    doc, fx = engine.dispatched(doc, repair.dispatched, now)
    if fx.stale:
        return doc, fx
    for at, event in repair.since:
        _merge(fx, engine.updated(doc, event, at))
    doc.status = repair.status.value
    fx.decided = [
        (dept, kind, "breached" if kind == "acknowledge" and dept in repair.acked_late else outcome)
        for dept, kind, outcome in fx.decided
    ]
    # a clock started and stopped within the repair (acknowledged) never needs its timer
    cancelled = set(fx.cancel)
    fx.arm = [t for t in fx.arm if t[0] not in cancelled]
    return doc, fx


def apply_repair(deadlines: "Deadlines", repair: Repair, now: float | None = None) -> list[Envelope]:
    """Commit the repair in sla's store; the events it published."""
    at = time.time() if now is None else now
    return deadlines.apply(repair.case_id, lambda doc: rearm(deadlines.engine, doc, repair, at))


def missing_clocks(
    client: redis.Redis, store: SlaStore, after_s: float, window_s: float, now: float | None = None, limit: int = 500
) -> list[Repair]:
    """Repairs for open cases in a clocked state with an active order sla has no clocks for."""
    now = time.time() if now is None else now
    ids = cast(list[str], client.zrangebyscore(keys.open_cases(), now - window_s, now - after_s, start=0, num=limit))
    repairs = []
    for i in range(0, len(ids), 200):
        chunk = ids[i : i + 200]
        pipe = client.pipeline(transaction=False)
        for case_id in chunk:
            pipe.hget(keys.case(case_id), "doc")
        cases = []
        for doc in pipe.execute():
            if not doc:
                continue
            case = Case.model_validate_json(doc)
            active = [a for a in case.assignments if a.active]
            if (
                case.status in CLOCKED_STATES
                and active
                and all(now - a.dispatched_at.timestamp() >= after_s for a in active)
            ):
                cases.append(case)
        for case, (raw, _) in zip(cases, store.read([c.case_id for c in cases]), strict=True):
            known = unpack_doc(case.case_id, raw).orders if raw is not None else {}
            if any(a.order_id not in known for a in case.assignments if a.active):
                repairs.append(repair_of(case))
    return repairs


def repair_missing(
    client: redis.Redis,
    store: SlaStore,
    apply: Callable[[Repair], object],
    after_s: float,
    window_s: float,
    now: float | None = None,
) -> list[str]:
    """Apply each repair (at most MAX_REPAIRS_PER_CASE times per case); the repaired ids."""
    repaired = []
    for repair in missing_clocks(client, store, after_s, window_s, now):
        tries = count_repair(client, "sla", repair.case_id, window_s)
        if tries > MAX_REPAIRS_PER_CASE:
            if tries == MAX_REPAIRS_PER_CASE + 1:
                log.error("repair_given_up", case_id=repair.case_id, kind="clocks_rearmed", tries=tries - 1)
            continue
        apply(repair)
        repaired.append(repair.case_id)
        log.warning(
            "repair",
            case_id=repair.case_id,
            kind="clocks_rearmed",
            status=repair.status.value,
            try_no=tries,
            orders=repair.orders,
            replayed=[event.action for _, event in repair.since],
        )
    return repaired
