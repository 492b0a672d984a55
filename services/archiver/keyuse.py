"""When each API key was last used, copied from Redis into the archive.

intake notes every use in the key's hash (`last_used_at`, services/intake/auth.py); a
record per request would flood the archive, so the archiver copies the hashes' values
every KEY_USE_EVERY_S and once more when it stops. After a total loss of Redis the
rebuild restores them, at most that long behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import redis

from shared import redis_keys as keys

KEY_USE_EVERY_S = 60.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sync(conn: psycopg.Connection, client: redis.Redis) -> int:
    """Copy every key's newer last_used_at; returns how many rows moved forward."""
    ids = sorted(_text(k) for k in client.smembers(keys.api_keys()))
    if not ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for key_id in ids:
        pipe.hget(keys.api_key(key_id), "last_used_at")
    used = [(datetime.fromisoformat(_text(at)), k) for k, at in zip(ids, pipe.execute(), strict=True) if at]
    n = 0
    with conn.cursor() as cur:
        for at, key_id in used:
            cur.execute(
                "UPDATE api_keys SET last_used_at = %s "
                "WHERE key_id = %s AND (last_used_at IS NULL OR last_used_at < %s)",
                (at, key_id, at),
            )
            n += cur.rowcount
    conn.commit()
    return n
