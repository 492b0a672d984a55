"""Deadline timers in Redis: a sorted set of due times, claimed atomically into a lease set.

- A timer is only a member of the sorted set `due` (score = due time, unix seconds); its
  name says everything needed to fire it (`<case_id>|<clock_id>|<w|b>|<token>`, see
  services/sla/state.py), and the case's clock document in Redis says the rest. No
  payload per timer: about 100 bytes of Redis memory each (bench/bench_timers.py).
- `claim` is one Lua script: it moves due timers into `leased` (score = lease expiry)
  and returns them, so of several sla replicas exactly one gets each timer. It first
  moves expired leases back to `due`: a replica that died between claim and commit
  loses nothing, the timer fires once the lease runs out.
- The claimer commits the firing (clock document, events into sla's outbox, ledger,
  counters) and removes the lease in one MULTI (services/sla/store.py), then publishes.
- Fencing: every change to a clock bumps its token, and a timer whose token is not the
  clock's current one is stale and dropped. `arm_if_free` (the start-up rebuild) does
  not re-arm a timer that is currently leased.

`arm(case_id, timer_id, due, payload)` with a payload and `case_timers` remain for the
first cut's callers (payload hash `timer_payloads`); the sla service no longer uses them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import redis

from shared import redis_keys as keys

_CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local out = {}
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], lease, id)
  out[#out + 1] = id
  out[#out + 1] = due[i + 1]
  if ARGV[4] == '1' then
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  else
    out[#out + 1] = ''
  end
end
return out
"""

_ARM_IF_FREE = """
local n = 0
for i = 1, #ARGV, 2 do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i + 1]) then
    n = n + redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
  end
end
return n
"""


@dataclass(frozen=True)
class Claimed:
    timer_id: str
    due: float
    payload: dict[str, Any]


def token_field(order_id: str, deadline: str) -> str:
    return f"{order_id}|{deadline}"


class TimerStore:
    def __init__(self, client: redis.Redis, legacy_payloads: bool = False) -> None:
        self.r = client
        self.legacy_payloads = legacy_payloads
        self._claim = client.register_script(_CLAIM)
        self._arm_if_free = client.register_script(_ARM_IF_FREE)

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

    def arm_if_free(self, timers: list[tuple[str, float]], client: Any = None) -> int:
        """Arm timers unless they are leased right now (idempotent: the rebuild)."""
        if not timers:
            return 0
        args: list[Any] = []
        for name, due in timers:
            args += [due, name]
        return int(self._arm_if_free(keys=[keys.timers_due(), keys.timers_leased()], args=args,
                                     client=client or self.r) or 0)

    def claim(self, now: float, lease_s: float, limit: int = 500) -> list[Claimed]:
        flat = self._claim(keys=[keys.timers_due(), keys.timers_leased(), keys.timer_payloads()],
                           args=[now, lease_s, limit, "1" if self.legacy_payloads else "0"])
        out = []
        for i in range(0, len(flat), 3):
            payload = json.loads(flat[i + 2]) if flat[i + 2] else {}
            out.append(Claimed(flat[i], float(flat[i + 1]), payload))
        return out

    def pending(self) -> int:
        return int(self.r.zcard(keys.timers_due()))

    def leased(self) -> int:
        return int(self.r.zcard(keys.timers_leased()))

    # -- the first cut's API (payload per timer), kept for compatibility

    def next_token(self, case_id: str, order_id: str, deadline: str) -> int:
        return int(self.r.hincrby(keys.sla_tokens(case_id), token_field(order_id, deadline), 1))

    def current_token(self, case_id: str, order_id: str, deadline: str) -> int:
        return int(self.r.hget(keys.sla_tokens(case_id), token_field(order_id, deadline)) or 0)

    def arm(self, case_id: str, timer_id: str, due: float, payload: dict[str, Any]) -> None:
        self.legacy_payloads = True
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.timer_payloads(), timer_id, json.dumps(payload, ensure_ascii=False))
        pipe.zadd(keys.timers_due(), {timer_id: due})
        pipe.sadd(keys.sla_case_timers(case_id), timer_id)
        pipe.execute()

    def cancel(self, case_id: str, timer_ids: list[str]) -> None:
        if not timer_ids:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(keys.timers_due(), *timer_ids)
        pipe.zrem(keys.timers_leased(), *timer_ids)
        pipe.hdel(keys.timer_payloads(), *timer_ids)
        pipe.srem(keys.sla_case_timers(case_id), *timer_ids)
        pipe.execute()

    def case_timers(self, case_id: str) -> list[str]:
        return sorted(self.r.smembers(keys.sla_case_timers(case_id)))

    def done(self, case_id: str, timer_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(keys.timers_leased(), timer_id)
        pipe.hdel(keys.timer_payloads(), timer_id)
        pipe.srem(keys.sla_case_timers(case_id), timer_id)
        pipe.execute()
