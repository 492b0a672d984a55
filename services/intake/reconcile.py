"""intake's reconciler: cases stuck in `registered`.

A case whose `case.registered` went out but whose dispatch never came back to intake —
the router's event was lost with a second of Redis writes, or dead-lettered — stays
`registered` with no assignment, although the department may already have its order.
Publishing the case's `case.registered` again repairs it: the event's id is the case's
(`registered:<case_id>`), so sla counts the registration once; the router plans the same
round with the same order and event ids (derived from the case and the round), so the
department and sla recognise a repeat and intake applies the dispatch it missed.
"""

from __future__ import annotations

import time
from typing import Callable, cast

import structlog

from services.intake.store import CaseStore
from shared import redis_keys as keys
from shared.models import Case, CaseRegistered, CaseStatus, summary_of
from shared.reconcile import MAX_REPAIRS_PER_CASE, count_repair

log = structlog.get_logger("gridbus.intake")


def registered_event(case: Case) -> CaseRegistered:
    """The case's one `case.registered` (the same id every time it is published)."""
    return CaseRegistered(
        message_id=registered_message_id(case.case_id),
        case_id=case.case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        occurred_at=case.registered_at,
    )


def registered_message_id(case_id: str) -> str:
    return f"registered:{case_id}"


def stuck_registered(
    store: CaseStore, after_s: float, window_s: float, now: float | None = None, limit: int = 500
) -> list[Case]:
    """Open cases registered between `window_s` and `after_s` seconds ago that are still
    `registered`, with no assignment and not a duplicate."""
    now = time.time() if now is None else now
    ids = cast(list[str], store.r.zrangebyscore(keys.open_cases(), now - window_s, now - after_s, start=0, num=limit))
    stuck = []
    for i in range(0, len(ids), 200):
        for case in store.get_many(ids[i : i + 200]):
            if (
                case is not None
                and case.status is CaseStatus.registered
                and not case.assignments
                and not case.duplicate_of
            ):
                stuck.append(case)
    return stuck


def repair_stuck(
    store: CaseStore,
    publish: Callable[[list[CaseRegistered]], None],
    after_s: float,
    window_s: float,
    now: float | None = None,
) -> list[str]:
    """Publish `case.registered` again for every stuck case (at most MAX_REPAIRS_PER_CASE
    times each); returns the ids of the cases repaired."""
    now = time.time() if now is None else now
    events, repaired = [], []
    for case in stuck_registered(store, after_s, window_s, now):
        tries = count_repair(store.r, "intake", case.case_id, window_s)
        if tries > MAX_REPAIRS_PER_CASE:
            if tries == MAX_REPAIRS_PER_CASE + 1:
                log.error("repair_given_up", case_id=case.case_id, kind="registered_reemitted", tries=tries - 1)
            continue
        events.append(registered_event(case))
        repaired.append(case.case_id)
        log.warning(
            "repair",
            case_id=case.case_id,
            kind="registered_reemitted",
            try_no=tries,
            stuck_s=round(now - case.registered_at.timestamp(), 1),
        )
    if events:
        publish(events)
    return repaired
