"""Replies on the real Redis: concurrent replies cannot both win, replies are idempotent,
joint dispatch keeps each department's part."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import redis

from services.intake.cases import apply_event
from services.intake.replies import NotAssigned, apply_reply
from services.intake.store import CaseStore
from shared.lifecycle import IllegalTransition
from shared.models import (
    Assignment,
    CaseDispatched,
    CaseStatus,
    Reply,
    summary_of,
)
from tests.integration.test_case_store import NOW, register

T = datetime(2026, 11, 27, 2, tzinfo=timezone.utc)


def dispatched_case(store: CaseStore, depts: list[str]) -> str:
    case_id, _ = register(store, f"r-{'-'.join(depts)}-{id(store)}")
    case = store.get(case_id)
    event = CaseDispatched(
        case_id=case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        assignments=[
            Assignment(dept=d, street="450305001", level=3, order_id=f"{case_id}/1/{d}", dispatched_at=NOW)
            for d in depts
        ],
    )
    apply_event(store, event)
    return case_id


def test_concurrent_rejections_one_wins(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched_case(store, ["lighting"])
    outcomes: list[str] = []

    def reject(i: int) -> None:
        try:
            apply_reply(store, case_id, "lighting", Reply(reply_id=f"x{i}", action="reject", reason=f"no {i}"))
            outcomes.append("won")
        except (IllegalTransition, NotAssigned) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=reject, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1, outcomes
    case = store.get(case_id)
    assert case.status == CaseStatus.rejected
    assert [e.action for e in case.timeline].count("reject") == 1


def test_reply_is_idempotent_by_reply_id(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched_case(store, ["gas"])
    reply = Reply(reply_id="gas-7781", action="acknowledge", note="已派人")
    _, events, applied = apply_reply(store, case_id, "gas", reply)
    _, events2, applied2 = apply_reply(store, case_id, "gas", reply)
    assert applied and events and not applied2 and events2 == []
    assert store.get(case_id).status == CaseStatus.acknowledged


def test_joint_dispatch_resolves_when_the_last_department_does(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched_case(store, ["cityman", "market"])
    apply_reply(store, case_id, "cityman", Reply(reply_id="c1", action="acknowledge"))
    apply_reply(store, case_id, "market", Reply(reply_id="m1", action="acknowledge"))
    case, events, _ = apply_reply(store, case_id, "cityman", Reply(reply_id="c2", action="resolve", mode="enforcement"))
    assert case.status == CaseStatus.acknowledged  # market still working
    assert events[-1].dept == "cityman" and events[-1].order_id.endswith("/cityman")
    case, _, _ = apply_reply(store, case_id, "market", Reply(reply_id="m2", action="resolve", mode="management"))
    assert case.status == CaseStatus.resolved
    assert case.resolution.mode.value == "management"
    assert all(a.resolved_at is not None for a in case.assignments)
