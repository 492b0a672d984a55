"""sla's reconciler: dispatched orders without running clocks.

When sla's `case.dispatched` was lost (dead-lettered before the consumers held messages,
or a second of Redis writes lost in a crash after sla had acked it), the case is
`dispatched` at intake but nobody is held to its deadlines. This pass reads intake's case
documents (read only, as the notifier does) for open cases dispatched more than
RECONCILE_AFTER_SECONDS ago, and for those whose active orders sla does not know, applies
a `case.dispatched` rebuilt from the case's assignments — with the due times the
department was given, so a deadline that passed meanwhile fires at once.

Only cases still `dispatched` are repaired: for an acknowledged case the acknowledge clock
must not start again, and its handling clock is left to an operator (`gridbus sla due`).
"""

from __future__ import annotations

import re
import time
from typing import Callable, cast

import redis
import structlog

from services.sla.codec import unpack_doc
from services.sla.store import SlaStore
from shared import redis_keys as keys
from shared.models import Case, CaseDispatched, CaseStatus, summary_of
from shared.reconcile import MAX_REPAIRS_PER_CASE, count_repair

log = structlog.get_logger("gridbus.sla")


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


def missing_clocks(
    client: redis.Redis, store: SlaStore, after_s: float, window_s: float, now: float | None = None, limit: int = 500
) -> list[CaseDispatched]:
    """Repairs for open, dispatched cases with an active order sla has no clocks for."""
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
                case.status is CaseStatus.dispatched
                and active
                and all(now - a.dispatched_at.timestamp() >= after_s for a in active)
            ):
                cases.append(case)
        for case, (raw, _) in zip(cases, store.read([c.case_id for c in cases]), strict=True):
            known = unpack_doc(case.case_id, raw).orders if raw is not None else {}
            if any(a.order_id not in known for a in case.assignments if a.active):
                repairs.append(repair_event(case))
    return repairs


def repair_missing(
    client: redis.Redis,
    store: SlaStore,
    apply: Callable[[CaseDispatched], object],
    after_s: float,
    window_s: float,
    now: float | None = None,
) -> list[str]:
    """Apply each repair (at most MAX_REPAIRS_PER_CASE times per case); the repaired ids."""
    repaired = []
    for event in missing_clocks(client, store, after_s, window_s, now):
        tries = count_repair(client, "sla", event.case_id, window_s)
        if tries > MAX_REPAIRS_PER_CASE:
            if tries == MAX_REPAIRS_PER_CASE + 1:
                log.error("repair_given_up", case_id=event.case_id, kind="clocks_rearmed", tries=tries - 1)
            continue
        apply(event)
        repaired.append(event.case_id)
        log.warning(
            "repair",
            case_id=event.case_id,
            kind="clocks_rearmed",
            try_no=tries,
            orders=[a.order_id for a in event.assignments],
        )
    return repaired
