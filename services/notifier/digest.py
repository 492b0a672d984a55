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
from shared.leases import LeaseSet
from shared.scripts import Lua

_RATE = Lua("services.notifier", "rate_rank")
_CLAIM = Lua("services.notifier", "claim_digest")
_DONE = Lua("services.notifier", "digest_done")


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
        self._rate = _RATE.on(client)
        self.lease = LeaseSet(keys.notify_release, keys.notify_release_leased)
        self._claim = _CLAIM.on(client)
        self._done = _DONE.on(client)

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
        flat = self.lease.claim(self._claim, now, lease_s, limit, extra=[prefix_held, prefix_claimed])
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
