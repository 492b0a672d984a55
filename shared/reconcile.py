"""What reconcilers share: a lease in Redis, so that of several replicas one repairs at a
time (each pass is idempotent anyway: the lease saves work, it does not make it safe).

The reconcilers themselves live with the service that owns what they repair:
services/intake/reconcile.py (cases stuck in `registered`) and services/sla/reconcile.py
(dispatched orders without clocks). Outbox entries older than a threshold are the outbox
relays' (intake and sla), which count what they re-publish as repairs too.
"""

from __future__ import annotations

import redis

from shared import redis_keys as keys
from shared.leases import KeyLeases

#: how often one case is repaired before the reconciler gives up on it (and says so)
MAX_REPAIRS_PER_CASE = 5


def take_turn(client: redis.Redis, name: str, every_s: float) -> bool:
    """True for one replica per `every_s` seconds (a lease that is never released: it
    expires, so a pass runs at most once per period whichever replica's timer fires)."""
    return KeyLeases(client).take(keys.reconcile_lease(name), every_s * 0.9) is not None


def count_repair(client: redis.Redis, name: str, case_id: str, window_s: float) -> int:
    """How many times this case has now been repaired by `name` (kept for `window_s`)."""
    key = keys.reconcile_tries(name)
    pipe = client.pipeline()
    pipe.hincrby(key, case_id, 1)
    pipe.expire(key, int(window_s))
    return int(pipe.execute()[0])
