"""The reconcilers on the real Redis: a case planted stuck in `registered` gets its one
`case.registered` again, a dispatched case planted without SLA clocks gets them with the
deadlines the department was given; each repaired a bounded number of times, one replica
a turn."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import redis

from services.intake.cases import Registrar
from services.intake.duplicates import load_duplicate_policy
from services.intake.reconcile import repair_stuck
from services.intake.store import CaseStore
from services.sla.deadlines import Deadlines
from services.sla.reconcile import repair_missing
from shared import redis_keys as keys
from shared.catalog import load_catalog
from shared.grid import load_grid
from shared.models import Assignment, CaseStatus, Envelope, Report
from shared.policies import load_policies
from shared.reconcile import MAX_REPAIRS_PER_CASE, take_turn
from shared.worktime import load_calendar

pytestmark = pytest.mark.integration

REPORT = {
    "report_id": "rec-1",
    "category": "01037",
    "description": "穿山路连续三盏路灯不亮",
    "severity": "normal",
    "filing_condition": "连续3盏以上不亮",
    "location": {"lat": 25.2, "lon": 110.35, "address": "七星区辰山路", "grid": "450305001001001"},
    "reporter": {"id": "w-1024", "role": "grid_officer"},
    "observed_at": "2026-11-27T09:30:00+08:00",
}


def registrar(store: CaseStore) -> Registrar:
    return Registrar(store, load_catalog(), load_grid(), "Asia/Shanghai", load_duplicate_policy())


def test_a_case_stuck_in_registered_gets_its_one_event_again(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    reg = registrar(store)
    stuck = reg.register(Report.model_validate(REPORT))
    fine = reg.register(
        Report.model_validate({**REPORT, "report_id": "rec-2", "location": {**REPORT["location"], "lat": 25.25}})
    )
    original = [e for e in stuck.events if e.event == "case_registered"][0]
    assert original.message_id == f"registered:{stuck.case_id}"
    case = store.get(fine.case_id)  # this one was dispatched: nothing to repair
    case.status = CaseStatus.dispatched
    store.save(case, case.version, [])

    published: list[list[Envelope]] = []
    assert repair_stuck(store, published.append, after_s=60, window_s=86400) == []  # too young yet
    later = time.time() + 120
    assert repair_stuck(store, published.append, after_s=60, window_s=86400, now=later) == [stuck.case_id]
    [[again]] = published
    assert again.message_id == original.message_id  # sla counts the registration once, by this id
    assert again.case == original.case and again.case_id == stuck.case_id

    for _ in range(MAX_REPAIRS_PER_CASE + 2):
        repair_stuck(store, published.append, after_s=60, window_s=86400, now=later)
    assert len(published) == MAX_REPAIRS_PER_CASE  # then it gives up (and logs repair_given_up)


def test_a_dispatched_case_without_clocks_gets_them(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    result = registrar(store).register(Report.model_validate({**REPORT, "report_id": "rec-3"}))
    case = store.get(result.case_id)
    now = datetime.now(timezone.utc)
    ack_due, handle_due = now + timedelta(hours=1), now + timedelta(hours=4)
    order_id = f"{case.case_id}/1/lighting"
    case.assignments = [
        Assignment(
            dept="lighting",
            street=case.street,
            level=4,
            route="lights",
            order_id=order_id,
            dispatched_at=now,
            ack_due=ack_due,
            handle_due=handle_due,
        )
    ]
    case.status = CaseStatus.dispatched
    store.save(case, case.version, [])

    published: list[Envelope] = []
    deadlines = Deadlines(redis_client, load_policies(), load_calendar(), published.append)
    apply = deadlines.handle
    later = time.time() + 120
    assert repair_missing(redis_client, deadlines.store, apply, after_s=60, window_s=86400) == []  # too young
    assert repair_missing(redis_client, deadlines.store, apply, after_s=60, window_s=86400, now=later) == [case.case_id]
    clocks = deadlines.store.load(case.case_id)
    assert clocks is not None and order_id in clocks.orders
    dues = sorted(c.due for c in clocks.clocks.values() if c.order_id == order_id and c.due is not None)
    assert dues == [round(ack_due.timestamp(), 3), round(handle_due.timestamp(), 3)] or dues == [
        ack_due.timestamp(),
        handle_due.timestamp(),
    ]
    assert deadlines.timers.pending() >= 2
    # repaired: nothing more to do
    assert repair_missing(redis_client, deadlines.store, apply, after_s=60, window_s=86400, now=later) == []


def test_one_replica_takes_a_turn(redis_client: redis.Redis) -> None:
    assert take_turn(redis_client, "intake", 60) is True
    assert take_turn(redis_client, "intake", 60) is False  # another replica, same period
    assert take_turn(redis_client, "sla", 60) is True
    assert redis_client.pttl(keys.reconcile_lease("intake")) > 50_000
