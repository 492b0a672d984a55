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


COMMANDS += [db_group]
