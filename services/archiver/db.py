"""PostgreSQL: connecting, creating the database, versioned migrations.

Migrations are the numbered SQL files in `migrations/` (`0001_archive.sql`, …), applied in
order, each in its own transaction together with its row in `schema_migrations`, under an
advisory lock so that several replicas starting at once apply each file exactly once.
A small runner rather than alembic: the schema is plain SQL and nothing here uses an ORM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: every table of the record the migrations create (what a count, a wipe or a size covers)
TABLES = (
    "journal",
    "cases",
    "case_timeline",
    "case_assignments",
    "orders",
    "clocks",
    "ledger",
    "ledger_ended",
    "indicator_months",
    "ledger_rollup",
    "ledger_firsts",
    "notifications",
    "api_keys",
    "stream_offsets",
)
_LOCK_ID = 4_503_050_012  # pg_advisory_lock key of the migration runner
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise RuntimeError(f"two migrations share a version in {folder}")
    return found


def connect(dsn: str, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)


def ensure_database(dsn: str) -> bool:
    """Create the DSN's database if it does not exist (connecting to `postgres`). True if created."""
    params = conninfo_to_dict(dsn)
    name = params.get("dbname")
    if not name:
        return False
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    admin = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:  # created by someone else meanwhile
            return False
    return True


def drop_database(dsn: str) -> None:
    name = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def applied(conn: psycopg.Connection) -> list[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    if not conn.autocommit:
        conn.commit()
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(dsn: str, folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not applied yet; returns those applied now (idempotent)."""
    done: list[Migration] = []
    with connect(dsn, autocommit=True) as conn:
        # one runner at a time, the bookkeeping table's creation included
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            known = set(applied(conn))
            for m in migrations(folder):
                if m.version in known:
                    continue
                with conn.transaction():
                    conn.execute(m.path.read_text(encoding="utf-8"))
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
                done.append(m)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return done


def prepare(dsn: str) -> list[Migration]:
    """What a service or command does before using the archive: create, migrate, and cut
    the roll-ups in TIMEZONE if they were not (services/archiver/rollup.py)."""
    from zoneinfo import ZoneInfo

    from services.archiver import rollup
    from shared.config import get_settings

    ensure_database(dsn)
    done = migrate(dsn)
    with connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            rollup.ensure(conn, ZoneInfo(get_settings().timezone))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
            conn.commit()
    return done
