"""Held messages on the real Redis: the rate limit ranks arrivals per window, a due
bucket is claimed by exactly one flusher, and a flusher that dies is replaced by one
that builds the very same digest (same items, same digest id)."""

from __future__ import annotations

from datetime import datetime, timezone

import redis

from services.notifier.channels.base import ChannelName
from services.notifier.deliveries import Delivery
from services.notifier.digest import HoldStore, digest_bucket, digest_id
from tests.integration.claims import claim_race


def item(n: int, recipient: str = "liaison:gas:450305003") -> Delivery:
    return Delivery(
        delivery_id=f"d{n:03d}",
        event="case_dispatched",
        case_id=f"450305-20261127-{n:06d}",
        correlation_id="r",
        recipient=recipient,
        channel=ChannelName.wecom,
        subject=f"【派遣】{n}",
        text="t",
        payload={},
        first_attempt_at=datetime(2026, 11, 27, tzinfo=timezone.utc),
    )


def test_rate_rank_counts_each_delivery_once_per_window(redis_client: redis.Redis) -> None:
    holds = HoldStore(redis_client)
    ranks = [holds.rate_rank("b", f"d{i}", now=1000.0, window_s=600)[0] for i in range(4)]
    assert ranks == [1, 2, 3, 4]
    assert holds.rate_rank("b", "d1", now=1100.0, window_s=600) == (2, 1200.0)  # a redelivery keeps its rank
    assert holds.rate_rank("b", "d9", now=1200.0, window_s=600) == (1, 1800.0)  # next window


def test_held_bucket_is_claimed_once_and_not_before_release(redis_client: redis.Redis) -> None:
    holds = HoldStore(redis_client)
    assert holds.hold(item(1), release_at=100.0) and holds.hold(item(2), release_at=90.0)
    assert not holds.hold(item(1), release_at=100.0)  # the same delivery again: held once
    assert holds.claim(now=99.0, lease_s=30) == []  # GT kept the later release time
    [claimed] = holds.claim(now=100.0, lease_s=30)
    assert [d.delivery_id for d in claimed.items] == ["d001", "d002"]
    assert holds.claim(now=101.0, lease_s=30) == []
    assert holds.held_count() == 2
    holds.done(claimed.bucket, now=101.0)
    assert holds.claim(now=1000.0, lease_s=30) == [] and holds.held_count() == 0


def test_dead_flusher_is_replaced_with_the_same_digest(redis_client: redis.Redis) -> None:
    holds = HoldStore(redis_client)
    holds.hold(item(1), 100.0)
    holds.hold(item(2), 100.0)
    [first] = holds.claim(now=100.0, lease_s=30)
    holds.hold(item(3), 100.0)  # arrives while the digest is being built: waits for the next round
    assert holds.claim(now=120.0, lease_s=30) == []
    [again] = holds.claim(now=131.0, lease_s=30)  # the lease ran out
    assert [d.delivery_id for d in again.items] == [d.delivery_id for d in first.items] == ["d001", "d002"]
    assert digest_id(again.bucket, again.items) == digest_id(first.bucket, first.items)
    holds.done(again.bucket, now=132.0)
    [late] = holds.claim(now=132.0, lease_s=30)
    assert [d.delivery_id for d in late.items] == ["d003"]


def test_concurrent_flushers_split_the_buckets(redis_client: redis.Redis) -> None:
    holds = HoldStore(redis_client)
    for n in range(60):
        holds.hold(item(n, recipient=f"liaison:gas:{n}"), 10.0)
    got = claim_race(
        lambda: HoldStore(redis.Redis(connection_pool=redis_client.connection_pool)),
        lambda mine: [c.bucket for c in mine.claim(now=50.0, lease_s=60, limit=3)],
    )
    seen = [bucket for one in got for bucket in one]
    assert sorted(seen) == sorted(digest_bucket(f"liaison:gas:{n}", "wecom") for n in range(60))


def test_a_burst_to_one_liaison_is_held_after_the_limit(redis_client: redis.Redis) -> None:
    from services.notifier.digest import hold_until
    from services.notifier.subscriptions import RateLimit

    holds = HoldStore(redis_client)
    rate = RateLimit(max=2, per_minutes=10)
    now = datetime(2026, 11, 27, 2, 3, tzinfo=timezone.utc)
    decisions = [hold_until(item(n), now, None, rate, holds) for n in range(4)]
    window_end = datetime(2026, 11, 27, 2, 10, tzinfo=timezone.utc).timestamp()
    assert decisions == [None, None, ("rate_limit", window_end), ("rate_limit", window_end)]
    urgent = item(9).model_copy(update={"urgent": True})
    assert hold_until(urgent, now, None, rate, holds) is None  # breaches and escalations are never held
