"""Where the archive stands in the stream: the offset written up to, kept in PostgreSQL
(`stream_offsets`) and moved only in the transaction that wrote the messages up to it.

`advance` is a compare-and-set on the offset the batch started from: a writer that lost
its place (another archiver, `gridbus rebuild`'s catch-up) gets `Moved` and rolls back,
instead of moving the offset backwards or past messages it did not write. Only one
writer runs at a time anyway (`LOCK_ID`, a session advisory lock held on the writing
connection itself, so the lock and the writes end together when that connection dies).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

#: pg_advisory_lock key of the one archiver (or catch-up) that writes from the stream
LOCK_ID = 4_503_050_016
#: a stream without a stored offset but an archive that has messages (the upgrade from
#: the archiver's own queue): read from this long before the newest archived message
UPGRADE_MARGIN = timedelta(hours=1)


class Moved(RuntimeError):
    """The stored offset is not where this writer's batch started."""


def written_to(conn: psycopg.Connection, stream: str) -> int | None:
    """The offset of the last message written, None when none was."""
    row = conn.execute("SELECT written_to FROM stream_offsets WHERE stream = %s", (stream,)).fetchone()
    return None if row is None else int(row[0])


def start_at(conn: psycopg.Connection, stream: str) -> tuple[int | None, int | datetime | str]:
    """(offset written to, the `x-stream-offset` to consume from). Without a stored offset:
    the whole stream (`first`), or — an archive written before offsets were stored — from
    UPGRADE_MARGIN before its newest message (what is older was archived; repeats are
    dropped by message id)."""
    done = written_to(conn, stream)
    if done is not None:
        return done, done + 1
    row = conn.execute("SELECT max(archived_at) FROM journal").fetchone()
    return None, (row[0] - UPGRADE_MARGIN) if row and row[0] else "first"


def advance(
    conn: psycopg.Connection, stream: str, before: int | None, to: int, last_occurred_at: datetime | None
) -> None:
    """Inside the caller's transaction: move the offset from `before` to `to`; `Moved` when
    it is not at `before` any more (the caller rolls back)."""
    params: tuple[Any, ...]
    if before is None:
        cur = conn.execute(
            "INSERT INTO stream_offsets (stream, written_to, last_occurred_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (stream) DO NOTHING",
            (stream, to, last_occurred_at),
        )
    else:
        params = (to, last_occurred_at, stream, before)
        cur = conn.execute(
            "UPDATE stream_offsets SET written_to = %s, updated_at = now(), "
            "last_occurred_at = GREATEST(last_occurred_at, %s) WHERE stream = %s AND written_to = %s",
            params,
        )
    if cur.rowcount != 1:
        raise Moved(f"{stream}: the stored offset is no longer {before} (another writer)")


def standing(conn: psycopg.Connection, stream: str) -> tuple[int | None, datetime | None]:
    """(offset written to, newest occurred_at written): what the lag is measured from."""
    row = conn.execute(
        "SELECT written_to, last_occurred_at FROM stream_offsets WHERE stream = %s", (stream,)
    ).fetchone()
    return (None, None) if row is None else (int(row[0]), row[1])


def try_lock(conn: psycopg.Connection) -> bool:
    """The writer's lock, on this connection's session (committed at once: no transaction
    is left open while waiting)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_ID,)).fetchone()
    conn.commit()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    conn.commit()
