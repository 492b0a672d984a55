"""Reading cases back from the archive: what intake serves once a case has left Redis
(CASE_HOT_DAYS after it closed). Not on the hot path: only cases Redis no longer has."""

from __future__ import annotations

import threading
from datetime import datetime

import psycopg

from shared.models import Case


class ArchiveReader:
    """One lazily opened connection (reconnected after a failure), used under a lock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self._conn

    def get_many(self, case_ids: list[str]) -> dict[str, Case]:
        if not case_ids:
            return {}
        with self._lock:
            try:
                rows = (
                    self._connection()
                    .execute("SELECT case_id, doc FROM cases WHERE case_id = ANY(%s)", (case_ids,))
                    .fetchall()
                )
            except psycopg.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise
        return {cid: Case.model_validate(doc) for cid, doc in rows}

    def registered_between(self, start: datetime, end: datetime) -> list[Case]:
        """Every archived case registered in [start, end), oldest first (period reports)."""
        with self._lock:
            try:
                rows = (
                    self._connection()
                    .execute(
                        "SELECT doc FROM cases WHERE registered_at >= %s AND registered_at < %s "
                        "ORDER BY registered_at, case_id",
                        (start, end),
                    )
                    .fetchall()
                )
            except psycopg.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise
        return [Case.model_validate(doc) for (doc,) in rows]

    def get(self, case_id: str) -> Case | None:
        return self.get_many([case_id]).get(case_id)
