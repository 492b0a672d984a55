"""Console log-in sessions and CSRF tokens.

A browser logs in with an API key (role ops or station). The session cookie carries
`<session id>.<API key>` (HttpOnly, SameSite=Strict, Path=/console): the key is checked
again on every request, so a revoked key ends its sessions at once, and the server keeps
no copy of it — Redis holds only the session id's record (the key's id and the CSRF
token), as auth.py keeps only a key's hash. Logging out deletes the record, which makes
the cookie worthless even if a copy of it survives.

CSRF: every form carries the session's token (synchronizer token), compared in constant
time; SameSite=Strict already keeps other sites' forms from sending the cookie at all.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import redis

from services.intake.auth import AuthError, Principal, authenticate_key
from shared import redis_keys as keys

COOKIE = "gridbus_console"
SESSION_TTL_S = 12 * 3600  # one shift


class NotLoggedIn(Exception):
    """No session, an expired or logged-out one, or a key that no longer works."""


@dataclass(frozen=True)
class Session:
    session_id: str
    key: str
    csrf: str
    principal: Principal

    @property
    def cookie_value(self) -> str:
        return f"{self.session_id}.{self.key}"


def log_in(client: redis.Redis, key: str, may_use: tuple[str, ...]) -> Session:
    """Check the key (AuthError if it is not a valid key of one of the roles `may_use`)
    and open a session."""
    principal = authenticate_key(key.strip(), client)
    if principal.role.value not in may_use:
        raise AuthError(f"a {principal.role.value} key cannot use the console (needs {' or '.join(may_use)})")
    session_id, csrf = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    name = keys.console_session(session_id)
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        name, mapping={"key_id": principal.key_id, "csrf": csrf, "created_at": datetime.now(timezone.utc).isoformat()}
    )
    pipe.expire(name, SESSION_TTL_S)
    pipe.execute()
    return Session(session_id, key.strip(), csrf, principal)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def current(client: redis.Redis, cookie: str | None) -> Session:
    """The session a cookie names; NotLoggedIn otherwise."""
    if not cookie or "." not in cookie:
        raise NotLoggedIn("not logged in")
    session_id, _, key = cookie.partition(".")
    record = {_text(k): _text(v) for k, v in client.hgetall(keys.console_session(session_id)).items()}
    if not record:
        raise NotLoggedIn("session expired")
    try:
        principal = authenticate_key(key, client)
    except AuthError as exc:
        client.delete(keys.console_session(session_id))
        raise NotLoggedIn(exc.message) from None
    if not hmac.compare_digest(principal.key_id, record.get("key_id", "")):
        raise NotLoggedIn("session does not belong to this key")
    return Session(session_id, key, record["csrf"], principal)


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf, token or "")


def log_out(client: redis.Redis, session: Session) -> None:
    client.delete(keys.console_session(session.session_id))
