"""Operator commands of the sla service: `gridbus sla …`."""
from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import click

from services.sla.clocks import Limit, UnknownYear, load_calendar
from shared.config import get_settings
from shared.logs import configure_logging


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
    "--from", "start", required=True, metavar="DATETIME",
    help="When the clock starts, ISO 8601 with offset (2026-09-30T16:00:00+08:00).",
)
@click.option(
    "--limit", "limit_text", required=True, metavar="LIMIT",
    help="2工作日, 4工作时, 2紧急工作时, or 2wd / 4wh / 2h / 15m / 30s.",
)
@click.option(
    "--fraction", type=click.FloatRange(min=0), default=None,
    help="Print the instant when this fraction of the limit has run (the warning point, e.g. 0.8).",
)
@click.option(
    "--holidays", "holidays_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None, help="holidays.yaml to use (default: the config directory's).",
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


COMMANDS: list[click.Command] = [sla]
