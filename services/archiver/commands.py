"""`gridbus db migrate|status`: the archive's PostgreSQL schema."""
from __future__ import annotations

import click

from shared.config import get_settings

COMMANDS: list[click.Command] = []


@click.group("db")
def db_group() -> None:
    """The archive in PostgreSQL (DATABASE_URL)."""


@db_group.command("migrate")
def migrate() -> None:
    """Create the database if it is missing and apply every migration not applied yet (idempotent)."""
    from services.archiver import db

    dsn = get_settings().database_url
    created = db.ensure_database(dsn)
    done = db.migrate(dsn)
    if created:
        click.echo("created the database")
    for m in done:
        click.echo(f"applied {m.version:04d}_{m.name}")
    click.echo(f"schema at version {max((m.version for m in db.migrations()), default=0)}")


@db_group.command("status")
def status() -> None:
    """Migrations applied and pending."""
    from services.archiver import db

    with db.connect(get_settings().database_url) as conn:
        done = set(db.applied(conn))
    for m in db.migrations():
        click.echo(f"{m.version:04d}_{m.name}  {'applied' if m.version in done else 'pending'}")


@click.command("retention")
@click.option("--hot-days", type=float, default=None, help="Instead of CASE_HOT_DAYS (0: every finished case).")
def retention(hot_days: float | None) -> None:
    """Move finished cases past CASE_HOT_DAYS out of Redis now (the archiver does it every 10 minutes)."""
    from services.archiver import db
    from services.archiver.retention import evict
    from shared.redisdb import connect

    settings = get_settings()
    with db.connect(settings.database_url) as conn:
        done = evict(conn, connect(settings), settings.case_hot_days if hot_days is None else hot_days)
    click.echo(f"evicted {done.evicted}, already gone {done.absent}, changed since archived {done.changed}")


COMMANDS += [db_group, retention]
