"""sla on the real Redis with a controllable clock: escalation through the five levels,
rebuild from stored state (idempotent, leaves leases alone), a lease that expires fires
once, the outbox keeps events the broker refused, the ledger over HTTP and the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from services.intake.accountability_api import accountability_response
from services.intake.auth import Role, create_key
from services.sla.commands import report, sla
from services.sla.deadlines import Deadlines
from shared import redis_keys as keys
from shared.models import (
    Assignment,
    CaseDispatched,
    CaseEscalated,
    CaseRegistered,
    CaseStatus,
    CaseSummary,
    CaseUpdated,
    ClocksRecorded,
    DeadlineBreached,
    Envelope,
    Mode721,
)
from shared.policies import load_policies
from shared.worktime import WorkCalendar

CST = timezone(timedelta(hours=8))
GRID, STREET = "450305001001001", "450305001"
T0 = datetime(2026, 11, 28, 22, 0, tzinfo=CST).timestamp()  # Saturday night

SLA = """
defaults:
  ack: 1工作时
  urgent_ack: 15m
  handle: 4工作时
  ladder: [1工作日]
  repeat: 1
policies:
  fast:
    ack: 10m
    handle: 1h
    warn_fraction: 0.5
    ladder: [40m, 30m, 20m, 10m]
    repeat: 1
