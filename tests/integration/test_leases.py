"""The one lease mechanism (shared/leases.py) on the real Redis: of replicas claiming
exactly one wins, and once a lease runs out (its holder died) another takes over. The set
shape's races are in its users' tests too (test_timers.py, test_notifier_holds.py, both
through claims.claim_race); here the takeover across two replicas, the give-back, and the
key shape (a reconciler's turn, a delivery's send)."""

from __future__ import annotations

import redis

from services.sla.timers import TimerStore
from shared import redis_keys as keys
from shared.leases import KeyLeases
from tests.conftest import wait_for
from tests.integration.claims import claim_race


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


def test_a_key_lease_has_one_holder_until_it_runs_out_or_is_given_back(redis_url: str, stack_env: dict) -> None:
    one, other = (KeyLeases(redis.Redis.from_url(redis_url, decode_responses=True)) for _ in range(2))
    key = keys.delivery_lease("d-lease-test")
    clients = iter([one, other] * 4)  # eight tries, from two replicas' connections

    def take(leases: KeyLeases) -> list[str]:
        token = leases.take(key, 1.0)
        return [token] if token is not None else []

    got = claim_race(lambda: KeyLeases(next(clients).r), take, replicas=8)
    tokens = [t for one_got in got for t in one_got]
    assert len(tokens) == 1  # exactly one of eight tries won
    assert other.release(key, "not-the-token") is False and other.take(key, 1.0) is None
    late = wait_for(lambda: other.take(key, 10), timeout=5)  # the winner "died": its lease runs out by itself
    assert late is not None
    assert one.release(key, tokens[0]) is False  # an old holder cannot give back the new one's lease
    assert other.release(key, late) is True and one.take(key, 10) is not None
