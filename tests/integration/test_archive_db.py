"""The archive's database: created when missing, migrations applied once, even by
several replicas starting together (real PostgreSQL)."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from services.archiver import db

pytestmark = pytest.mark.integration


def test_prepare_creates_the_database_and_migrates_once(pg_dsn: str) -> None:
    dsn = make_conninfo(pg_dsn, dbname=f"gridbus_test_{uuid.uuid4().hex[:10]}")
    try:
        assert db.ensure_database(dsn) is True
        assert db.ensure_database(dsn) is False
        errors: list[BaseException] = []
        applied: list[int] = []

        def run() -> None:
            try:
                applied.extend(m.version for m in db.migrate(dsn))
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        versions = [m.version for m in db.migrations()]
        assert sorted(applied) == versions  # each migration applied by exactly one replica
        assert db.migrate(dsn) == []
        with psycopg.connect(dsn) as conn:
            assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == versions
            assert conn.execute("SELECT to_regclass('journal') IS NOT NULL").fetchone()[0]
    finally:
        db.drop_database(dsn)
