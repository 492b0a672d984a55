"""Holding messages for a digest: quiet hours and the per-recipient rate limit.

A held delivery goes into a Redis hash per bucket (recipient × channel); the bucket's
release time sits in a sorted set. The notifier's flusher (a nameko timer in every
replica) claims due buckets with one Lua script — the hash is renamed to a "claimed"
hash and the bucket moves to a lease set — so exactly one replica turns a bucket into a
digest. It publishes the digest delivery (confirmed), marks every item as done, then
calls `done`. If it dies in between, the lease runs out, the same claimed items are
claimed again and give the same digest id, which the sender drops if it already went
out. Messages held while a bucket is claimed wait in a fresh hash for the next round.

The rate limit counts arrivals per fixed window (`per_minutes`) in a sorted set keyed
by delivery id, so a redelivered message keeps its rank: the first `max` go out, the
rest are held until the window ends and go out as one digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from services.notifier.deliveries import Delivery
from shared import redis_keys as keys

_RATE = """
local rank = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not rank then
  rank = redis.call('ZCARD', KEYS[1]) + 1
  redis.call('ZADD', KEYS[1], rank, ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return tonumber(rank)
"""

_CLAIM = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, b in ipairs(expired) do
  redis.call('ZREM', KEYS[2], b)
  redis.call('ZADD', KEYS[1], 'NX', now, b)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, b in ipairs(due) do
  if not redis.call('ZSCORE', KEYS[2], b) then  -- a bucket being flushed waits for its done
  redis.call('ZREM', KEYS[1], b)
  local held, claimed = ARGV[4] .. b, ARGV[5] .. b
  if redis.call('EXISTS', claimed) == 0 and redis.call('EXISTS', held) == 1 then
    redis.call('RENAME', held, claimed)
  end
  if redis.call('EXISTS', claimed) == 1 then
    redis.call('ZADD', KEYS[2], now + lease, b)
    out[#out + 1] = b
    out[#out + 1] = cjson.encode(redis.call('HVALS', claimed))
  end
  end
end
return out
"""

_DONE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
end
return 1
"""


def digest_bucket(recipient: str, channel: str) -> str:
    """Held messages wait for one digest per recipient and channel."""
    return f"{recipient}|{channel}"


@dataclass(frozen=True)
class ClaimedBucket:
    bucket: str
    items: list[Delivery]


class HoldStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._rate = client.register_script(_RATE)
        self._claim = client.register_script(_CLAIM)
        self._done = client.register_script(_DONE)

    def rate_rank(self, bucket: str, delivery_id: str, now: float, window_s: int) -> tuple[int, float]:
        """(this delivery's rank in its window, when the window ends)."""
        window = int(now // window_s)
        rank = int(self._rate(keys=[keys.notify_rate(bucket, window)], args=[delivery_id, window_s * 2]))
        return rank, float((window + 1) * window_s)

    def hold(self, delivery: Delivery, release_at: float) -> bool:
        """Keep `delivery` for the bucket's next digest; False if it was already held."""
        bucket = digest_bucket(delivery.recipient, delivery.channel.value)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.notify_held(bucket), delivery.delivery_id, delivery.model_dump_json())
        # GT: a later release wins (a quiet-hours hold outlasts a rate-limit window), never an earlier one
        pipe.zadd(keys.notify_release(), {bucket: release_at}, gt=True)
        added, _ = pipe.execute()
        return bool(added)

    def claim(self, now: float, lease_s: float, limit: int = 100) -> list[ClaimedBucket]:
        prefix_held = keys.notify_held("")
        prefix_claimed = keys.notify_held_claimed("")
        flat = self._claim(
            keys=[keys.notify_release(), keys.notify_release_leased()],
            args=[now, lease_s, limit, prefix_held, prefix_claimed],
        )
        out = []
        for i in range(0, len(flat), 2):
            raw = json.loads(flat[i + 1]) if flat[i + 1] not in ("{}", b"{}") else []
            items = sorted(
                (Delivery.model_validate_json(x) for x in raw), key=lambda d: (d.first_attempt_at, d.delivery_id)
            )
            out.append(ClaimedBucket(flat[i] if isinstance(flat[i], str) else flat[i].decode(), items))
        return out

    def done(self, bucket: str, now: float) -> None:
        self._done(
            keys=[
                keys.notify_held_claimed(bucket),
                keys.notify_held(bucket),
                keys.notify_release_leased(),
                keys.notify_release(),
            ],
            args=[bucket, now],
        )

    def held_count(self) -> int:
        buckets = cast(
            set[str],
            set(self.r.zrange(keys.notify_release(), 0, -1)) | set(self.r.zrange(keys.notify_release_leased(), 0, -1)),
        )
        pipe = self.r.pipeline(transaction=False)
        for b in buckets:
            pipe.hlen(keys.notify_held(b))
            pipe.hlen(keys.notify_held_claimed(b))
        return int(sum(pipe.execute())) if buckets else 0


def digest_id(bucket: str, items: list[Delivery]) -> str:
    ids = ",".join(sorted(d.delivery_id for d in items))
    return hashlib.sha256(f"digest|{bucket}|{ids}".encode()).hexdigest()[:32]


def hold_until(
    delivery: Delivery, now_local: datetime, quiet: Any, rate: Any, store: HoldStore
) -> tuple[str, float] | None:
    """(reason, release time) when `delivery` must wait for a digest, else None.

    `quiet`: the recipient's QuietHours or None; `rate`: the RateLimit or None.
    """
    if delivery.urgent or delivery.event == "digest" or delivery.attempt > 1 or delivery.channel.value == "webhook":
        return None
    if quiet is not None:
        release = quiet.release_at(now_local)
        if release is not None:
            return "quiet_hours", release.timestamp()
    if rate is not None:
        bucket = digest_bucket(delivery.recipient, delivery.channel.value)
        rank, window_end = store.rate_rank(bucket, delivery.delivery_id, now_local.timestamp(), rate.window_s)
        if rank > rate.max:
            return "rate_limit", window_end
    return None
