"""The reconcilers on the real Redis: a case planted stuck in `registered` gets its one
`case.registered` again, a dispatched case planted without SLA clocks gets them with the
deadlines the department was given, an acknowledged one its handling clock (and no
acknowledge clock), also when two replicas repair it at once; each repaired a bounded
number of times, one replica a turn. And the sla service itself, two replicas as
processes on the real broker and Redis: the case repaired once, counted once in
`gridbus_repairs_total`."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from services.intake.cases import Registrar
from services.intake.duplicates import load_duplicate_policy
from services.intake.reconcile import repair_stuck
from services.intake.store import CaseStore
from services.sla.deadlines import Deadlines
from services.sla.reconcile import Repair, apply_repair, missing_clocks, repair_missing
from shared import redis_keys as keys
from shared.catalog import load_catalog
from shared.grid import load_grid
from shared.models import Assignment, Case, CaseStatus, Envelope, Report
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

    def apply(repair: Repair) -> None:
        apply_repair(deadlines, repair)

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


def plant_acknowledged(store: CaseStore, report_id: str, dispatched_ago_s: float) -> tuple[Case, str]:
    """An acknowledged case in intake's store whose dispatch sla never saw."""
    result = registrar(store).register(Report.model_validate({**REPORT, "report_id": report_id}))
    case = store.get(result.case_id)
    dispatched = datetime.now(timezone.utc) - timedelta(seconds=dispatched_ago_s)
    order_id = f"{case.case_id}/1/lighting"
    case.assignments = [
        Assignment(
            dept="lighting",
            street=case.street,
            level=4,
            route="lights",
            order_id=order_id,
            dispatched_at=dispatched,
            ack_due=dispatched + timedelta(hours=1),
            handle_due=dispatched + timedelta(hours=4),
            acknowledged_at=dispatched + timedelta(seconds=30),
        )
    ]
    case.status = CaseStatus.acknowledged
    store.save(case, case.version, [])
    return store.get(case.case_id), order_id


def assert_handling_clock_only(client: redis.Redis, deadlines: Deadlines, case: Case, order_id: str) -> None:
    clocks = deadlines.store.load(case.case_id)
    assert clocks is not None and order_id in clocks.orders and clocks.status == "acknowledged"
    by_kind = {c.kind: c for c in clocks.clocks.values() if c.order_id == order_id}
    assert by_kind["acknowledge"].state == "stopped" and by_kind["acknowledge"].reason == "acknowledged"
    handle_due = case.assignments[0].handle_due
    assert handle_due is not None
    assert by_kind["handle"].state == "running"
    assert by_kind["handle"].due == pytest.approx(handle_due.timestamp(), abs=0.001)
    # one timer for the case, the handling clock's: no acknowledge deadline left to fire
    timers = [t for t in client.zrange(keys.timers_due(), 0, -1) if t.startswith(case.case_id + "|")]
    assert len(timers) == 1 and f"|{by_kind['handle'].id}|" in timers[0], timers


def test_an_acknowledged_case_without_clocks_gets_its_handling_clock_once_from_two_replicas(
    redis_client: redis.Redis,
) -> None:
    store = CaseStore(redis_client, "450305")
    case, order_id = plant_acknowledged(store, "rec-ack", dispatched_ago_s=600)
    one = Deadlines(redis_client, load_policies(), load_calendar(), lambda e: None)
    two = Deadlines(redis_client, load_policies(), load_calendar(), lambda e: None)
    later = time.time() + 120
    # both replicas find it missing before either repaired it
    seen_by_one = missing_clocks(redis_client, one.store, after_s=60, window_s=86400, now=later)
    seen_by_two = missing_clocks(redis_client, two.store, after_s=60, window_s=86400, now=later)
    assert [r.case_id for r in seen_by_one] == [r.case_id for r in seen_by_two] == [case.case_id]
    assert [e.action for _, e in seen_by_one[0].since] == ["acknowledge"]
    apply_repair(one, seen_by_one[0])
    apply_repair(two, seen_by_two[0])  # too late: sla knows the order, nothing changes
    assert_handling_clock_only(redis_client, one, case, order_id)
    period = one.engine.period(time.time())
    assert redis_client.hget(keys.sla_indicators(period), "dept|lighting|registered") == "1"  # counted once
    assert missing_clocks(redis_client, one.store, after_s=60, window_s=86400, now=later) == []


def test_the_sla_service_repairs_an_acknowledged_case_once_and_counts_it(
    vhost_factory: Any, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sla replicas as processes (`python -m services.serve sla`) on a fresh vhost,
    reconciling every second: the planted case is repaired by one of them, once, and
    `gridbus_repairs_total{service="sla",kind="clocks_rearmed"}` says 1 in all."""
    from shared.config import reset_settings
    from tests.conftest import free_port, wait_for
    from tests.integration.test_resilience import Service, service_env

    vhost = vhost_factory.make("reconcile")
    env = service_env(vhost, redis_url, RECONCILE_SECONDS="1", RECONCILE_AFTER_SECONDS="2", LOG_LEVEL="INFO")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", env["REDIS_KEY_PREFIX"])
    reset_settings()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    replicas: list[Service] = []
    try:
        case, order_id = plant_acknowledged(CaseStore(client, "450305"), "rec-svc", dispatched_ago_s=600)
        for i in range(2):
            replicas.append(Service("sla", {**env, "SLA_METRICS_PORT": str(free_port())}, tmp_path / f"sla-{i}.log"))

        def repairs() -> float:
            return sum(r.metric("gridbus_repairs_total", service="sla", kind="clocks_rearmed") for r in replicas)

        assert wait_for(lambda: all(r.health()[0] == 200 for r in replicas), 60), [r.logs() for r in replicas]
        assert wait_for(lambda: repairs() == 1, 30), [r.logs() for r in replicas]
        time.sleep(3)  # three more turns of the reconciler: nothing left to repair
        assert repairs() == 1, [r.logs() for r in replicas]
        deadlines = Deadlines(client, load_policies(), load_calendar(), lambda e: None)
        assert_handling_clock_only(client, deadlines, case, order_id)
        assert sum(r.count("repair") for r in replicas) == 1
    finally:
        for r in replicas:
            r.stop()
        vhost_factory.drop(vhost)
        stale = list(client.scan_iter(f"{env['REDIS_KEY_PREFIX']}:*", count=1000))
        if stale:
            client.delete(*stale)
        client.close()
        reset_settings()
