"""sla's clock rules with a controllable clock (no Redis, no sleeping): warning → breach →
escalation through all five grid levels and the city repeats, stop rules, suspend/resume
on working hours across a weekend, reopen, joint dispatch, idempotency."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from services.sla.state import CaseClocks, Effects, Engine, parse_timer
from shared.models import (
    Assignment,
    CaseDispatched,
    CaseEscalated,
    CaseStatus,
    CaseSummary,
    CaseUpdated,
    DeadlineBreached,
    DeadlineWarning,
    EscalationCommander,
    Mode721,
)
from shared.policies import load_policies
from shared.worktime import WorkCalendar

CST = timezone(timedelta(hours=8))
CASE = "450305-20261127-000001"
GRID = "450305001001001"
STREET = "450305001"

SLA = """
defaults:
  ack: 1工作时
  urgent_ack: 15m
  handle: 4工作时
  warn_fraction: 0.8
  ladder: [1工作日, 4工作时, 2工作时, 2工作时]
  repeat: 2
policies:
  ladder_h:
    ack: 10m
    handle: 1h
    warn_fraction: 0.5
    ladder: [40m, 30m, 20m, 10m]
    repeat: 2
  ack_only:
    ack: 10m
    handle: 1h
    ladder: [40m]
    repeat: 0
    escalate_until: acknowledged
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = Path(tmp_path_factory.mktemp("sla")) / "sla.yaml"
    path.write_text(SLA, encoding="utf-8")

    def commanders(cell: str, level: int) -> list[EscalationCommander]:
        return [EscalationCommander(name=f"L{level}-chief", role=f"level {level}", phone="0773-000000")]

    return Engine(load_policies(path), WorkCalendar(), commanders, lambda d, s: (f"{d}-liaison", "138"))


