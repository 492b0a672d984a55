"""Deadline timers in Redis: a sorted set of due times, claimed atomically into a lease set.

- A timer is only a member of the sorted set `due` (score = due time, unix seconds); its
  name says everything needed to fire it (`<case_id>|<clock_id>|<w|b>|<token>`, see
  services/sla/state.py), and the case's clock document in Redis says the rest. No
  payload per timer: about 145 bytes of Redis memory each (bench/bench_timers.py).
- `claim` is one Lua script: it moves due timers into `leased` (score = lease expiry:
  the lease runs from the due time, or from now for a timer already overdue) and returns
  them (as one msgpack value), so of several sla replicas exactly one gets each timer. It
  first moves expired leases back to `due`: a replica that died between claim and commit
  loses nothing, the timer fires once the lease runs out. `until` later than `now` claims
  timers that fall due within that window ahead (services/sla/deadlines.py decides them
  before their due time and commits them at it).
- The claimer commits the firing (clock document, events into sla's outbox, ledger,
  counters) and removes the lease in one Lua compare-and-commit (services/sla/store.py),
  then publishes.
- Fencing: every change to a clock bumps its token, and a timer whose token is not the
  clock's current one is stale and dropped. `arm_if_free` (the start-up rebuild) does
  not re-arm a timer that is currently leased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import msgpack
import redis

from shared import redis_keys as keys
from shared.leases import LeaseSet
from shared.scripts import Lua

_CLAIM = Lua("services.sla", "claim_timers")


_ARM_IF_FREE = Lua("services.sla", "arm_if_free")


def binary_twin(client: redis.Redis) -> redis.Redis:
    """The same Redis, answering bytes (the compact documents are binary)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if not kwargs.get("decode_responses"):
        return client
    kwargs["decode_responses"] = False
    kwargs.pop("connection_pool", None)
    from redis.sentinel import SentinelConnectionPool

    twin: redis.ConnectionPool
    if isinstance(pool, SentinelConnectionPool):
        twin = SentinelConnectionPool(
            pool.service_name,
            pool.sentinel_manager,
            is_master=pool.is_master,
            connection_class=pool.connection_class,
            **kwargs,
        )
    else:
        twin = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=twin)


@dataclass(frozen=True)
class Claimed:
    timer_id: str
    due: float


@dataclass(frozen=True)
class Outlook:
    next_due: float | None  #: the earliest due time not claimed
    next_expiry: float | None  #: the earliest lease to run out (its timer is claimable again then)
    pending: int  #: timers not claimed

    def nothing_by(self, due_by: float, until: float) -> bool:
        """No timer due by `until` and no lease run out by `due_by`: both claims would find nothing."""
        return (self.next_due is None or self.next_due > until) and (
            self.next_expiry is None or self.next_expiry > due_by
        )


class TimerStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.lease = LeaseSet(keys.timers_due, keys.timers_leased)
        self._claim = _CLAIM.on(binary_twin(client))
        self._arm_if_free = _ARM_IF_FREE.on(client)

    # -- the slim path (sla service)

    @staticmethod
    def arm_in(pipe: Any, timers: Iterable[tuple[str, float]]) -> None:
        mapping = {name: due for name, due in timers}
        if mapping:
            pipe.zadd(keys.timers_due(), mapping)

    @staticmethod
    def cancel_in(pipe: Any, names: list[str]) -> None:
        if names:
            pipe.zrem(keys.timers_due(), *names)
            pipe.zrem(keys.timers_leased(), *names)

    @staticmethod
    def done_in(pipe: Any, names: list[str]) -> None:
        if names:
            pipe.zrem(keys.timers_leased(), *names)

    def arm_if_free(self, timers: list[tuple[str, float]]) -> int:
        """Arm timers unless they are leased right now (idempotent: the rebuild)."""
        if not timers:
            return 0
        args: list[Any] = []
        for name, due in timers:
            args += [due, name]
        return int(self._arm_if_free(keys=[keys.timers_due(), keys.timers_leased()], args=args) or 0)

    def claim(self, now: float, lease_s: float, limit: int = 500, until: float | None = None) -> list[Claimed]:
        """Timers due by `until` (default `now`), earliest first, leased to this caller
        until `lease_s` after their due time (after `now` for those overdue)."""
        flat = msgpack.unpackb(self.lease.claim(self._claim, now, lease_s, limit, until), raw=False)
        return [Claimed(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def release(self, claimed: list[Claimed]) -> int:
        """Give claimed timers back (those still leased to nobody else return to `due`)."""
        return self.lease.give_back(self.r, ((c.timer_id, c.due) for c in claimed))

    def pending(self) -> int:
        return self.lease.pending(self.r)

    def outlook(self) -> "Outlook":
        """When the next claim can find anything, and how many wait, in one round trip: an
        idle tick then costs this instead of two claim scripts and a count."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(keys.timers_due(), 0, 0, withscores=True)
        pipe.zrange(keys.timers_leased(), 0, 0, withscores=True)
        pipe.zcard(keys.timers_due())
        first_due, first_expiry, pending = pipe.execute()
        return Outlook(
            float(first_due[0][1]) if first_due else None,
            float(first_expiry[0][1]) if first_expiry else None,
            int(pending),
        )

    def lag(self, now: float) -> float:
        """How far the earliest due timer not yet claimed is behind `now` (0: none overdue)."""
        first = self.r.zrange(keys.timers_due(), 0, 0, withscores=True)
        return max(0.0, now - float(first[0][1])) if first else 0.0

    def leased(self) -> int:
        return self.lease.leased_count(self.r)
