"""sla's repair of a case it has no clocks for, from intake's record (pure: the Engine on a
document, a fixed clock): an acknowledged case gets its handling clock and no acknowledge
timer, a suspended one a paused handling clock with the time used before the pause, a
resumed one a clock counting on from the resumption; a repair of a case sla knows by then
is stale (a second replica changes nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.sla.reconcile import CLOCKED_STATES, rearm, repair_of
from services.sla.state import BREACH, PAUSED, RUNNING, STOPPED, Engine, parse_timer
from shared.models import Assignment, Case, CaseStatus, Location, TimelineEntry
from shared.policies import load_policies
from shared.worktime import WorkCalendar

SLA = """
defaults:
  ack: 10m
  urgent_ack: 10m
  handle: 1h
  warn_fraction: 0.5
  ladder: [40m]
  repeat: 0
"""
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
CASE = "450305-20261130-000042"
ORDER = f"{CASE}/1/sanitation"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = Path(tmp_path_factory.mktemp("sla")) / "sla.yaml"
    path.write_text(SLA, encoding="utf-8")
    return Engine(load_policies(path), WorkCalendar())


def case(status: CaseStatus, acked_min: float | None = None, timeline: list[TimelineEntry] | None = None) -> Case:
    """intake's record of a case dispatched at T0 to sanitation (ack 10 min, handle 1 h)."""
    return Case(
        case_id=CASE,
        report_id="r-42",
        correlation_id="r-42",
        status=status,
        category="06010",
        severity="normal",
        description="垃圾满溢",
        location=Location(lat=25.28, lon=110.31),
        grid="450305001001001",
        street="450305001",
        reporter_id="w-1",
        reporter_role="grid_officer",
        observed_at=T0,
        registered_at=T0,
        updated_at=T0,
        assignments=[
            Assignment(
                dept="sanitation",
                street="450305001",
                level=5,
                order_id=ORDER,
                dispatched_at=T0,
                ack_due=T0 + timedelta(minutes=10),
                handle_due=T0 + timedelta(hours=1),
                acknowledged_at=T0 + timedelta(minutes=acked_min) if acked_min is not None else None,
            )
        ],
        timeline=timeline or [],
    )


def at(minutes: float) -> float:
    return (T0 + timedelta(minutes=minutes)).timestamp()


def entry(minutes: float, action: str, frm: CaseStatus, to: CaseStatus) -> TimelineEntry:
    return TimelineEntry(at=T0 + timedelta(minutes=minutes), actor="x", action=action, from_status=frm, to_status=to)


def test_the_states_with_clocks() -> None:
    assert CLOCKED_STATES == {
        CaseStatus.dispatched,
        CaseStatus.acknowledged,
        CaseStatus.in_progress,
        CaseStatus.suspended,
    }


def test_a_dispatched_case_gets_both_clocks_with_the_due_times_it_was_given(engine: Engine) -> None:
    doc, fx = rearm(engine, None, repair_of(case(CaseStatus.dispatched)), now=at(3))
    assert doc is not None and not fx.stale and doc.status == "dispatched"
    clocks = {c.kind: c for c in doc.clocks.values()}
    assert {k: c.state for k, c in clocks.items()} == {"acknowledge": RUNNING, "handle": RUNNING}
    assert clocks["acknowledge"].due == at(10) and clocks["handle"].due == at(60)
    assert len(fx.arm) == 2


def test_an_acknowledged_case_gets_its_handling_clock_and_no_acknowledge_timer(engine: Engine) -> None:
    repair = repair_of(case(CaseStatus.acknowledged, acked_min=4))
    assert [e.action for _, e in repair.since] == ["acknowledge"]
    doc, fx = rearm(engine, None, repair, now=at(30))
    assert doc is not None and doc.status == "acknowledged"
    clocks = {c.kind: c for c in doc.clocks.values()}
    assert clocks["acknowledge"].state == STOPPED and clocks["acknowledge"].ended == at(4)
    assert clocks["handle"].state == RUNNING and clocks["handle"].due == at(60)
    assert doc.orders[ORDER].acked == at(4)
    # only the handling clock's timer is armed (its warning at 30 min, half of 1 h)
    assert [parse_timer(name)[1] for name, _ in fx.arm] == [clocks["handle"].id]
    assert fx.decided == [("sanitation", "acknowledge", "met")]


def test_an_acknowledged_case_whose_handling_deadline_passed_breaches_at_once(engine: Engine) -> None:
    doc, fx = rearm(engine, None, repair_of(case(CaseStatus.in_progress, acked_min=4)), now=at(90))
    assert doc is not None
    [(name, due)] = fx.arm
    assert due <= at(90) and parse_timer(name)[2] in ("w", BREACH)  # due already: the next tick fires it


def test_a_suspended_case_gets_a_paused_clock_with_the_time_used_before_the_pause(engine: Engine) -> None:
    timeline = [
        entry(0, "dispatch", CaseStatus.registered, CaseStatus.dispatched),
        entry(4, "acknowledge", CaseStatus.dispatched, CaseStatus.acknowledged),
        entry(20, "suspend", CaseStatus.acknowledged, CaseStatus.suspended),
    ]
    doc, fx = rearm(engine, None, repair_of(case(CaseStatus.suspended, acked_min=4, timeline=timeline)), now=at(50))
    assert doc is not None and doc.status == "suspended"
    handle = next(c for c in doc.clocks.values() if c.kind == "handle")
    assert handle.state == PAUSED and handle.used == pytest.approx(20 / 60)
    assert fx.arm == []  # a paused clock has no timer


def test_a_resumed_case_counts_on_from_the_resumption(engine: Engine) -> None:
    timeline = [
        entry(4, "acknowledge", CaseStatus.dispatched, CaseStatus.acknowledged),
        entry(20, "suspend", CaseStatus.acknowledged, CaseStatus.suspended),
        entry(40, "resume", CaseStatus.suspended, CaseStatus.in_progress),
    ]
    doc, fx = rearm(engine, None, repair_of(case(CaseStatus.in_progress, acked_min=4, timeline=timeline)), now=at(45))
    assert doc is not None and doc.status == "in_progress"
    handle = next(c for c in doc.clocks.values() if c.kind == "handle")
    assert handle.state == RUNNING and handle.start == at(40)
    assert handle.due == pytest.approx(at(80))  # 20 min used before the pause, 40 left from 40 min
    assert [parse_timer(name)[1] for name, _ in fx.arm] == [handle.id]


def test_a_case_sla_knows_by_then_is_not_repaired_again(engine: Engine) -> None:
    repair = repair_of(case(CaseStatus.acknowledged, acked_min=4))
    doc, _ = rearm(engine, None, repair, now=at(30))
    again_doc, again = rearm(engine, doc, repair, now=at(31))
    assert again.stale and again.arm == [] and again.counts == [] and again.decided == []


def test_an_acknowledgement_after_its_deadline_counts_as_breached(engine: Engine) -> None:
    """Acknowledged at 25 min, 15 min after the 10 min deadline: the missed acknowledge
    deadline is decided `breached` (no ledger entry or escalation is invented afterwards)."""
    doc, fx = rearm(engine, None, repair_of(case(CaseStatus.acknowledged, acked_min=25)), now=at(30))
    assert doc is not None
    assert fx.decided == [("sanitation", "acknowledge", "breached")]
    assert fx.ledger == [] and fx.events == []
