"""`gridbus keys create|list|revoke`: the API keys of intake's HTTP API.

The new key is printed once, on stdout alone (so `KEY=$(gridbus keys create …)` works);
gridbus keeps only its hash and can never show it again.
"""

from __future__ import annotations

from datetime import datetime

import click
import redis

from services.intake import auth
from shared.redisdb import connect

COMMANDS: list[click.Command] = []


def _client() -> redis.Redis:
    return connect()


def _known_departments() -> list[str]:
    from shared.departments import load_department_codes

    return load_department_codes()


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S%z") if value else "-"


@click.group("keys")
def keys() -> None:
    """API keys (Bearer) of intake's HTTP API."""


@keys.command("create")
@click.option("--role", type=click.Choice(auth.ROLES), required=True)
@click.option("--dept", default=None, help="Department code (required for, and only for, --role department).")
@click.option("--street", default=None, help="9-digit street code (required for, and only for, --role station).")
@click.option("--name", default="", help="Who holds the key, for `keys list`.")
def create(role: str, dept: str | None, street: str | None, name: str) -> None:
    """Create a key and print it (the only time it is shown)."""
    if role == auth.Role.department.value:
        if not dept:
            raise click.BadParameter("a department key needs --dept <code>", param_hint="--dept")
        known = _known_departments()
        if dept not in known:
            raise click.BadParameter(f"unknown department {dept!r}; known: {', '.join(known)}", param_hint="--dept")
    elif dept:
        raise click.BadParameter(f"a {role} key is not bound to a department", param_hint="--dept")
    if role == auth.Role.station.value:
        from shared.grid import load_grid

        streets = load_grid().streets
        if street not in streets:
            raise click.BadParameter(
                f"a station key needs --street, one of {', '.join(streets)}", param_hint="--street"
            )
    elif street:
        raise click.BadParameter(f"a {role} key is not bound to a street", param_hint="--street")
    key, info = auth.create_key(_client(), role, dept, name, street=street)
    click.echo(key)
    scope = info.dept or info.street
    click.echo(
        f"created key {info.key_id} ({info.role.value}{' ' + scope if scope else ''}); "
        "store it now, it cannot be shown again",
        err=True,
    )


@keys.command("list")
def list_() -> None:
    """Every key: id, role, department, name, created, last used (never the secret)."""
    rows = [("ID", "ROLE", "DEPT", "NAME", "CREATED", "LAST USED", "STATE")]
    for k in auth.list_keys(_client()):
        rows.append(
            (
                k.key_id,
                k.role.value,
                k.dept or k.street or "-",
                k.name or "-",
                _when(k.created_at),
                _when(k.last_used_at),
                f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke KEY_ID at once (its next request gets 401)."""
    if not auth.revoke_key(_client(), key_id):
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {key_id}")


@click.command("openapi")
@click.option("--write", "write_", is_flag=True, help="Write docs/openapi.json instead of printing.")
@click.option("--check", is_flag=True, help="Exit 1 if docs/openapi.json differs from the code.")
def openapi(write_: bool, check: bool) -> None:
    """The OpenAPI document of intake's HTTP API (built from the pydantic models)."""
    from services.intake import openapi as doc

    if check:
        current = doc.DOC_PATH.read_text(encoding="utf-8") if doc.DOC_PATH.exists() else ""
        if current != doc.render():
            raise click.ClickException(f"{doc.DOC_PATH} is out of date: run `gridbus openapi --write`")
        click.echo(f"{doc.DOC_PATH} is up to date")
    elif write_:
        doc.write()
        click.echo(f"wrote {doc.DOC_PATH}")
    else:
        click.echo(doc.render(), nl=False)


COMMANDS += [keys, openapi]
