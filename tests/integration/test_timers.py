"""Timers on the real Redis: claim is exclusive, leases expire back, the rebuild does
not re-arm what is leased."""

from __future__ import annotations

import redis

from services.sla.timers import TimerStore
from tests.integration.claims import claim_race


def arm(t: TimerStore, timers: dict[str, float]) -> None:
    pipe = t.r.pipeline(transaction=True)
    t.arm_in(pipe, timers.items())
    pipe.execute()


def test_claim_returns_only_due_timers_once(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    arm(t, {"a": 100.0, "b": 200.0})
    got = t.claim(now=150.0, lease_s=30)
    assert [(c.timer_id, c.due) for c in got] == [("a", 100.0)]
    assert t.claim(now=150.0, lease_s=30) == []
    assert (t.pending(), t.leased()) == (1, 1)


def test_expired_lease_is_rearmed_and_done_removes(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    arm(t, {"a": 100.0})
    assert len(t.claim(now=101.0, lease_s=5)) == 1
    # the claimer "died": nothing comes back until the lease runs out, then it does
    assert t.claim(now=104.0, lease_s=5) == []
    assert [c.timer_id for c in t.claim(now=107.0, lease_s=5)] == ["a"]
    pipe = t.r.pipeline(transaction=True)
    t.done_in(pipe, ["a"])
    pipe.execute()
    assert t.claim(now=1000.0, lease_s=5) == [] and t.leased() == 0


def test_rebuild_does_not_rearm_a_leased_timer(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    arm(t, {"a": 100.0})
    t.claim(now=101.0, lease_s=60)
    assert t.arm_if_free([("a", 100.0), ("b", 300.0)]) == 1  # only b
    assert t.pending() == 1 and t.leased() == 1


def test_concurrent_claimers_split_the_timers(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    arm(t, {f"t{i}": float(i) for i in range(500)})
    got = claim_race(
        lambda: TimerStore(redis.Redis(connection_pool=redis_client.connection_pool)),
        lambda store: [c.timer_id for c in store.claim(now=10_000.0, lease_s=60, limit=7)],
    )
    seen = [timer_id for one in got for timer_id in one]
    assert sorted(seen) == sorted(f"t{i}" for i in range(500))
