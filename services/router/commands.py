"""`gridbus routes test|show`: try a routing tree before it goes live."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from shared.config import get_settings
from shared.configfiles import ConfigError

COMMANDS: list[click.Command] = []


def _load(routes: Path | None):  # -> tuple[RoutingTree, Catalog]
    from services.router.compiler import load_routing_tree
    from shared.catalog import load_catalog

    catalog = load_catalog()
    try:
        return load_routing_tree(routes, catalog=catalog), catalog
    except ConfigError as exc:
        click.echo(f"invalid routing tree: {exc}", err=True)
        sys.exit(2)


def _attrs(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use key=value", param_hint="--attr")
        out[key.strip()] = value.strip()
    return out


def _at(value: str | None) -> datetime:
    tz = ZoneInfo(get_settings().timezone)
    if value is None:
        return datetime.now(tz)
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint="--at") from exc
    return at if at.tzinfo else at.replace(tzinfo=tz)  # a naive time means district local time


def _codes(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.group()
def routes() -> None:
    """The routing tree (config/routes.yaml)."""


COMMANDS.append(routes)


@routes.command("test")
@click.option("--category", required=True, help="5-digit type code, e.g. 01037")
@click.option(
    "--kind",
    type=click.Choice(["component", "matter"]),
    default=None,
    help="component or matter (default: as the catalog reads the bare code)",
)
@click.option("--grid", default="450305001001001", show_default=True, help="unit-grid (patch) code")
@click.option("--severity", type=click.Choice(["normal", "urgent"]), default="normal", show_default=True)
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="report attribute, repeatable")
@click.option("--at", "at", default=None, help="report time, ISO 8601 (default: now, district time)")
@click.option("--exclude", default=None, metavar="DEPTS", help="comma-separated departments that said 'not ours'")
@click.option(
    "--verify",
    default=None,
    metavar="DEPTS",
    help="comma-separated expected departments; exit 1 when the receivers differ",
)
@click.option(
    "--routes",
    "routes_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="routing tree to test (default: the live config/routes.yaml)",
)
def routes_test(
    category: str,
    kind: str | None,
    grid: str,
    severity: str,
    attrs: tuple[str, ...],
    at: str | None,
    exclude: str | None,
    verify: str | None,
    routes_path: Path | None,
) -> None:
    """Show the path a report takes through the tree and who receives it."""
    from services.router.tree import RoutingInput

    tree, catalog = _load(routes_path)
    entry = catalog.get(category, kind)
    if entry is None:
        raise click.BadParameter(
            f"{category} is not a {kind + ' ' if kind else ''}code of the catalog", param_hint="--category"
        )
    inp = RoutingInput(
        category=entry.code,
        category_kind=entry.kind,
        grid=grid,
        severity=severity,
        attributes=_attrs(attrs),
        at=_at(at),
        exclude_depts=frozenset(_codes(exclude)),
    )
    click.echo(
        f"case: {entry.kind} {entry.code} {entry.name} ({entry.class_name}), grid {grid}, "
        f"severity {severity}, at {inp.at.isoformat()}"
        + (f", attributes {dict(inp.attributes)}" if inp.attributes else "")
        + (f", excluding {','.join(sorted(inp.exclude_depts))}" if inp.exclude_depts else "")
    )
    click.echo(f"tree: {tree.source}")
    click.echo("path:")
    for line in tree.explain(inp):
        click.echo(f"  {line}")
    receivers = tree.route(inp)
    click.echo("receivers:")
    for r in receivers:
        click.echo(
            f"  {r.dept:<10} policy={r.sla_policy:<11} mode={r.mode:<11} level={r.level}  "
            f"route={r.route}\n  {'':<10} reason: {r.reason}"
        )
    if verify is not None:
        expected, got = sorted(set(_codes(verify))), sorted({r.dept for r in receivers})
        if expected != got:
            click.echo(f"verify: FAILED — expected {','.join(expected)}, got {','.join(got)}", err=True)
            sys.exit(1)
        click.echo(f"verify: ok ({','.join(got)})")


@routes.command("show")
@click.option(
    "--routes",
    "routes_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="routing tree to show (default: the live config/routes.yaml)",
)
def routes_show(routes_path: Path | None) -> None:
    """Print the compiled tree with the options every route inherits."""
    tree, _ = _load(routes_path)
    click.echo(f"# {tree.source}")
    for line in tree.describe():
        click.echo(line)
    if tree.intentionally_triaged:
        click.echo(f"# intentionally triaged: {', '.join(sorted(tree.intentionally_triaged))}")
