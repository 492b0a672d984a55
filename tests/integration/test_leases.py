"""The one lease mechanism (shared/leases.py) on the real Redis, through its two users of
the set shape (sla's timers, notifier's digest buckets) and the key shape: of two replicas
claiming exactly one wins, and once a lease runs out (its holder died) another takes over."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import redis

from services.notifier.channels.base import ChannelName
from services.notifier.deliveries import Delivery
from services.notifier.digest import HoldStore
from services.sla.timers import TimerStore
from shared import redis_keys as keys
from shared.leases import KeyLeases


def _race(claimers: list, claim) -> list[list[str]]:
    """Each claimer claims in its own thread, all at once, until nothing is left."""
    got: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def run(i: int) -> None:
        start.wait()
        while batch := claim(claimers[i]):
            got[i] += batch

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_two_replicas_claim_each_timer_exactly_once(redis_url: str, stack_env: dict) -> None:
    stores = [TimerStore(redis.Redis.from_url(redis_url, decode_responses=True)) for _ in range(2)]
    names = [f"450305-20261127-{i:06d}|1/gas/a|w|1" for i in range(2000)]
    pipe = stores[0].r.pipeline()
    TimerStore.arm_in(pipe, [(n, 100.0 + i % 7) for i, n in enumerate(names)])
    pipe.execute()
    a, b = _race(stores, lambda s: [c.timer_id for c in s.claim(now=200.0, lease_s=30, limit=150)])
    assert sorted(a + b) == sorted(names) and not set(a) & set(b)
    assert a and b  # both took part (150 a claim: neither can take all 2,000 at once)
    assert stores[0].leased() == 2000 and stores[0].pending() == 0


def test_a_timer_lease_that_runs_out_lets_another_replica_fire_it(redis_url: str, stack_env: dict) -> None:
    one, other = (TimerStore(redis.Redis.from_url(redis_url, decode_responses=True)) for _ in range(2))
    pipe = one.r.pipeline()
    TimerStore.arm_in(pipe, [("t-dies", 100.0)])
    pipe.execute()
    assert [c.timer_id for c in one.claim(now=101.0, lease_s=10)] == ["t-dies"]  # then `one` dies
    assert other.claim(now=110.0, lease_s=10) == []  # still leased to `one`
    [again] = other.claim(now=111.5, lease_s=10)
    assert again.timer_id == "t-dies" and again.due == 111.5  # back at the moment its lease ran out
    assert other.leased() == 1 and one.claim(now=112.0, lease_s=10) == []


def test_given_back_members_return_at_their_due_time(redis_client: redis.Redis) -> None:
    t = TimerStore(redis_client)
    pipe = redis_client.pipeline()
    TimerStore.arm_in(pipe, [("ahead", 105.0)])
    pipe.execute()
    claimed = t.claim(now=100.0, lease_s=30, until=106.0)  # claimed ahead of its due time
    assert [c.timer_id for c in claimed] == ["ahead"]
    assert t.release(claimed) == 1 and t.leased() == 0
    assert redis_client.zscore(keys.timers_due(), "ahead") == 105.0


def _held(recipient: str) -> Delivery:
    return Delivery(
        delivery_id=f"d-{recipient}",
        event="case_dispatched",
        case_id="450305-20261127-000001",
        correlation_id="r",
        recipient=recipient,
        channel=ChannelName.wecom,
        subject="【派遣】",
        text="t",
        payload={},
        first_attempt_at=datetime(2026, 11, 27, tzinfo=timezone.utc),
    )


def test_two_notifiers_claim_each_digest_bucket_once_and_take_over_a_dead_ones(redis_url: str, stack_env: dict) -> None:
    holds = [HoldStore(redis.Redis.from_url(redis_url, decode_responses=True)) for _ in range(2)]
    for r in range(40):
        holds[0].hold(_held(f"u{r}"), release_at=100.0)
    a, b = _race(holds, lambda h: [c.bucket for c in h.claim(now=100.0, lease_s=30, limit=3)])
    assert len(a) + len(b) == 40 and not set(a) & set(b)
    # the first replica dies before its `done`: its buckets come back once the leases run out,
    # with the same items (the same digest), and the second flushes them
    for bucket in b:
        holds[1].done(bucket, now=101.0)
    assert holds[1].claim(now=129.0, lease_s=30, limit=100) == []
    again = holds[1].claim(now=131.0, lease_s=30, limit=100)
    assert sorted(c.bucket for c in again) == sorted(a) and all(len(c.items) == 1 for c in again)


def test_a_key_lease_has_one_holder_until_it_runs_out_or_is_given_back(redis_url: str, stack_env: dict) -> None:
    one, other = (KeyLeases(redis.Redis.from_url(redis_url, decode_responses=True)) for _ in range(2))
    key = keys.delivery_lease("d-lease-test")
    results: list[str | None] = []
    start = threading.Barrier(8)

    def take(leases: KeyLeases) -> None:
        start.wait()
        results.append(leases.take(key, 0.3))

    threads = [threading.Thread(target=take, args=(one if i % 2 else other,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tokens = [r for r in results if r is not None]
    assert len(tokens) == 1  # exactly one of eight tries won
    assert other.release(key, "not-the-token") is False and other.take(key, 0.3) is None
    deadline = time.monotonic() + 5
    while (late := other.take(key, 10)) is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the winner "died": its lease runs out by itself
    assert late is not None
    assert one.release(key, tokens[0]) is False  # an old holder cannot give back the new one's lease
    assert other.release(key, late) is True and one.take(key, 10) is not None
