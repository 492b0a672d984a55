"""`gridbus report reporters` and `gridbus report meeting` (services/cli.py adds them to
the `report` group of sla's commands)."""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import click

from shared.config import get_settings


def _store():
    from services.intake.store import CaseStore
    from shared.archive import ArchiveReader
    from shared.redisdb import connect

    settings = get_settings()
    # the archive too: a month older than the hot window is there only
    archive = ArchiveReader(settings.database_url) if settings.database_url else None
    return CaseStore(connect(settings), settings.district_code, archive)


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=tz)
    except ValueError as exc:
        raise click.BadParameter(f"{month!r} is not a month like 2026-11", param_hint="--month") from exc
    return first, (first + timedelta(days=32)).replace(day=1)


@click.command("reporters")
@click.option("--month", required=True, metavar="YYYY-MM", help="Month of registration (local time).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
def reporters(month: str, as_csv: bool) -> None:
    """Per-reporter figures of a month: accepted, handled on site (by 721 mode), duplicates, closed."""
    from services.intake.reports.cases import cases_between
    from services.intake.reports.reporters import FIELDS, figures, totals

    tz = ZoneInfo(get_settings().timezone)
    start, end = month_bounds(month, tz)
    rows = figures(cases_between(_store(), start, end))
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([r.row()[f] for f in FIELDS])
        return
    click.echo(f"reporters {month}: {len(rows)} reporters")
    click.echo(
        f"  {'reporter':<20}{'role':<14}{'accepted':>9}{'on site':>8}{'svc/mgmt/enf':>14}{'dup':>5}"
        f"{'closed':>7}{'cancel':>7}"
    )
    for r in rows:
        modes = f"{r.on_site_service}/{r.on_site_management}/{r.on_site_enforcement}"
        click.echo(
            f"  {r.reporter_id:<20}{r.role:<14}{r.accepted:>9}{r.handled_on_site:>8}{modes:>14}"
            f"{r.duplicates:>5}{r.closed:>7}{r.cancelled:>7}"
        )
    t = totals(rows)
    click.echo(
        f"  {'total':<34}{t.get('accepted', 0):>9}{t.get('handled_on_site', 0):>8}{'':>14}"
        f"{t.get('duplicates', 0):>5}{t.get('closed', 0):>7}{t.get('cancelled', 0):>7}"
    )


@click.command("meeting")
@click.option("--street", required=True, help="9-digit street code.")
@click.option("--from", "start", required=True, help="First day (2026-11-01) or ISO date-time.")
@click.option("--to", "end", required=True, help="Last day (inclusive) or ISO date-time.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
def meeting(street: str, start: str, end: str, fmt: str) -> None:
    """The joint-meeting agenda (联席会议) of a street: hot spots, disputes, escalations,
    overdue departments, rework, 门前三包 repeat offenders."""
    import json

    from services.intake.reports.meeting import agenda_for, markdown, parse_period, to_csv

    tz = ZoneInfo(get_settings().timezone)
    try:
        lo, hi = parse_period(start, end, tz)
        agenda = agenda_for(_store(), street, lo, hi)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if fmt == "csv":
        click.echo(to_csv(agenda), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(agenda.as_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(markdown(agenda, tz), nl=False)


REPORT_COMMANDS: list[click.Command] = [reporters, meeting]
