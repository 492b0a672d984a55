"""Retention: a finished case (closed, cancelled, duplicate) leaves Redis CASE_HOT_DAYS
after its last change, once the archive holds that very version.

Only the document goes (the bulk of a case's bytes); its place in the listing index and
its idempotency key stay, so lists, Open311 and repeated reports still find it, and
intake reads it from the archive (services/intake/store.py). The deletion compares the
version in Redis with the archived one in the same Lua call: a case changed meanwhile
(or not archived yet) stays. Safe with several archivers (each step is idempotent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
import redis

from shared import redis_keys as keys
from shared.scripts import Lua

_EVICT = Lua("services.archiver", "evict")


@dataclass
class Evicted:
    evicted: int = 0
    absent: int = 0  # not in Redis (already gone, or never restored by a rebuild)
    changed: int = 0  # Redis has another version than the archive: left for later


def evict(
    conn: psycopg.Connection, client: redis.Redis, hot_days: float, now: float | None = None, limit: int = 5000
) -> Evicted:
    now = time.time() if now is None else now
    cutoff = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=hot_days)
    script = _EVICT.on(client)
    out = Evicted()
    rows = conn.execute(
        "SELECT case_id, version, category, registered_at FROM cases WHERE final AND evicted_at IS NULL "
        "AND updated_at < %s ORDER BY updated_at LIMIT %s",
        (cutoff, limit),
    ).fetchall()
    done: list[str] = []
    for case_id, version, category, registered_at in rows:
        geo = [keys.open_cases_geo(category), keys.open_cases_geo(category, keys.geo_day(registered_at.timestamp()))]
        r = script(keys=[keys.case(case_id), keys.open_cases(), *geo], args=[version, case_id])
        if r == -1:
            out.changed += 1
            continue
        out.evicted += int(r == 1)
        out.absent += int(r == 0)
        done.append(case_id)
    if done:
        conn.execute("UPDATE cases SET evicted_at = now() WHERE case_id = ANY(%s)", (done,))
    conn.commit()
    return out
