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
    done = db.prepare(dsn)
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


@db_group.command("grades")
@click.option("--from", "start", required=True, metavar="YYYY[-MM]", help="First month (a year: its January).")
@click.option(
    "--to", "end", default=None, metavar="YYYY[-MM]", help="Last month (a year: its December); default --from."
)
@click.option("--scope", type=click.Choice(["dept", "street", "community", "patch"]), default=None)
@click.option("--json", "as_json", is_flag=True)
def grades(start: str, end: str | None, scope: str | None, as_json: bool) -> None:
    """Indicators, score, grade and 721 shares over any run of months, from the archive
    (the same figures as `gridbus report grades` for one month)."""
    import json

    from services import reports
    from services.archiver import db
    from shared.models import Mode721

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    try:
        lo, hi = reports.months(start, end or start)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    with db.connect(get_settings().database_url) as conn:
        rows = reports.indicators(conn, lo, hi, scope)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], ensure_ascii=False, indent=2))
        return
    click.echo(f"indicators {lo} … {hi} (from the archive)")
    for r in rows:
        sh = r.shares()
        click.echo(
            f"  {r.scope:<10}{r.key:<16}{r.c('registered'):>7}{r.c('resolved'):>7}{pct(r.on_time_rate):>8}"
            f"{pct(r.closed_rate):>8}{pct(r.rework_rate):>8}{r.c('breaches'):>7}"
            f"{'-' if r.score is None else r.score:>7}{r.grade:>4}  " + "/".join(pct(sh[m.value]) for m in Mode721)
        )


@db_group.command("accountability")
@click.option("--from", "start", required=True, metavar="DATE", help="First day (local), e.g. 2026-01-01.")
@click.option("--to", "end", required=True, metavar="DATE", help="Last day (local, inclusive).")
@click.option("--dept", default=None)
@click.option("--street", default=None)
@click.option("--json", "as_json", is_flag=True, help="The entries (no phone numbers) and the summary as JSON.")
def accountability(start: str, end: str, dept: str | None, street: str | None, as_json: bool) -> None:
    """The accountability ledger over any period, from the archive: who missed deadlines repeatedly."""
    import json
    import time
    from zoneinfo import ZoneInfo

    from services import reports
    from services.archiver import db
    from shared.ledger import Period

    tz = ZoneInfo(get_settings().timezone)
    try:
        period = Period.parse(start, end, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    now = time.time()
    with db.connect(get_settings().database_url) as conn:
        s = reports.ledger_summary(conn, period, tz, dept, street, now=now)  # from the roll-ups
        if as_json:
            rows = reports.ledger_entries(conn, period, dept, street, now=now)
            click.echo(json.dumps({"entries": [reports.public(e) for e in rows], **s}, ensure_ascii=False, indent=2))
            return
    total = sum(r["breaches"] for r in s["departments"])
    click.echo(f"accountability {start} … {end}: {total} breaches (from the archive)")
    for r in s["departments"]:
        click.echo(
            f"  {r['dept']:<12}{r['breaches']:>7} breaches{r['cases']:>7} cases{r['still_open']:>6} open"
            f"{r['late_hours_total']:>10} h late{'  referral' if r['referral'] else ''}"
        )


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
