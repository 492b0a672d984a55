"""Departments' own RabbitMQ users, through the management HTTP API.

Each department `<code>` gets the user `dept-<code>` that may:
- read only its own queue `dept.<code>` (consume and ack its orders),
- write only to `gridbus.replies`, and there (topic permission) only with the routing
  key `reply.<code>`,
- configure nothing.
intake trusts the broker-validated `user_id` of a reply, so a department cannot reply
as another one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlparse

import httpx

from shared.config import named_secret
from shared.topology import EX_REPLIES, dept_queue, dept_user, reply_routing_key


@dataclass(frozen=True)
class UserResult:
    dept: str
    user: str
    created: bool
    password: str | None  # only when generated now: shown once, never stored by gridbus


def _client(management_url: str) -> httpx.Client:
    parsed = urlparse(management_url)
    base = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 15672}"
    return httpx.Client(
        base_url=base, auth=(unquote(parsed.username or "guest"), unquote(parsed.password or "guest")), timeout=10
    )


def vhost_of(amqp_uri: str) -> str:
    path = urlparse(amqp_uri).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def password_for(dept: str) -> str | None:
    """`GRIDBUS_DEPT_PASSWORD_<CODE>` or the file named by `…_FILE`; None: generate one."""
    return named_secret(f"GRIDBUS_DEPT_PASSWORD_{dept.upper()}")


def apply_users(management_url: str, amqp_uri: str, departments: list[str]) -> list[UserResult]:
    """Create (or update the permissions of) every department's user; idempotent."""
    vhost = quote(vhost_of(amqp_uri), safe="")
    results = []
    with _client(management_url) as api:
        for dept in departments:
            user = dept_user(dept)
            given = password_for(dept)
            exists = api.get(f"/api/users/{quote(user, safe='')}").status_code == 200
            generated = None
            if given is not None or not exists:
                password = given or (generated := secrets.token_urlsafe(18))
                api.put(
                    f"/api/users/{quote(user, safe='')}", json={"password": password, "tags": ""}
                ).raise_for_status()
            api.put(
                f"/api/permissions/{vhost}/{quote(user, safe='')}",
                json={
                    "configure": "^$",
                    "write": f"^{re.escape(EX_REPLIES)}$",
                    "read": f"^{re.escape(dept_queue(dept))}$",
                },
            ).raise_for_status()
            api.put(
                f"/api/topic-permissions/{vhost}/{quote(user, safe='')}",
                json={
                    "exchange": EX_REPLIES,
                    "write": f"^{re.escape(reply_routing_key(dept))}$",
                    "read": "^$",
                },
            ).raise_for_status()
            results.append(UserResult(dept, user, not exists, generated))
    return results