"""


@pytest.fixture()
def policies_path(tmp_path: Path) -> Path:
    p = tmp_path / "sla.yaml"
    p.write_text(SLA, encoding="utf-8")
    return p


def make(client: redis.Redis, path: Path, sink: list[Envelope] | None = None, fail: bool = False) -> Deadlines:
    out = sink if sink is not None else []

    def publish(event: Envelope) -> None:
        if fail:
            raise ConnectionError("broker down")
        if not isinstance(event, ClocksRecorded):  # the archive's copy of each commit (test_archiver.py)
            out.append(event)

    return Deadlines(client, load_policies(path), WorkCalendar(), publish)


def dispatched(
    case_id: str, at: float, level: int = 5, policy: str = "fast", dept: str = "sanitation", round_no: int = 1
) -> CaseDispatched:
    when = datetime.fromtimestamp(at, timezone.utc)
    return CaseDispatched(
        message_id=f"dispatched:{case_id}:{round_no}",
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        occurred_at=when,
        round_no=round_no,
        case=CaseSummary(category="06010", severity="normal", grid=GRID, street=STREET, registered_at=when),
        assignments=[
            Assignment(
                dept=dept,
                street=STREET,
                level=level,
                sla_policy=policy,
                mode=Mode721.service,
                order_id=f"{case_id}/{round_no}/{dept}",
                dispatched_at=when,
            )
        ],
    )


def run(d: Deadlines, start: float, end: float, step: float = 30.0) -> None:
    t = start
    while t <= end:
        d.fire_due(now=t)
        t += step


def test_escalation_through_redis_and_explain(redis_client: redis.Redis, policies_path: Path) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    # a case_registered still bound to sla.events on a broker not yet upgraded: ignored
    # (intake counts the registration, tests/integration/test_case_store.py)
    registered = CaseRegistered(
        case_id="C1", correlation_id="r", occurred_at=datetime.fromtimestamp(T0, CST), case=dispatched("C1", T0).case
    )
    assert d.handle(registered, now=T0) == []
    d.handle(dispatched("C1", T0), now=T0)
    d.handle(dispatched("C1", T0), now=T0)  # redelivered: idempotent
    assert d.timers.pending() == 2
    run(d, T0, T0 + 4 * 3600)
    esc = [e for e in sink if isinstance(e, CaseEscalated)]
    assert [(e.from_level, e.to_level) for e in esc] == [(5, 4), (4, 3), (3, 2), (2, 1), (1, 1)]
    assert all(e.commanders for e in esc), "commanders of each level come from config/grid.yaml"
    breaches = [e for e in sink if isinstance(e, DeadlineBreached)]
    assert len(breaches) == 7 and breaches[0].liaison  # ack, handle, L4, L3, L2, L1, L1 again
    assert d.timers.pending() == 0 and d.timers.leased() == 0
    assert not d.store.is_live("C1") and redis_client.ttl(keys.sla_case("C1")) > 0  # finished: kept, expiring
    # a case_updated for a long-finished case is harmless
    d.handle(
        CaseUpdated(
            case_id="C1",
            correlation_id="r",
            from_status=CaseStatus.dispatched,
            to_status=CaseStatus.acknowledged,
            action="acknowledge",
            actor="x",
            dept="sanitation",
            order_id="C1/1/sanitation",
        ),
        now=T0 + 5 * 3600,
    )
    ind = redis_client.hgetall(keys.sla_indicators("2026-11"))
    assert "street|450305001|registered" not in ind and ind["dept|sanitation|escalations"] == "5"

    result = CliRunner().invoke(sla, ["explain", "C1"])
    assert result.exit_code == 0, result.output
    assert "escalated" in result.output and "to_level=1" in result.output and "escalation_exhausted" in result.output


def test_rebuild_is_idempotent_and_leaves_leases(redis_client: redis.Redis, policies_path: Path) -> None:
    d = make(redis_client, policies_path)
    for i in range(5):
        d.handle(dispatched(f"R{i}", T0), now=T0)
    before = redis_client.zrange(keys.timers_due(), 0, -1, withscores=True)
    assert len(before) == 10
    redis_client.delete(keys.timers_due())  # Redis lost the timers (e.g. restored from an older dump)
    assert d.rebuild() == (5, 10)
    assert redis_client.zrange(keys.timers_due(), 0, -1, withscores=True) == before
    assert d.rebuild() == (5, 0)  # again: nothing new
    claimed = d.timers.claim(T0 + 301, lease_s=60)  # the ack warnings (50 % of 10 min)
    assert len(claimed) == 5
    d.rebuild()
    assert d.timers.pending() == 5 and d.timers.leased() == 5  # leased ones were not re-armed


def test_rebuild_reads_a_bucket_larger_than_one_scan(redis_client: redis.Redis, policies_path: Path) -> None:
    """The buckets are scanned many to a round trip; a bucket whose hash needs several
    HSCAN pages (here 200 cases in one bucket, 50 a page) is read to its end."""
    from services.sla.store import live_shard

    d = make(redis_client, policies_path)
    crowded = [c for c in (f"B{i}" for i in range(400_000)) if live_shard(c) == 7][:200]
    elsewhere = [f"E{i}" for i in range(40)]
    for case_id in crowded + elsewhere:
        d.handle(dispatched(case_id, T0), now=T0)
    before = redis_client.zrange(keys.timers_due(), 0, -1, withscores=True)
    assert len(before) == 2 * 240
    redis_client.delete(keys.timers_due())
    assert d.store.rebuild(per_trip=100, scan_count=50) == (240, 480)
    assert redis_client.zrange(keys.timers_due(), 0, -1, withscores=True) == before


def test_claimer_dies_then_lease_expires_and_fires_once(redis_client: redis.Redis, policies_path: Path) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    d.handle(dispatched("L1", T0), now=T0)
    assert len(d.timers.claim(T0 + 301, lease_s=5)) == 1  # claimed, then the process "died"
    d.fire_due(now=T0 + 303)
    assert sink == []
    d.fire_due(now=T0 + 307)  # lease over: re-armed and fired by the next claim
    d.fire_due(now=T0 + 330)
    assert [e.event for e in sink] == ["deadline_warning"]


def test_outbox_keeps_events_the_broker_refused(redis_client: redis.Redis, policies_path: Path) -> None:
    d = make(redis_client, policies_path, fail=True)
    d.handle(dispatched("O1", T0), now=T0)
    d.fire_due(now=T0 + 301)
    # the warning, and the records of both commits (dispatched, fired) for the archive
    assert d.store.outbox.size() == 3 and d.timers.leased() == 0
    sink: list[Envelope] = []
    ok = make(redis_client, policies_path, sink)
    assert ok.relay(older_than_s=0) == 3
    assert [e.event for e in sink] == ["deadline_warning"] and ok.store.outbox.size() == 0


def test_suspend_resume_and_reopen_through_redis(redis_client: redis.Redis, policies_path: Path) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    d.handle(dispatched("S1", T0), now=T0)
    upd = dict(case_id="S1", correlation_id="r", actor="x", dept="sanitation", order_id="S1/1/sanitation")
    d.handle(
        CaseUpdated(from_status=CaseStatus.dispatched, to_status=CaseStatus.acknowledged, action="acknowledge", **upd),
        now=T0 + 60,
    )
    d.handle(
        CaseUpdated(from_status=CaseStatus.acknowledged, to_status=CaseStatus.suspended, action="suspend", **upd),
        now=T0 + 600,
    )
    assert d.timers.pending() == 0
    run(d, T0, T0 + 86400, step=600)
    assert sink == []
    d.handle(
        CaseUpdated(from_status=CaseStatus.suspended, to_status=CaseStatus.in_progress, action="progress", **upd),
        now=T0 + 86400,
    )
    [(name, due)] = redis_client.zrange(keys.timers_due(), 0, -1, withscores=True)
    assert due == T0 + 86400 + 1200  # 50 % of 1 h, 10 min of it already used
    d.handle(
        CaseUpdated(
            from_status=CaseStatus.in_progress,
            to_status=CaseStatus.resolved,
            action="resolve",
            mode=Mode721.service,
            **upd,
        ),
        now=T0 + 86400 + 60,
    )
    d.handle(
        CaseUpdated(
            case_id="S1",
            correlation_id="r",
            actor="grid",
            from_status=CaseStatus.resolved,
            to_status=CaseStatus.reopened,
            action="verify_fail",
        ),
        now=T0 + 86400 + 120,
    )
    d.handle(dispatched("S1", T0 + 86400 + 180, round_no=2), now=T0 + 86400 + 180)
    assert sorted(n.split("|")[1] for n in redis_client.zrange(keys.timers_due(), 0, -1)) == [
        "2/sanitation/a",
        "2/sanitation/h",
    ]


def test_ledger_over_http_and_cli(redis_client: redis.Redis, policies_path: Path) -> None:
    d = make(redis_client, policies_path)
    for i in range(3):
        d.handle(dispatched(f"A{i}", T0, level=3, dept="gas" if i < 2 else "water"), now=T0)
    run(d, T0, T0 + 700, step=50)  # the ack deadlines pass
    ops, _ = create_key(redis_client, Role.ops)
    dept_key, _ = create_key(redis_client, Role.department, "gas")
    args = {"from": "2026-11-01", "to": "2026-11-30"}
    assert accountability_response(redis_client, args, {}).status_code == 401
    assert accountability_response(redis_client, args, {"Authorization": f"Bearer {dept_key}"}).status_code == 403
    bad = accountability_response(redis_client, {"from": "nope"}, {"Authorization": f"Bearer {ops}"})
    assert bad.status_code == 422
    r = accountability_response(redis_client, args, {"Authorization": f"Bearer {ops}"})
    import json

    body: dict[str, Any] = json.loads(r.get_data())
    assert r.status_code == 200 and body["count"] == 3
    assert {x["dept"]: x["referral"] for x in body["departments"]} == {"gas": True, "water": False}
    assert body["entries"][0]["clock"] == "acknowledge" and body["entries"][0]["level"] == 3
    only = json.loads(
        accountability_response(redis_client, {**args, "dept": "water"}, {"Authorization": f"Bearer {ops}"}).get_data()
    )
    assert only["count"] == 1
    out = CliRunner().invoke(report, ["accountability", "--month", "2026-11"])
    assert out.exit_code == 0 and "gas" in out.output and "YES" in out.output, out.output
    csv = CliRunner().invoke(report, ["accountability", "--month", "2026-11", "--csv"])
    assert csv.exit_code == 0 and csv.output.count("\n") == 4 and "acknowledge" in csv.output
    grades = CliRunner().invoke(report, ["grades", "--month", "2026-11"])
    assert grades.exit_code == 0 and "gas" in grades.output, grades.output


def test_a_case_changed_between_read_and_commit_is_decided_again(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    """The compare-and-commit: a batch read before an acknowledgement landed must not fire
    the acknowledge warning (fenced), and must not undo the acknowledgement."""
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    d.handle(dispatched("W1", T0), now=T0)
    d.handle(dispatched("W2", T0), now=T0)
    claimed = d.timers.claim(T0 + 301, lease_s=60)  # both ack warnings (50 % of 10 min)
    assert len(claimed) == 2
    batch = d.store.fire_read(claimed, T0 + 301)
    d.handle(
        CaseUpdated(
            case_id="W1",
            correlation_id="r",
            actor="x",
            dept="sanitation",
            order_id="W1/1/sanitation",
            from_status=CaseStatus.dispatched,
            to_status=CaseStatus.acknowledged,
            action="acknowledge",
        ),
        now=T0 + 300,
    )
    d.store.fire_decide(batch)
    fired = d.store.fire_commit(batch)
    events = [e for f in fired for e in f.effects.events if not isinstance(e, ClocksRecorded)]
    assert [e.case_id for e in events] == ["W2"]  # W1 was decided again: stale, nothing fired
    records = [e for f in fired for e in f.effects.events if isinstance(e, ClocksRecorded)]
    assert [e.case_id for e in records] == ["W2"]  # the archive's copy of the commit rides along
    w1 = d.store.load("W1")
    assert w1 is not None and w1.status == "acknowledged" and w1.clocks["1/sanitation/a"].state == "stopped"
    assert d.timers.leased() == 0
    assert [n.split("|")[0] for n in redis_client.zrange(keys.timers_due(), 0, -1)].count("W1") == 1  # handle


def test_history_is_kept_apart_and_capped(redis_client: redis.Redis, policies_path: Path) -> None:
    from services.sla.state import LOG_KEPT, SEEN_KEPT, seen_id
    from services.sla.store import live_hash

    d = make(redis_client, policies_path)
    d.handle(dispatched("H1", T0), now=T0)
    upd = dict(case_id="H1", correlation_id="r", actor="x", dept="sanitation", order_id="H1/1/sanitation")
    for i in range(SEEN_KEPT + 20):  # suspend / resume over and over: every one is logged
        frm, to = (
            (CaseStatus.dispatched, CaseStatus.suspended)
            if i % 2 == 0
            else (CaseStatus.suspended, CaseStatus.dispatched)
        )
        d.handle(
            CaseUpdated(
                from_status=frm, to_status=to, action="suspend" if i % 2 == 0 else "progress", message_id=f"m{i}", **upd
            ),
            now=T0 + i,
        )
    case = d.store.load("H1")
    assert case is not None
    assert len(case.seen) == SEEN_KEPT and case.seen[-1] == seen_id(f"m{SEEN_KEPT + 19}")
    assert len(case.log) <= LOG_KEPT and case.log[-1][1] == "status"
    before = len(redis_client.zrange(keys.timers_due(), 0, -1))
    d.handle(
        CaseUpdated(
            from_status=CaseStatus.dispatched,
            to_status=CaseStatus.suspended,
            action="suspend",
            message_id=f"m{SEEN_KEPT + 19}",
            **upd,
        ),
        now=T0 + 999,
    )  # redelivered: ignored
    assert len(redis_client.zrange(keys.timers_due(), 0, -1)) == before
    # the firing document holds none of it
    raw = d.store.b.hget(live_hash("H1"), "H1")
    assert raw is not None and len(raw) < 200


def test_a_tick_that_left_events_to_publish_wakes_the_publisher(redis_client: redis.Redis, policies_path: Path) -> None:
    """sla's publishing loop sleeps until `on_unpublished` wakes it (it polled every 50 ms
    before, issue 16): a tick that commits events calls it, one that commits none does not."""
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    wakes: list[int] = []
    d.on_unpublished = lambda: wakes.append(len(d.unpublished))
    d.handle(dispatched("W1", T0), now=T0)
    d.fire_due(now=T0 + 10, publish=False)  # nothing due yet
    assert wakes == [] and not d.unpublished
    d.fire_due(now=T0 + 301, publish=False)  # the acknowledge warning (10 m × 0.5)
    assert wakes and wakes[-1] == len(d.unpublished) > 0  # woken once the events were there
    assert sink == []  # not published by the tick itself
    assert d.publish_pending() >= 1 and [e.event for e in sink] == ["deadline_warning"]


def test_a_first_dispatch_commits_without_a_read_and_a_redelivered_one_changes_nothing(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    """A round-1 dispatch is committed as if sla had no document yet (no read first): one
    round trip. When one exists after all (the same dispatch redelivered after the case was
    acknowledged, or a round-1 dispatch of a case sla already holds), that commit writes
    nothing and the case is read and decided again: the acknowledgement stays, no clock
    is armed twice."""
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    reads: list[list[str]] = []
    read = d.store.read

    def counting_read(case_ids: list[str], history: bool = True) -> Any:
        reads.append(list(case_ids))
        return read(case_ids, history)

    d.store.read = counting_read  # type: ignore[method-assign]
    d.handle(dispatched("F1", T0), now=T0)
    assert reads == []  # the first dispatch did not read
    first = d.store.load("F1")
    assert first is not None and set(first.clocks) == {"1/sanitation/a", "1/sanitation/h"}
    due_before = sorted(redis_client.zrange(keys.timers_due(), 0, -1))
    ack = CaseUpdated(
        case_id="F1",
        correlation_id="r",
        actor="x",
        dept="sanitation",
        order_id="F1/1/sanitation",
        from_status=CaseStatus.dispatched,
        to_status=CaseStatus.acknowledged,
        action="acknowledge",
    )
    d.handle(ack, now=T0 + 60)
    acked = d.store.load("F1")
    assert acked is not None and acked.clocks["1/sanitation/a"].state == "stopped"
    reads.clear()
    sink.clear()
    assert d.handle(dispatched("F1", T0), now=T0 + 120) == []  # redelivered: nothing new
    assert reads == [["F1"]]  # its blind commit found the document, then it was read
    after = d.store.load("F1")
    assert after is not None and after.rev == acked.rev  # nothing written over the acknowledgement
    assert after.clocks["1/sanitation/a"].state == "stopped"
    due_after = sorted(redis_client.zrange(keys.timers_due(), 0, -1))
    assert len(due_after) == len(due_before) - 1  # the ack clock's timers went with the acknowledgement, none came back
    assert sink == []


def test_an_idle_tick_claims_nothing_and_a_due_or_expired_timer_is_still_claimed(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    """A tick first looks when anything can be claimed (one pipelined read): with nothing
    due within the fire-ahead window and no lease run out, it runs no claim script; a
    timer within the window, and one whose lease ran out, are claimed and fire once."""
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    claims: list[float] = []
    claim = d.timers.claim

    def counting_claim(now: float, lease_s: float, limit: int = 500, until: float | None = None) -> Any:
        claims.append(now)
        return claim(now, lease_s, limit, until)

    d.timers.claim = counting_claim  # type: ignore[method-assign]
    d.handle(dispatched("I1", T0), now=T0)  # ack warning at T0 + 300 (50 % of 10 min)
    report = d.fire_due(now=T0 + 10, ahead=2.0)
    assert claims == [] and report.fired == [] and report.pending == 2
    d.fire_due(now=T0 + 299, ahead=2.0)  # the warning falls due within the window: claimed ahead
    assert claims
    report = d.fire_due(now=T0 + 301, ahead=2.0)  # committed once due
    assert [f.name.split("|")[2] for f in report.fired] == ["w"]
    warned = [e for e in sink if e.event == "deadline_warning"]
    assert len(warned) == 1
    # a replica claimed the ack breach and died: its lease runs out, the next tick takes it
    taken = d.timers.claim(T0 + 600, lease_s=30)
    assert len(taken) == 1
    claims.clear()
    assert d.fire_due(now=T0 + 610, ahead=2.0).fired == []  # leased, not yet run out
    assert claims == []
    report = d.fire_due(now=T0 + 600 + 31, ahead=2.0)
    assert claims and len(report.fired) == 1
    assert len([e for e in sink if e.event == "deadline_breached"]) == 1