class Sim:
    """The Redis side in memory: pending timers, and firing them in due order."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        self.case: CaseClocks | None = None
        self.timers: dict[str, float] = {}
        self.events: list[Any] = []
        self.ledger: list[dict[str, Any]] = []
        self.ended: dict[str, float] = {}
        self.counts: dict[tuple[str, str, str, str], int] = {}

    def apply(self, fx: Effects) -> None:
        for name in fx.cancel:
            self.timers.pop(name, None)
        for name, due in fx.arm:
            self.timers[name] = due
        self.events += fx.events
        self.ledger += fx.ledger
        for lid, at in fx.ledger_end:
            self.ended.setdefault(lid, at)
        for period, scope, key, counter, n in fx.counts:
            k = (period, scope, key, counter)
            self.counts[k] = self.counts.get(k, 0) + n

    def dispatch(
        self,
        at: datetime,
        level: int = 5,
        policy: str = "default",
        round_no: int = 1,
        depts: tuple[str, ...] = ("sanitation",),
        dues: tuple[datetime, datetime] | None = None,
    ) -> None:
        ack_due, handle_due = dues or (None, None)
        assignments = [
            Assignment(
                dept=d,
                street=STREET,
                level=level,
                sla_policy=policy,
                mode=Mode721.service,
                order_id=f"{CASE}/{round_no}/{d}",
                dispatched_at=at,
                ack_due=ack_due,
                handle_due=handle_due,
            )
            for d in depts
        ]
        ev = CaseDispatched(
            message_id=f"dispatched:{CASE}:{round_no}",
            case_id=CASE,
            correlation_id="r-1",
            occurred_at=at,
            assignments=assignments,
            round_no=round_no,
            case=CaseSummary(category="06010", severity="normal", grid=GRID, street=STREET, registered_at=at),
        )
        self.case, fx = self.e.dispatched(self.case, ev, at.timestamp())
        self.apply(fx)

    def update(
        self,
        at: datetime,
        frm: str,
        to: str,
        action: str = "",
        dept: str | None = None,
        round_no: int = 1,
        mode: str | None = None,
        mid: str | None = None,
    ) -> None:
        ev = CaseUpdated(
            case_id=CASE,
            correlation_id="r-1",
            occurred_at=at,
            from_status=CaseStatus(frm),
            to_status=CaseStatus(to),
            action=action,
            actor="t",
            dept=dept,
            order_id=f"{CASE}/{round_no}/{dept}" if dept else None,
            mode=Mode721(mode) if mode else None,
            **({"message_id": mid} if mid else {}),
        )
        assert self.case is not None
        self.apply(self.e.updated(self.case, ev, at.timestamp()))

    def run_until(self, until: datetime) -> None:
        while self.timers:
            name, due = min(self.timers.items(), key=lambda kv: kv[1])
            if due > until.timestamp():
                return
            del self.timers[name]
            self.apply(self.e.fire(self.case, name, due + 0.05))  # fired 50 ms late

    def kinds(self) -> list[tuple[str, int, int]]:
        out = []
        for ev in self.events:
            if isinstance(ev, CaseEscalated):
                out.append(("escalated", ev.from_level, ev.to_level))
            elif isinstance(ev, DeadlineBreached):
                out.append((f"breach:{ev.deadline.value}", ev.level, ev.step))
            elif isinstance(ev, DeadlineWarning):
                out.append((f"warn:{ev.deadline.value}", ev.level, ev.step))
        return out


def test_escalation_through_all_five_levels_then_city_repeats(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST)  # a Saturday night: continuous clocks run
    sim.dispatch(t0, level=5, policy="ladder_h")
    sim.run_until(t0 + timedelta(days=1))
    assert sim.kinds() == [
        ("warn:acknowledge", 5, 0),
        ("breach:acknowledge", 5, 0),  # 签收 missed at 10 min
        ("escalated", 5, 4),  # → community head, 40 min
        ("warn:handle", 5, 0),
        ("warn:handle", 4, 1),
        ("breach:handle", 4, 1),
        ("escalated", 4, 3),  # → street chief, 30 min
        ("breach:handle", 5, 0),  # recorded, chain already running
        ("warn:handle", 3, 2),
        ("breach:handle", 3, 2),
        ("escalated", 3, 2),  # → district, 20 min
        ("warn:handle", 2, 3),
        ("breach:handle", 2, 3),
        ("escalated", 2, 1),  # → city, 10 min
        ("warn:handle", 1, 4),
        ("breach:handle", 1, 4),
        ("escalated", 1, 1),  # city repeat 1
        ("warn:handle", 1, 5),
        ("breach:handle", 1, 5),
        ("escalated", 1, 1),  # city repeat 2
        ("warn:handle", 1, 6),
        ("breach:handle", 1, 6),  # then it stops
    ]
    esc = [e for e in sim.events if isinstance(e, CaseEscalated)]
    assert [e.step for e in esc] == [1, 2, 3, 4, 5, 6]
    assert esc[0].commanders[0].name == "L4-chief" and esc[3].commanders[0].name == "L1-chief"
    # fresh limits from the ladder, each counted from the breach that triggered it
    breach_ack = next(e for e in sim.events if isinstance(e, DeadlineBreached))
    assert esc[0].new_due == breach_ack.occurred_at + timedelta(minutes=40)
    assert esc[1].new_due - esc[1].occurred_at == timedelta(minutes=30)
    assert esc[2].new_due - esc[2].occurred_at == timedelta(minutes=20)
    assert esc[3].new_due - esc[3].occurred_at == timedelta(minutes=10)
    assert sim.timers == {}
    assert sim.case is not None and "exhausted" in sim.case.orders[f"{CASE}/1/sanitation"].esc_done
    # ledger: 8 breaches (ack, handle, 6 escalation limits), liaison and levels recorded
    assert [(e["clock"], e["level"]) for e in sim.ledger] == [
        ("acknowledge", 5),
        ("escalation", 4),
        ("handle", 5),
        ("escalation", 3),
        ("escalation", 2),
        ("escalation", 1),
        ("escalation", 1),
        ("escalation", 1),
    ]
    assert {e["liaison"] for e in sim.ledger} == {"sanitation-liaison"}
    assert sim.counts[("2026-11", "dept", "sanitation", "escalations")] == 6


def test_resolution_stops_escalation_and_ends_ledger_entries(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST)
    sim.dispatch(t0, level=3, policy="ladder_h")
    sim.run_until(t0 + timedelta(minutes=15))  # ack breached → L2
    assert sim.kinds()[-1] == ("escalated", 3, 2)
    sim.update(t0 + timedelta(minutes=20), "dispatched", "acknowledged", "acknowledge", "sanitation")
    sim.run_until(t0 + timedelta(minutes=29))
    assert ("escalated", 2, 1) not in sim.kinds()  # L2 limit 20 min not yet over
    sim.update(t0 + timedelta(minutes=30), "acknowledged", "resolved", "resolve", "sanitation", mode="service")
    assert sim.timers == {}
    sim.run_until(t0 + timedelta(days=1))
    assert [k for k in sim.kinds() if k[0] == "escalated"] == [("escalated", 3, 2)]
    ack_entry = sim.ledger[0]
    assert sim.ended[ack_entry["id"]] == (t0 + timedelta(minutes=20)).timestamp()
    assert sim.counts[("2026-11", "dept", "sanitation", "resolved")] == 1
    assert ("2026-11", "dept", "sanitation", "resolved_on_time") in sim.counts  # the handle clock held


def test_escalate_until_acknowledged(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST)
    sim.dispatch(t0, level=4, policy="ack_only")
    sim.run_until(t0 + timedelta(minutes=12))
    assert sim.kinds()[-1] == ("escalated", 4, 3)
    sim.update(t0 + timedelta(minutes=13), "dispatched", "acknowledged", "acknowledge", "sanitation")
    names = {parse_timer(n)[1] for n in sim.timers}
    assert names == {"1/sanitation/h"}  # the escalation clock stopped, handling goes on
    sim.run_until(t0 + timedelta(hours=3))
    assert sim.kinds()[-1] == ("breach:handle", 4, 0)  # recorded, but no new escalation


def test_suspend_pauses_working_hours_over_a_weekend_and_resume_rearms_remainder(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=CST)  # Friday
    sim.dispatch(t0)  # ack 1 wh, handle 4 wh → due Fri 15:30
    sim.update(t0 + timedelta(minutes=30), "dispatched", "acknowledged", "acknowledge", "sanitation")
    handle = sim.case.clocks["1/sanitation/h"]  # type: ignore[union-attr]
    assert handle.due == datetime(2026, 11, 27, 15, 30, tzinfo=CST).timestamp()
    sim.update(datetime(2026, 11, 27, 11, 0, tzinfo=CST), "acknowledged", "suspended", "suspend", "sanitation")
    assert sim.timers == {} and handle.state == "paused" and handle.used == pytest.approx(2.0)
    sim.run_until(datetime(2026, 12, 1, tzinfo=CST))
    assert [k for k in sim.kinds() if k[0].startswith("breach")] == []  # nothing fires while paused
    # resumed Saturday 20:00: the remaining 2 wh run from Monday 08:00 → due 10:00
    sim.update(datetime(2026, 11, 28, 20, 0, tzinfo=CST), "suspended", "in_progress", "progress", "sanitation")
    assert handle.due == datetime(2026, 11, 30, 10, 0, tzinfo=CST).timestamp()
    # the warning point (80 % of 4 wh = 3.2 wh) lies 1.2 wh into the remainder
    assert handle.warn_at == datetime(2026, 11, 30, 9, 12, tzinfo=CST).timestamp()
    sim.run_until(datetime(2026, 12, 1, tzinfo=CST))
    assert [k for k in sim.kinds() if k[0] != "escalated"][-2:] == [("warn:handle", 5, 0), ("breach:handle", 5, 0)]
    assert sim.kinds()[-1] == ("escalated", 5, 4)


def test_clocks_run_to_the_due_times_on_the_order(engine: Engine) -> None:
    # the router stamped the order (what the department was told): sla does not recompute
    # them, even where its own calendar would give another time (e.g. a policy reloaded since)
    sim = Sim(engine)
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=CST)  # Friday: by the calendar ack → 10:00, handle → 15:30
    ack_due, handle_due = t0 + timedelta(minutes=45), t0 + timedelta(hours=5)
    sim.dispatch(t0, dues=(ack_due, handle_due))
    ack, handle = sim.case.clocks["1/sanitation/a"], sim.case.clocks["1/sanitation/h"]  # type: ignore[union-attr]
    assert (ack.due, handle.due) == (ack_due.timestamp(), handle_due.timestamp())
    sim.run_until(t0 + timedelta(hours=6))
    breached = {e.deadline.value: e.occurred_at for e in sim.events if isinstance(e, DeadlineBreached)}
    assert abs(breached["acknowledge"] - ack_due) < timedelta(seconds=1)
    assert abs(breached["handle"] - handle_due) < timedelta(seconds=1)
    # a suspension resumes on the policy's limit: what is left of it, on the calendar
    sim2 = Sim(engine)
    sim2.dispatch(t0, dues=(ack_due, handle_due))
    sim2.update(t0 + timedelta(minutes=30), "dispatched", "acknowledged", "acknowledge", "sanitation")
    sim2.update(datetime(2026, 11, 27, 11, 0, tzinfo=CST), "acknowledged", "suspended", "suspend", "sanitation")
    sim2.update(datetime(2026, 11, 28, 20, 0, tzinfo=CST), "suspended", "in_progress", "progress", "sanitation")
    resumed = sim2.case.clocks["1/sanitation/h"]  # type: ignore[union-attr]
    assert resumed.due == datetime(2026, 11, 30, 10, 0, tzinfo=CST).timestamp()


def test_reopen_starts_a_new_handling_clock_and_counts_rework(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=CST)
    sim.dispatch(t0)
    sim.update(t0 + timedelta(minutes=10), "dispatched", "resolved", "resolve", "sanitation", mode="service")
    assert sim.timers == {}
    sim.update(t0 + timedelta(minutes=20), "resolved", "reopened", "verify_fail")
    sim.dispatch(t0 + timedelta(minutes=21), round_no=2)
    names = sorted(parse_timer(n)[1] for n in sim.timers)
    assert names == ["2/sanitation/a", "2/sanitation/h"]
    assert sim.case.clocks["2/sanitation/h"].due == datetime(2026, 11, 27, 15, 51, tzinfo=CST).timestamp()  # type: ignore[union-attr]
    assert sim.counts[("2026-11", "dept", "sanitation", "rework")] == 1
    assert sim.counts[("2026-11", "street", STREET, "rework")] == 1
    assert sim.counts[("2026-11", "dept", "sanitation", "registered")] == 1  # the same department, once


def test_stop_states_and_idempotency(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=CST)
    sim.dispatch(t0, depts=("sanitation", "cityman"))
    assert len(sim.timers) == 4
    sim.dispatch(t0)  # the same event again (same message id): nothing changes
    assert len(sim.timers) == 4
    sim.update(t0 + timedelta(minutes=5), "dispatched", "acknowledged", "acknowledge", "cityman", mid="m1")
    sim.update(t0 + timedelta(minutes=5), "dispatched", "acknowledged", "acknowledge", "cityman", mid="m1")
    assert sorted(parse_timer(n)[1] for n in sim.timers) == ["1/cityman/h", "1/sanitation/a", "1/sanitation/h"]
    sim.update(t0 + timedelta(minutes=6), "acknowledged", "cancelled", "cancel")
    assert sim.timers == {}
    assert all(c.state == "stopped" for c in sim.case.clocks.values())  # type: ignore[union-attr]


def test_stale_timer_is_dropped(engine: Engine) -> None:
    sim = Sim(engine)
    t0 = datetime(2026, 11, 27, 9, 0, tzinfo=CST)
    sim.dispatch(t0)
    old = dict(sim.timers)
    sim.update(t0 + timedelta(minutes=5), "dispatched", "acknowledged", "acknowledge", "sanitation")
    for name in old:  # claimed before the acknowledgement, fired after: fenced off
        assert engine.fire(sim.case, name, t0.timestamp() + 99999).stale or "/h|" in name


def test_document_round_trip(engine: Engine) -> None:
    sim = Sim(engine)
    sim.dispatch(datetime(2026, 11, 27, 9, 0, tzinfo=CST), level=5, policy="ladder_h")
    assert sim.case is not None
    again = CaseClocks.from_dict(sim.case.to_dict())
    assert again == sim.case
    assert engine.timers(again) == engine.timers(sim.case)


def test_compact_document_round_trip_through_a_whole_escalation(engine: Engine) -> None:
    """The firing document (services/sla/codec.py) gives back exactly the clocks, orders
    and case; the history (applied ids, log) round-trips apart."""
    from services.sla.codec import pack_doc, pack_history, unpack_doc, unpack_history

    sim = Sim(engine)
    t0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST)
    sim.dispatch(t0, level=5, policy="ladder_h", depts=("sanitation", "cityman"))
    assert sim.case is not None
    fresh = pack_doc(sim.case)
    assert len(fresh) < 200 and CASE.encode() not in fresh
    sim.run_until(t0 + timedelta(hours=3))
    sim.update(t0 + timedelta(hours=3), "dispatched", "suspended", "suspend", "cityman")
    for case in (sim.case,):
        again = unpack_doc(CASE, pack_doc(case))
        unpack_history(again, pack_history(case))
        assert again == case
        assert engine.timers(again) == engine.timers(case)


class DecidedSim(Sim):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.decided: list[tuple[str, str, str]] = []

    def apply(self, fx: Effects) -> None:
        super().apply(fx)
        self.decided += fx.decided


def test_each_own_deadline_is_decided_once_escalation_steps_are_not(engine: Engine) -> None:
    """The breach-rate population (gridbus_sla_deadlines_decided_total): one case that climbs
    the whole ladder is two decided deadlines (ack and handle missed), not eight breaches."""
    sim = DecidedSim(engine)
    t0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST)
    sim.dispatch(t0, level=5, policy="ladder_h")
    sim.run_until(t0 + timedelta(days=1))
    assert len([e for e in sim.events if isinstance(e, DeadlineBreached)]) == 8
    assert sorted(sim.decided) == [("sanitation", "acknowledge", "breached"), ("sanitation", "handle", "breached")]

    met = DecidedSim(engine)
    met.dispatch(t0, level=5, policy="ladder_h")
    met.update(t0 + timedelta(minutes=2), "dispatched", "acknowledged", "acknowledge", "sanitation")
    met.update(t0 + timedelta(minutes=20), "acknowledged", "resolved", "resolve", "sanitation", mode="service")
    met.update(
        t0 + timedelta(minutes=21), "acknowledged", "resolved", "resolve", "sanitation", mode="service", mid="again"
    )  # a second resolve decides nothing more
    assert sorted(met.decided) == [("sanitation", "acknowledge", "met"), ("sanitation", "handle", "met")]


def test_the_codec_stores_modes_and_statuses_by_a_stable_index() -> None:
    # documents in Redis keep a mode or status as its index in these tuples, which come
    # from the enums in shared/models.py: a new member goes at the end, never in between
    from services.sla.codec import MODES, STATUSES

    assert MODES[:3] == ("service", "management", "enforcement")
    assert STATUSES[:12] == (
        "reported",
        "registered",
        "dispatched",
        "acknowledged",
        "in_progress",
        "resolved",
        "closed",
        "rejected",
        "reopened",
        "suspended",
        "duplicate",
        "cancelled",
    )


@pytest.mark.parametrize(
    "frm, action",
    [
        ("registered", "dispatch"),
        ("rejected", "dispatch"),  # re-routed after "not ours"
        ("reopened", "dispatch"),
        ("dispatched", "escalate"),  # re-dispatched one level up
        ("acknowledged", "escalate"),
        ("in_progress", "escalate"),
    ],
)
def test_the_case_updated_of_a_router_dispatch_changed_nothing_for_sla(engine: Engine, frm: str, action: str) -> None:
    """intake no longer publishes a case_updated after applying the router's
    case_dispatched (issue 16): sla arms everything from case_dispatched, and the
    case_updated that used to follow it decided nothing — no timer, event, ledger entry
    or count, and the clocks as they were."""
    sim = Sim(engine)
    t0 = datetime(2026, 11, 30, 10, 0, tzinfo=CST)  # a Monday morning
    sim.dispatch(t0, level=5, policy="ladder_h")
    assert sim.timers  # armed by case_dispatched alone
    assert sim.case is not None
    clocks, orders = copy.deepcopy(sim.case.clocks), copy.deepcopy(sim.case.orders)
    before = (dict(sim.timers), list(sim.events), list(sim.ledger), dict(sim.counts))
    fx = engine.updated(
        sim.case,
        CaseUpdated(
            case_id=CASE,
            correlation_id="r-1",
            occurred_at=t0,
            from_status=CaseStatus(frm),
            to_status=CaseStatus.dispatched,
            action=action,
            actor="router",
        ),
        t0.timestamp() + 0.2,
    )
    assert (fx.arm, fx.cancel, fx.events, fx.ledger, fx.ledger_end, fx.counts, fx.decided) == ([],) * 7
    sim.apply(fx)
    assert (dict(sim.timers), list(sim.events), list(sim.ledger), dict(sim.counts)) == before
    assert sim.case.clocks == clocks and sim.case.orders == orders
    assert sim.case.status == CaseStatus.dispatched.value
