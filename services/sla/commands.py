"""Operator commands of the sla service: `gridbus sla …`."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from shared.config import get_settings
from shared.indicators import current_period
from shared.logs import configure_logging
from shared.worktime import Limit, UnknownYear, load_calendar


@click.group()
def sla() -> None:
    """Deadlines: check the working-time calendar and a case's clocks."""


def _aware(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 date-time") from exc
    if value.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no offset: write e.g. 2026-09-30T16:00:00+08:00")
    return value


@sla.command("due")
@click.option(
    "--from",
    "start",
    required=True,
    metavar="DATETIME",
    help="When the clock starts, ISO 8601 with offset (2026-09-30T16:00:00+08:00).",
)
@click.option(
    "--limit",
    "limit_text",
    required=True,
    metavar="LIMIT",
    help="2工作日, 4工作时, 2紧急工作时, or 2wd / 4wh / 2h / 15m / 30s.",
)
@click.option(
    "--fraction",
    type=click.FloatRange(min=0),
    default=None,
    help="Print the instant when this fraction of the limit has run (the warning point, e.g. 0.8).",
)
@click.option(
    "--holidays",
    "holidays_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="holidays.yaml to use (default: the config directory's).",
)
def due(start: str, limit_text: str, fraction: float | None, holidays_path: Path | None) -> None:
    """Print when LIMIT runs out if its clock starts at --from (ISO 8601 with offset)."""
    begin = _aware(start)
    try:
        limit = Limit.parse(limit_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from exc
    settings = get_settings()
    # stdout carries only the answer (scripts compare it); the unknown-year warning,
    # which matters to the operator, goes to stderr as a log line.
    configure_logging(settings.log_format, "WARNING")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownYear)
        calendar = load_calendar(holidays_path)
        result = calendar.due(begin, limit) if fraction is None else calendar.at_fraction(begin, limit, fraction)
    click.echo(result.isoformat())


def _redis():
    import redis

    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


def _local(ts: float | None, tz: Any) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


@sla.command("explain")
@click.argument("case_id")
@click.option("--json", "as_json", is_flag=True, help="Print the stored clock document as JSON.")
def explain(case_id: str, as_json: bool) -> None:
    """Show a case's clocks, pauses and escalation steps (from sla's Redis state)."""
    import json

    from services.sla.store import load_case

    case = load_case(_redis(), case_id)
    if case is None:
        raise click.ClickException(f"sla holds no clocks for case {case_id}")
    if as_json:
        click.echo(json.dumps(case.to_dict(), ensure_ascii=False, indent=2))
        return
    tz = ZoneInfo(get_settings().timezone)
    click.echo(f"case {case.case_id}  status {case.status}  category {case.cat}  grid {case.grid}  severity {case.sev}")
    click.echo("orders:")
    for o in case.orders.values():
        esc = f"escalated to L{o.esc_level} (step {o.esc_step})" if o.esc_level else "not escalated"
        click.echo(
            f"  {o.order_id}  {o.dept}@L{o.level}  policy {o.policy}  round {o.round}  "
            f"{'active' if o.active else 'inactive'}  acked {_local(o.acked, tz)}  "
            f"resolved {_local(o.resolved, tz)}  {esc}{'  [' + o.esc_done + ']' if o.esc_done else ''}"
        )
    click.echo("clocks:")
    for c in case.clocks.values():
        when = {
            "running": f"due {_local(c.due, tz)}  warn {_local(c.warn_at, tz) if not c.warned else 'sent'}",
            "paused": f"paused, {c.used:g} of {c.limit} used",
            "breached": f"breached at {_local(c.ended, tz)}",
            "stopped": f"stopped at {_local(c.ended, tz)} ({c.reason})",
        }[c.state]
        click.echo(
            f"  {c.id:<24} {c.kind:<11} L{c.level}  limit {c.limit:<6} {when}" + (f"  step {c.step}" if c.step else "")
        )
    click.echo("history:")
    for at, what, details in case.log:
        text = "  ".join(f"{k}={_local(v, tz) if k == 'due' else v}" for k, v in details.items())
        click.echo(f"  {_local(at, tz)}  {what:<20} {text}")


@click.group()
def report() -> None:
    """Reports for the operations centre and discipline inspection (accountability, grades)."""


def _month(value: str | None) -> str:
    tz = ZoneInfo(get_settings().timezone)
    if value is None:
        return current_period(tz)
    try:
        datetime.strptime(value, "%Y-%m")
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a month like 2026-11") from exc
    return value


@report.command("accountability")
@click.option("--month", default=None, metavar="YYYY-MM", help="Month (local time); default this month.")
@click.option("--dept", default=None, help="Only this department.")
@click.option("--street", default=None, help="Only this street (9-digit code).")
@click.option("--csv", "as_csv", is_flag=True, help="Every breach as CSV (for the referral file).")
@click.option(
    "--repeated",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Breaches in the month from which a department or liaison is listed for referral.",
)
def accountability(month: str | None, dept: str | None, street: str | None, as_csv: bool, repeated: int) -> None:
    """The accountability ledger of a month: departments and liaisons with repeated breaches."""
    import csv
    import sys

    from shared.ledger import Period, entries, summary

    tz = ZoneInfo(get_settings().timezone)
    period = Period.month(_month(month), tz)
    rows = entries(_redis(), period, dept=dept, street=street)
    if as_csv:
        fields = [
            "case_id",
            "order_id",
            "dept",
            "liaison",
            "liaison_phone",
            "street",
            "grid",
            "category",
            "level",
            "clock",
            "step",
            "limit",
            "due",
            "breached_at",
            "done",
            "late_seconds",
            "open",
        ]
        w = csv.writer(sys.stdout)
        w.writerow(fields)
        for e in rows:
            w.writerow([_local(e[f], tz) if f in ("due", "breached_at", "done") else e[f] for f in fields])
        return
    s = summary(rows, repeated)
    click.echo(f"accountability ledger {_month(month)}: {len(rows)} breaches (listed for referral: {repeated} or more)")
    click.echo("departments:")
    click.echo(
        f"  {'dept':<12}{'breaches':>9}{'cases':>7}{'ack':>5}{'handle':>7}{'escal.':>7}{'open':>6}"
        f"{'late h':>9}{'max h':>8}{'top L':>6}  referral"
    )
    for r in s["departments"]:
        click.echo(
            f"  {r['dept']:<12}{r['breaches']:>9}{r['cases']:>7}{r['acknowledge']:>5}{r['handle']:>7}"
            f"{r['escalation']:>7}{r['still_open']:>6}{r['late_hours_total']:>9}{r['late_hours_max']:>8}"
            f"{r['highest_level']:>6}  {'YES' if r['referral'] else ''}"
        )
    click.echo("liaisons:")
    for r in s["liaisons"]:
        click.echo(
            f"  {r['dept']:<12}{r['street']:<11}{r['liaison'] or '(none named)':<10}{r['breaches']:>4} breaches"
            f"  late {r['late_hours_total']} h  {'REFERRAL' if r['referral'] else ''}"
        )


@report.command("grades")
@click.option("--month", default=None, metavar="YYYY-MM", help="Month (local time); default this month.")
@click.option("--json", "as_json", is_flag=True)
def grades(month: str | None, as_json: bool) -> None:
    """Department and street indicators, score and grade (A–E), and 721 shares of a month."""
    import json

    from shared.indicators import MODES, TARGET_721, load, pct

    rows = load(_redis(), _month(month))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], ensure_ascii=False, indent=2))
        return
    click.echo(
        f"indicators {_month(month)} (score: shared/indicators.py; 721 target "
        + "/".join(f"{int(v * 100)}" for v in TARGET_721.values())
        + ")"
    )
    head = (
        f"  {'':<10}{'key':<16}{'reg':>5}{'res':>5}{'ontime':>8}{'closed':>8}{'rework':>8}{'satisf':>8}"
        f"{'esc':>5}{'breach':>7}{'score':>7}{'grade':>6}  721 service/management/enforcement"
    )
    click.echo(head)
    for r in rows:
        sh = r.shares()
        click.echo(
            f"  {r.scope:<10}{r.key:<16}{r.c('registered'):>5}{r.c('resolved'):>5}{pct(r.on_time_rate):>8}"
            f"{pct(r.closed_rate):>8}{pct(r.rework_rate):>8}{pct(r.satisfaction_rate):>8}"
            f"{r.c('escalations'):>5}{r.c('breaches'):>7}"
            f"{'-' if r.score is None else r.score:>7}{r.grade:>6}  " + "/".join(pct(sh[m]) for m in MODES)
        )


COMMANDS: list[click.Command] = [sla, report]
