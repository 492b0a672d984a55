"""The case store on the real Redis: idempotent registration, compare-and-set, outbox."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone

import pytest
import redis

from services.intake.store import CaseStore, VersionConflict
from shared.models import Case, CaseRegistered, CaseStatus, CaseUpdated, Location, summary_of

NOW = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)


def make_case(case_id: str, report_id: str) -> Case:
    return Case(
        case_id=case_id,
        report_id=report_id,
        correlation_id=report_id,
        status=CaseStatus.registered,
        version=1,
        category="01037",
        severity="normal",
        description="路灯不亮",
        location=Location(lat=25.27, lon=110.32, grid="450305001001001"),
        grid="450305001001001",
        street="450305001",
        reporter_id="w-1",
        reporter_role="grid_officer",
        observed_at=NOW,
        registered_at=NOW,
        updated_at=NOW,
    )


def new_case_id(store: CaseStore) -> str:
    """A case number as a registration reserves it (lua/reserve.lua), for a report never seen."""
    _, case_id, _ = store.reserve(f"unseen-{uuid.uuid4().hex}", NOW, [], [])
    assert case_id is not None
    return case_id


def register(store: CaseStore, report_id: str) -> tuple[str, bool]:
    case = make_case(new_case_id(store), report_id)
    event = CaseRegistered(case_id=case.case_id, correlation_id=report_id, case=summary_of(case))
    r = store.register(report_id, case, event)
    return r.case_id, r.created


def test_case_ids_are_readable_and_sortable(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    ids = [new_case_id(store) for _ in range(3)]
    assert ids == sorted(ids)
    assert ids[0] == "450305-20261127-000001"


def test_same_report_twice_is_one_case_even_concurrently(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    results: list[tuple[str, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(register(store, "r-same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({case_id for case_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert store.outbox.size() == 2  # the event and the case's record for the archive


def test_compare_and_set_lets_one_writer_win(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id, _ = register(store, "r-cas")
    a, b = store.get(case_id), store.get(case_id)
    a.status = CaseStatus.dispatched
    upd = CaseUpdated(
        case_id=case_id, correlation_id="r-cas", from_status="registered", to_status="dispatched", actor="t"
    )
    store.save(a, a.version, [upd])
    b.status = CaseStatus.cancelled
    with pytest.raises(VersionConflict):
        store.save(b, b.version, [])
    stored = store.get(case_id)
    assert stored.status == CaseStatus.dispatched and stored.version == 2
    pending = {e.message_id: e for e in store.outbox.take(-10)}
    assert upd.message_id in pending
    store.outbox.done([upd.message_id])
    assert upd.message_id not in {e.message_id for e in store.outbox.take(-10)}


def test_open_cases_follow_the_status(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id, _ = register(store, "r-open")
    assert store.open_case_ids() == [case_id]
    case = store.get(case_id)
    case.status = CaseStatus.cancelled
    store.save(case, case.version, [])
    assert store.open_case_ids() == []
