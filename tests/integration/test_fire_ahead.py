"""sla's fire-ahead on the real Redis with a controllable clock (services/sla/deadlines.py):
timers falling due within `ahead` seconds are claimed and decided before their due time
and committed at it — the same events as when they are claimed at their due time, stamped
with it; nothing is committed early; a case that changes in between is decided again; a
replica that dies holding them, or stops, loses nothing and fires nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from services.sla.deadlines import Deadlines
from shared import redis_keys as keys
from shared.models import CaseStatus, CaseUpdated, DeadlineBreached, DeadlineWarning, Envelope
from tests.integration.test_sla_store import SLA, T0, dispatched, make

pytestmark = pytest.mark.integration


@pytest.fixture()
def policies_path(tmp_path: Path) -> Path:
    p = tmp_path / "sla.yaml"
    p.write_text(SLA, encoding="utf-8")
    return p


def run(d: Deadlines, start: float, end: float, step: float, ahead: float) -> None:
    """Tick every `step` s; like the service (which sleeps until a batch decided ahead
    falls due, `wait`), the clock stops at each such due time too."""
    t = start
    while t <= end:
        d.fire_due(now=t, ahead=ahead)
        t = min([t + step] + [b.not_before for b in d.ready if b.not_before > t])


def acknowledge(d: Deadlines, case_id: str, at: float) -> None:
    d.handle(
        CaseUpdated(
            case_id=case_id,
            correlation_id="r",
            actor="x",
            dept="sanitation",
            order_id=f"{case_id}/1/sanitation",
            from_status=CaseStatus.dispatched,
            to_status=CaseStatus.acknowledged,
            action="acknowledge",
        ),
        now=at,
    )


def shape(events: list[Envelope], case_id: str) -> list[tuple[str, str]]:
    return [(e.event, e.message_id.replace(case_id, "X")) for e in events]


def test_fired_ahead_the_same_events_as_when_due_stamped_with_the_due_time(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    when_due: list[Envelope] = []
    d = make(redis_client, policies_path, when_due)
    d.handle(dispatched("W1", T0), now=T0)
    run(d, T0, T0 + 4 * 3600, step=45, ahead=0.0)
    ahead: list[Envelope] = []
    d = make(redis_client, policies_path, ahead)
    d.handle(dispatched("A1", T0), now=T0)
    run(d, T0, T0 + 4 * 3600, step=45, ahead=60.0)
    assert len(when_due) > 10  # warnings, breaches and escalations through the five levels
    # the same events (the order across clocks may differ: an escalation's limit starts at
    # the breach's due time here, at the tick after it there)
    assert sorted(shape(ahead, "A1")) == sorted(shape(when_due, "W1"))
    breaches = [e for e in ahead if isinstance(e, DeadlineBreached)]
    assert breaches and all(e.occurred_at == e.due_at and e.late_seconds == 0 for e in breaches)
    late = [e for e in when_due if isinstance(e, DeadlineBreached)]
    assert all(e.occurred_at >= e.due_at for e in late) and any(e.late_seconds > 0 for e in late)
    assert d.timers.pending() == 0 and d.timers.leased() == 0 and not d.ready


def test_nothing_is_committed_before_the_due_time(redis_client: redis.Redis, policies_path: Path) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    d.handle(dispatched("E1", T0), now=T0)
    outbox = d.store.outbox.size()
    d.fire_due(now=T0 + 295, ahead=10.0, lease_s=30)  # the ack warning is due at T0 + 300
    assert len(d.ready) == 1 and sink == [] and d.store.outbox.size() == outbox
    [(name, lease_until)] = redis_client.zrange(keys.timers_leased(), 0, -1, withscores=True)
    assert "|w|" in name and lease_until == T0 + 300 + 30  # the lease runs from the due time
    assert d.store.load("E1").clocks["1/sanitation/a"].warned is False  # type: ignore[union-attr]
    d.fire_due(now=T0 + 299.9, ahead=10.0)
    assert sink == [] and len(d.ready) == 1
    d.fire_due(now=T0 + 300, ahead=10.0)
    [warning] = sink
    assert isinstance(warning, DeadlineWarning) and warning.occurred_at.timestamp() == T0 + 300
    assert not d.ready and d.timers.leased() == 0


def test_a_case_that_changes_before_the_due_time_is_decided_again(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    d.handle(dispatched("G1", T0), now=T0)
    d.fire_due(now=T0 + 298, ahead=10.0)  # the ack warning decided ahead
    acknowledge(d, "G1", T0 + 299)  # the department acknowledges a second before it is due
    d.fire_due(now=T0 + 301, ahead=10.0)
    assert sink == []  # decided again at the commit: the ack clock stopped, the warning is stale
    assert d.timers.leased() == 0 and not d.ready
    assert [n.split("|")[1] for n in redis_client.zrange(keys.timers_due(), 0, -1)] == ["1/sanitation/h"]


def test_a_replica_that_dies_holding_timers_decided_ahead_loses_nothing(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    doomed = make(redis_client, policies_path, [])
    doomed.handle(dispatched("K1", T0), now=T0)
    doomed.fire_due(now=T0 + 295, ahead=10.0, lease_s=5)
    assert len(doomed.ready) == 1  # then it dies: nothing committed, the timer leased until T0 + 305
    sink: list[Envelope] = []
    other = make(redis_client, policies_path, sink)
    other.fire_due(now=T0 + 303, ahead=10.0, lease_s=5)
    assert sink == [] and not other.ready
    other.fire_due(now=T0 + 306, ahead=10.0, lease_s=5)  # the lease ran out: fired once, late
    [warning] = sink
    assert isinstance(warning, DeadlineWarning) and warning.occurred_at.timestamp() == T0 + 306
    run(other, T0 + 336, T0 + 400, step=30, ahead=10.0)
    assert len(sink) == 1


def test_a_stopping_replica_gives_back_what_it_decided_ahead(redis_client: redis.Redis, policies_path: Path) -> None:
    stopping = make(redis_client, policies_path, [])
    stopping.handle(dispatched("Q1", T0), now=T0)
    stopping.fire_due(now=T0 + 295, ahead=10.0, lease_s=30)
    assert stopping.timers.leased() == 1
    assert stopping.release_ready() == 1  # the service's stop
    assert stopping.timers.leased() == 0 and stopping.timers.pending() == 2 and not stopping.ready
    sink: list[Envelope] = []
    other = make(redis_client, policies_path, sink)
    other.fire_due(now=T0 + 300)  # at its due time, not after the lease
    assert [e.event for e in sink] == ["deadline_warning"]


def test_a_burst_decided_ahead_in_several_batches_fires_each_timer_once(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    for i in range(300):
        d.handle(dispatched(f"B{i:03d}", T0), now=T0)
    # the 300 ack warnings at T0 + 300, in batches of 70: a case's timers may straddle two
    # batches, whose commits then meet on its document (the second is decided again)
    redis_client.zadd(keys.timers_due(), {n: T0 + 300 for n in redis_client.zrange(keys.timers_due(), 0, -1)})
    d.fire_due(now=T0 + 290, ahead=20.0, limit=70)
    assert len(d.ready) == 9 and sink == []  # 600 timers
    report = d.fire_due(now=T0 + 300, ahead=20.0, limit=70)
    assert len(report.fired) == 600 and not d.ready
    warnings = [e for e in sink if isinstance(e, DeadlineWarning)]
    assert len(warnings) == len({e.message_id for e in warnings}) == 600
    assert {e.occurred_at.timestamp() for e in warnings} == {T0 + 300}
    assert d.timers.leased() == 0


def test_on_the_real_clock_a_tick_waits_for_what_falls_due_within_it(
    redis_client: redis.Redis, policies_path: Path
) -> None:
    import time

    sink: list[Envelope] = []
    d = make(redis_client, policies_path, sink)
    now = time.time()
    d.handle(dispatched("R1", now - 300 + 0.5), now=now)  # its ack warning due in 0.5 s
    report = d.fire_due(ahead=2.0, wait=1.0)
    [warning] = [e for e in sink if isinstance(e, DeadlineWarning)]
    [fired] = [f for f in report.fired if f.effects.events]
    assert fired.committed >= fired.due == warning.occurred_at.timestamp()
    assert time.time() >= fired.due and not d.ready
