"""The outbox: how an event caused by a stored change is never lost.

The writer stores the change and its events in one atomic write (a Lua script or a
MULTI), then publishes the events (confirmed) and removes them from the outbox. If it
dies in between, the relay publishes them later; consumers are idempotent, so an event
that goes out twice does no harm. intake (cases, API keys) and sla (clock commits) each
have one, with the same layout and the same relay:

- a hash `message id → event JSON` and a sorted set `message id → time`, the time it was
  stored or, since then, last taken for publishing;
- `take(older_than_s)` hands the relay the entries whose time is more than `older_than_s`
  ago and sets their time to now, in one Lua call (shared/lua/outbox_take.lua): of several
  replicas' relays only one gets an entry in a period, and if it dies the entry comes
  up again a period later;
- `hold` sets the time of entries a publisher is about to publish itself (keeps the
  relays off them); `done` removes confirmed ones.

A writer's Lua script gets the two keys from `keys()` and writes the entry itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import redis

from shared import redis_keys
from shared.models import Envelope, parse_event
from shared.scripts import Lua

_TAKE = Lua("shared", "outbox_take")


class Outbox:
    def __init__(self, client: redis.Redis, where: Callable[[], tuple[str, str]]) -> None:
        """`where`: the (hash, sorted set) keys, asked at each call (the key prefix is a setting)."""
        self.r = client
        self.where = where

    def keys(self) -> list[str]:
        """[entries hash, times sorted set], for a script that writes into the outbox."""
        return list(self.where())

    def add_in(self, pipe: Any, events: Iterable[Envelope], now: float | None = None) -> None:
        """Queue the events' entries on `pipe` (a MULTI that stores their cause too)."""
        entries, times = self.where()
        at = time.time() if now is None else now
        for e in events:
            pipe.hset(entries, e.message_id, e.model_dump_json())
            pipe.zadd(times, {e.message_id: at})

    def done(self, message_ids: Iterable[str]) -> None:
        """The broker confirmed these: out of the outbox."""
        ids = list(message_ids)
        if ids:
            entries, times = self.where()
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(entries, *ids)
            pipe.zrem(times, *ids)
            pipe.execute()

    def hold(self, message_ids: Iterable[str], now: float | None = None) -> None:
        """About to publish these: keep the relays off them for a period."""
        at = time.time() if now is None else now
        mapping = {m: at for m in message_ids}
        if mapping:
            self.r.zadd(self.where()[1], mapping, xx=True)

    def take(self, older_than_s: float, limit: int = 200, now: float | None = None) -> list[Envelope]:
        """Events stored (or last taken) more than `older_than_s` ago, oldest first; taken
        for `older_than_s` (another replica's relay does not get them meanwhile). An entry
        whose body is gone is dropped."""
        entries, times = self.where()
        at = time.time() if now is None else now
        bodies = _TAKE.on(self.r)(keys=[times, entries], args=[at - older_than_s, at, limit])
        return [parse_event(json.loads(b)) for b in bodies]

    def size(self) -> int:
        return int(self.r.zcard(self.where()[1]))

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds since the oldest entry was stored or last taken (0 when empty)."""
        oldest = cast(list[tuple[str, float]], self.r.zrange(self.where()[1], 0, 0, withscores=True))
        return max(0.0, (time.time() if now is None else now) - oldest[0][1]) if oldest else 0.0


def intake_outbox(client: redis.Redis, prefix: str | None = None) -> Outbox:
    """intake's: cases' events and records, API keys' records (`prefix`: another stack's)."""
    return Outbox(client, lambda: (redis_keys.outbox(prefix), redis_keys.outbox_times(prefix)))


def sla_outbox(client: redis.Redis) -> Outbox:
    """sla's: what its commits decided (warnings, breaches, escalations, records)."""
    return Outbox(client, lambda: (redis_keys.sla_outbox(), redis_keys.sla_outbox_times()))
