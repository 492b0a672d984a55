"""Per-key rate limiting: a token bucket per API key in Redis, one Lua script.

Each role has a sustained rate (tokens per second) and a burst (bucket size) from
configuration (RATE_LIMIT_<ROLE> = "<rate>/<burst>", shared/config.py). A request takes
one token; an empty bucket answers 429 with `Retry-After` (whole seconds until a token is
back). Time is Redis's own clock (`TIME`), so several intake replicas share one bucket
per key and need no synchronised clocks. A rate of 0 turns limiting off for that role.
"""

from __future__ import annotations

import math
from typing import Any

from shared import metrics
from shared import redis_keys as keys
from shared.config import Settings
from shared.scripts import Lua

TOKEN_BUCKET = Lua("services.intake", "token_bucket")


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
        self.script = TOKEN_BUCKET.on(client)
        from services.intake.auth import ROLES

        self.limits = {role: parse_limit(settings.rate_limit(role)) for role in ROLES}

    def wait_seconds(self, key_id: str, role: str, used_at: str = "") -> float:
        """0 when the request may go ahead (a token was taken), else seconds to wait.
        `used_at`: the key's last use, recorded in the same round trip (auth.record_use)."""
        rate, burst = self.limits.get(role, (0.0, 1))
        if rate <= 0:
            if used_at:
                from services.intake.auth import record_use

                record_use(self.client, key_id, used_at)
            return 0.0
        allowed, wait = self.script(keys=[keys.rate_bucket(key_id), keys.api_key(key_id)], args=[rate, burst, used_at])
        return 0.0 if int(allowed) else float(wait)

    def check(self, principal: Any, used_at: str = "") -> None:
        from services.intake.boundary import RateLimited

        wait = self.wait_seconds(principal.key_id, principal.role.value, used_at)
        if wait > 0:
            metrics.HTTP_RATE_LIMITED.labels(principal.role.value).inc()
            raise RateLimited(
                f"rate limit of {principal.role.value} keys reached; retry later",
                "Authorization",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
