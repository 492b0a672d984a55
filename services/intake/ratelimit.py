"""Per-key rate limiting: a token bucket per API key in Redis, checked with the key itself
in one Lua script.

Each role has a sustained rate (tokens per second) and a burst (bucket size) from
configuration (RATE_LIMIT_<ROLE> = "<rate>/<burst>", shared/config.py). A request takes
one token; an empty bucket answers 429 with `Retry-After` (whole seconds until a token is
back). Time is Redis's own clock (`TIME`), so several intake replicas share one bucket
per key and need no synchronised clocks. A rate of 0 turns limiting off for that role.

`admit` is intake's HTTP gate (services/intake/boundary.py): the key's hash, the secret's
check, the role, the bucket and the key's `last_used_at` in one round trip
(services/intake/lua/admit.lua) instead of one to read the key and one for the bucket.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from services.intake.auth import ROLES, Principal, Role, Unauthorized, key_digest, require
from shared import metrics
from shared import redis_keys as keys
from shared.config import Settings
from shared.scripts import Lua

ADMIT = Lua("services.intake", "admit")


def parse_limit(text: str) -> tuple[float, int]:
    """ "20/100" → (20.0 per second, burst 100); "0" → off."""
    rate_s, _, burst_s = text.strip().partition("/")
    rate = float(rate_s)
    burst = int(burst_s) if burst_s else max(1, math.ceil(rate))
    if rate < 0 or burst < 1:
        raise ValueError(f"rate limit {text!r}: want <requests per second>/<burst ≥ 1>")
    return rate, burst


class RateLimiter:
    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.script = ADMIT.on(client)
        self.limits = {role: parse_limit(settings.rate_limit(role)) for role in ROLES}
        self._limit_args = [x for role, (rate, burst) in self.limits.items() for x in (role, rate, burst)]

    def admit(self, token: str, roles: Iterable[Role | str], used_at: str) -> Principal:
        """Who `token` (a bare key) is, if its role is one of `roles` and its bucket has a
        token: Unauthorized (401, nothing written), Forbidden (403, the use recorded) or
        RateLimited (429 with Retry-After, the use recorded); the use is recorded as
        `used_at` (auth.use_time())."""
        from services.intake.boundary import RateLimited  # the boundary's errors (it imports this module)

        allowed = tuple(Role(r) for r in roles)
        key_id, digest = key_digest(token)
        answer = self.script(
            keys=[keys.api_key(key_id), keys.rate_bucket(key_id)],
            args=[digest, used_at, " ".join(r.value for r in allowed), *self._limit_args],
        )
        if answer[0] == "unauthorized":
            raise Unauthorized("invalid or revoked API key")
        who = Principal(Role(answer[1]), answer[2] or None, key_id, answer[3] or None)
        if answer[0] == "forbidden":
            require(who, *allowed)  # raises Forbidden, with the roles it needs
        wait = float(answer[4])
        if wait > 0:
            metrics.HTTP_RATE_LIMITED.labels(who.role.value).inc()
            raise RateLimited(
                f"rate limit of {who.role.value} keys reached; retry later",
                "Authorization",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return who
