"""The archiver's state outside nameko: a few PostgreSQL connections and the lag."""

from __future__ import annotations

import queue
import time
from contextlib import contextmanager
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import psycopg

from services.archiver import db
from services.archiver.writer import Outcome, archive
from shared import metrics


class Archive:
    def __init__(self, dsn: str, tz: str, size: int = 4) -> None:
        self.dsn = dsn
        self.tz = ZoneInfo(tz)
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = queue.Queue[None]()
        for _ in range(size):
            self._slots.put(None)
        self.last_written: float | None = None  # occurred_at (unix) of the last message written
        self.started = time.time()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool; one that failed is closed, not returned."""
        self._slots.get()
        conn: psycopg.Connection | None = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = db.connect(self.dsn)
            yield conn
            if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
            else:
                self._idle.put(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            self._slots.put(None)

    def write(self, body: Any) -> Outcome:
        with self.connection() as conn:
            out = archive(conn, body, self.tz)
        metrics.ARCHIVED.labels(out.kind, "new" if out.new else "repeat").inc()
        self.last_written = out.occurred_at.timestamp()
        return out

    def lag(self, backlog: int, now: float | None = None) -> float:
        """0 with nothing waiting; else how old the last message written is (the frontier),
        or — nothing written yet — how long this archiver has been unable to write."""
        if backlog == 0:
            return 0.0
        now = time.time() if now is None else now
        return max(0.0, now - (self.last_written if self.last_written is not None else self.started))

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
