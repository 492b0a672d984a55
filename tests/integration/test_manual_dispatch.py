"""Dispatch by hand on the real Redis: who may, from which states, idempotency, the
previous round closed at once, crossed rounds."""

from __future__ import annotations

import pytest
import redis

from services.intake.auth import Forbidden, Principal, Role
from services.intake.cases import apply_event
from services.intake.dispatching import ManualDispatch, apply_manual_dispatch
from services.intake.replies import NotAssigned, apply_reply
from services.intake.store import CaseStore
from services.intake.validation import InvalidInput
from shared.lifecycle import IllegalTransition
from shared.models import (
    Assignment,
    CaseDispatched,
    CaseRedispatch,
    CaseStatus,
    DispatchWithdrawn,
    Reply,
    summary_of,
)
from tests.integration.test_case_store import NOW, register

pytestmark = pytest.mark.integration

DEPTS = {"station", "lighting", "power", "cityman", "sanitation"}
OPS = Principal(Role.ops, None, "ops000000001")
STATION = Principal(Role.station, None, "st0000000001", street="450305001")
OTHER_STATION = Principal(Role.station, None, "st0000000002", street="450305003")


def dispatched(
    store: CaseStore, depts: list[str], level: int = 3, round_no: int = 1, case_id: str | None = None, by: str = ""
) -> str:
    if case_id is None:
        case_id, _ = register(store, f"r-{id(depts)}-{len(store.r.keys('*'))}")
    case = store.get(case_id)
    event = CaseDispatched(
        case_id=case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        round_no=round_no,
        by=by,
        assignments=[
            Assignment(dept=d, street="450305001", level=level, order_id=f"{case_id}/{round_no}/{d}", dispatched_at=NOW)
            for d in depts
        ],
    )
    apply_event(store, event)
    return case_id


def body(**over: object) -> ManualDispatch:
    fields = {"dispatch_id": "d-1", "departments": ["power", "lighting"], "lead": "power", "note": "属供电线路故障"}
    fields.update(over)
    return ManualDispatch.model_validate(fields)


