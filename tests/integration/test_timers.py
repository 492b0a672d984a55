"""Timers on the real Redis: claim is exclusive, leases expire back, tokens fence."""
from __future__ import annotations

import threading

import redis

from services.sla.timers import TimerStore


def test_claim_returns_only_due_timers_once(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    t.arm("c1", "a", 100.0, {"case_id": "c1", "n": 1})
    t.arm("c1", "b", 200.0, {"case_id": "c1", "n": 2})
    got = t.claim(now=150.0, lease_s=30)
    assert [(c.timer_id, c.due, c.payload["n"]) for c in got] == [("a", 100.0, 1)]
    assert t.claim(now=150.0, lease_s=30) == []


def test_expired_lease_is_rearmed_and_done_removes(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    t.arm("c1", "a", 100.0, {"case_id": "c1"})
    assert len(t.claim(now=101.0, lease_s=5)) == 1
    # the claimer "died": nothing is returned until the lease runs out, then it comes back
    assert t.claim(now=104.0, lease_s=5) == []
    again = t.claim(now=107.0, lease_s=5)
    assert [c.timer_id for c in again] == ["a"]
    t.done("c1", "a")
    assert t.claim(now=1000.0, lease_s=5) == []
    assert t.case_timers("c1") == []


def test_concurrent_claimers_split_the_timers(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    for i in range(500):
        t.arm("c", f"t{i}", float(i), {"case_id": "c"})
    seen: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        store = TimerStore(redis.Redis(connection_pool=redis_client.connection_pool))
        while True:
            got = store.claim(now=10_000.0, lease_s=60, limit=7)
            if not got:
                return
            with lock:
                seen.extend(c.timer_id for c in got)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(seen) == sorted(f"t{i}" for i in range(500))


def test_tokens_fence(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    first = t.next_token("c", "o1", "acknowledge")
    assert t.current_token("c", "o1", "acknowledge") == first
    t.next_token("c", "o1", "acknowledge")
    assert t.current_token("c", "o1", "acknowledge") == first + 1
