"""Deadline timers in Redis: a sorted set of due times, claimed atomically into a lease set.

- `claim` is one Lua script: it moves due timers into `leased` (score = lease expiry)
  and returns them, so of several sla replicas exactly one gets each timer.
- The claimer publishes, then calls `done`. If it dies in between, the lease expires and
  the next `claim` re-arms the timer: a firing is never lost (it may repeat with the same
  message id, which consumers de-duplicate).
- Each (order, deadline) has a fencing token; cancelling bumps it, so a firing that was
  already claimed when the case was acknowledged is recognised as stale and dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
  out[#out + 1] = id
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
return out
"""


@dataclass(frozen=True)
class Claimed:
    timer_id: str
    due: float
    payload: dict[str, Any]


def token_field(order_id: str, deadline: str) -> str:
    return f"{order_id}|{deadline}"


class TimerStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._claim = client.register_script(_CLAIM)

    def next_token(self, case_id: str, order_id: str, deadline: str) -> int:
        return int(self.r.hincrby(keys.sla_tokens(case_id), token_field(order_id, deadline), 1))

    def current_token(self, case_id: str, order_id: str, deadline: str) -> int:
        return int(self.r.hget(keys.sla_tokens(case_id), token_field(order_id, deadline)) or 0)

    def arm(self, case_id: str, timer_id: str, due: float, payload: dict[str, Any]) -> None:
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

    def claim(self, now: float, lease_s: float, limit: int = 500) -> list[Claimed]:
        flat = self._claim(keys=[keys.timers_due(), keys.timers_leased(), keys.timer_payloads()],
                           args=[now, lease_s, limit])
        out = []
        for i in range(0, len(flat), 3):
            payload = json.loads(flat[i + 2]) if flat[i + 2] else {}
            out.append(Claimed(flat[i], float(flat[i + 1]), payload))
        return out

    def done(self, case_id: str, timer_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(keys.timers_leased(), timer_id)
        pipe.hdel(keys.timer_payloads(), timer_id)
        pipe.srem(keys.sla_case_timers(case_id), timer_id)
        pipe.execute()

    def pending(self) -> int:
        return int(self.r.zcard(keys.timers_due()))