def test_station_redispatches_a_case_of_its_street(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched(store, ["lighting"])
    apply_reply(store, case_id, "lighting", Reply(reply_id="l0", action="acknowledge"))
    apply_reply(store, case_id, "lighting", Reply(reply_id="l00", action="suspend", reason="等配件"))
    case, events, applied = apply_manual_dispatch(store, case_id, body(), STATION, DEPTS)
    assert applied and not any(a.active for a in case.assignments)  # the old round is closed at once
    assert case.suspension_request is None  # the relieved department's request went with it
    request = next(e for e in events if isinstance(e, CaseRedispatch))
    assert (request.reason.value, request.round_no, request.departments, request.lead, request.level) == (
        "manual",
        2,
        ["power", "lighting"],
        "power",
        3,
    )
    assert request.by == STATION.actor and "属供电线路故障" in case.timeline[-1].note
    # the relieved department is told: one withdrawal of its order, derived id, on intake's outbox
    withdrawn = [e for e in events if isinstance(e, DispatchWithdrawn)]
    assert [(w.order_id, w.dept, w.street, w.round_no, w.by) for w in withdrawn] == [
        (f"{case_id}/1/lighting", "lighting", "450305001", 2, STATION.actor)
    ]
    assert withdrawn[0].message_id == f"withdrawn:{case_id}/1/lighting" and "属供电线路故障" in withdrawn[0].note
    with pytest.raises(NotAssigned):  # the relieved department can no longer reply
        apply_reply(store, case_id, "lighting", Reply(reply_id="l1", action="acknowledge"))
    # the same dispatch id again: nothing new
    again, events2, applied2 = apply_manual_dispatch(store, case_id, body(), STATION, DEPTS)
    assert not applied2 and events2 == [] and again.version == case.version
    # router's answer is applied through the state machine as `reassign`
    dispatched(store, ["power", "lighting"], round_no=2, case_id=case_id, by=STATION.actor)
    case = store.get(case_id)
    assert case.status is CaseStatus.dispatched and case.timeline[-1].action == "reassign"
    assert case.timeline[-1].actor == STATION.actor
    assert sorted(a.dept for a in case.assignments if a.active) == ["lighting", "power"]


def test_who_may_dispatch(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched(store, ["lighting"])
    with pytest.raises(Forbidden, match="street 450305003"):
        apply_manual_dispatch(store, case_id, body(), OTHER_STATION, DEPTS)
    with pytest.raises(Forbidden, match="needs ops or station"):
        apply_manual_dispatch(store, case_id, body(), Principal(Role.grid_app, None, "ga0000000001"), DEPTS)
    with pytest.raises(Forbidden, match="level 3 or below"):
        apply_manual_dispatch(store, case_id, body(level=2), STATION, DEPTS)
    with pytest.raises(InvalidInput) as info:
        apply_manual_dispatch(store, case_id, body(departments=["power", "nosuch"], lead=None), OPS, DEPTS)
    assert info.value.errors[0].field == "departments[1]"
    # escalated to the district: the station may not, the district (ops) takes it over
    escalated = dispatched(store, ["lighting"], level=2)
    with pytest.raises(Forbidden, match="escalated to level 2"):
        apply_manual_dispatch(store, escalated, body(), STATION, DEPTS)
    case, _, _ = apply_manual_dispatch(store, escalated, body(level=2), OPS, DEPTS)
    assert "take-over at L2" in case.timeline[-1].note


def test_states_and_hand_up(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    fresh, _ = register(store, "r-fresh")
    with pytest.raises(IllegalTransition):  # not routed yet
        apply_manual_dispatch(store, fresh, body(), OPS, DEPTS)
    case_id = dispatched(store, ["lighting"])
    with pytest.raises(InvalidInput, match="triage"):
        apply_manual_dispatch(store, case_id, body(departments=[], lead=None, hand_up=True), STATION, DEPTS)
    apply_reply(store, case_id, "lighting", Reply(reply_id="r", action="resolve", mode="service"))
    with pytest.raises(IllegalTransition):  # resolved: verify it instead
        apply_manual_dispatch(store, case_id, body(dispatch_id="d-2"), OPS, DEPTS)

    triage = dispatched(store, ["station"])
    case, events, _ = apply_manual_dispatch(
        store, triage, body(departments=[], lead=None, hand_up=True, dispatch_id="up"), STATION, DEPTS
    )
    request = next(e for e in events if isinstance(e, CaseRedispatch))
    assert (request.departments, request.level) == (["station"], 2)
    dispatched(store, ["station"], level=2, round_no=2, case_id=triage, by=STATION.actor)
    with pytest.raises(Forbidden):  # now the district's
        apply_manual_dispatch(store, triage, body(dispatch_id="d-3"), STATION, DEPTS)
    apply_manual_dispatch(store, triage, body(dispatch_id="d-3"), OPS, DEPTS)


def test_rounds_that_cross_keep_the_later_one(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = dispatched(store, ["sanitation"])
    apply_reply(store, case_id, "sanitation", Reply(reply_id="x", action="reject", reason="不归环卫"))
    # the re-route (round 2) is on its way; a commander dispatches by hand meanwhile (round 3)
    _, events, _ = apply_manual_dispatch(store, case_id, body(departments=["cityman"], lead=None), OPS, DEPTS)
    assert next(e for e in events if isinstance(e, CaseRedispatch)).round_no == 3
    assert not [e for e in events if isinstance(e, DispatchWithdrawn)]  # sanitation gave it back itself
    dispatched(store, ["cityman"], round_no=3, case_id=case_id, by=OPS.actor)
    case = store.get(case_id)
    late = CaseDispatched(
        case_id=case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        round_no=2,
        assignments=[
            Assignment(dept="power", street="450305001", level=3, order_id=f"{case_id}/2/power", dispatched_at=NOW)
        ],
    )
    _, events, _ = apply_event(store, late)  # arrives late: superseded, its order withdrawn
    assert [(e.order_id, e.round_no, e.by) for e in events if isinstance(e, DispatchWithdrawn)] == [
        (f"{case_id}/2/power", 3, "router")
    ]
    case = store.get(case_id)
    assert [a.dept for a in case.assignments if a.active] == ["cityman"]
    assert "superseded" in case.timeline[-1].note
