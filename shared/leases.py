"""Leases in Redis: of several replicas exactly one does a piece of work, and when that one
dies the work comes back by itself once its lease runs out. Two shapes, one mechanism each:

- `LeaseSet`, for many members claimed in batches (sla's timers, notifier's digest
  buckets): a sorted set of members by due time and one of members leased, by lease
  expiry. Claiming is one Lua function, shared/lua/lease_claim.lua, that every claim
  script includes (`--#include shared:lease_claim`) and calls with what to do with each
  member it takes (a timer answers its due time; a digest bucket moves its held items
  aside and answers them). Leases that ran out go back to due first, so a claimer that
  died loses nothing. Whoever finishes a member removes it from `leased` in the same
  write as its effect (sla's commit, notifier's `done`).
- `KeyLeases`, for one key (a reconciler's turn, a delivery's send): the
  key holds a random token with a TTL (shared/lua/key_lease.lua, which Lua scripts that
  take or give back such a lease include).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from shared.scripts import Lua

_GIVE_BACK = Lua("shared", "lease_give_back")
_RELEASE_KEY = Lua("shared", "lease_release")


@dataclass(frozen=True)
class LeaseSet:
    """`due` and `leased` give the two sorted sets' keys, asked at each call (the key
    prefix is a setting)."""

    due: Callable[[], str]
    leased: Callable[[], str]

    def keys(self) -> list[str]:
        return [self.due(), self.leased()]

    def claim(
        self,
        script: Script,
        now: float,
        lease_s: float,
        limit: int,
        until: float | None = None,
        extra: Sequence[Any] = (),
    ) -> Any:
        """Run a claim script (one that calls lease_claim with KEYS[1], KEYS[2] and its ARGV):
        members due by `until` (default `now`), leased until `lease_s` after their due time
        (after `now` when overdue); `extra` follows the four arguments lease_claim reads.
        Returns the script's answer."""
        until = now if until is None else max(now, until)
        return script(keys=self.keys(), args=[repr(now), repr(until), repr(lease_s), limit, *extra])

    def give_back(self, client: redis.Redis, members: Iterable[tuple[str, float]]) -> int:
        """Members still leased return to due at the given due times; returns how many did."""
        args: list[Any] = []
        for member, due in members:
            args += [repr(due), member]
        if not args:
            return 0
        return int(_GIVE_BACK.on(client)(keys=self.keys(), args=args) or 0)

    def pending(self, client: redis.Redis) -> int:
        return int(client.zcard(self.due()))

    def leased_count(self, client: redis.Redis) -> int:
        return int(client.zcard(self.leased()))


class KeyLeases:
    """Leases on single keys through `client`."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._release = _RELEASE_KEY.on(client)

    def take(self, key: str, seconds: float) -> str | None:
        """The lease on `key` for `seconds` if nobody holds it: its token (for `release`), else None."""
        token = uuid.uuid4().hex
        return token if self.r.set(key, token, nx=True, px=max(1, int(seconds * 1000))) else None

    def release(self, key: str, token: str) -> bool:
        """Give the lease back, if it is still the one `token` took."""
        return bool(self._release(keys=[key], args=[token]))
