"""The archiver's PostgreSQL connections for its timers (the stream reader keeps its own:
it holds the writer's lock on it, services/archiver/stream.py)."""

from __future__ import annotations

import queue
import time
from contextlib import contextmanager
from typing import Iterator
from zoneinfo import ZoneInfo

import psycopg

from services.archiver import db


class Archive:
    def __init__(self, dsn: str, tz: str, size: int = 4) -> None:
        self.dsn = dsn
        self.tz = ZoneInfo(tz)
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = queue.Queue[None]()
        for _ in range(size):
            self._slots.put(None)
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

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
