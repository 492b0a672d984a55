"""API keys (Bearer) with roles, stored hashed in Redis.

A key is `gbk_<id>.<secret>`: the id is public (it names the key in `gridbus keys list`,
in logs and in the case timeline), the secret is shown once at creation and only its
SHA-256 is stored. A plain hash is enough because the secret is 256 random bits, not a
password: there is nothing to brute-force that a slow hash would protect. The compare is
constant-time so that response timing says nothing about how much of a guess was right.

Roles:
- `grid_app`: the grid app (reports, verification, case queries);
- `department`: one partner department (bound to its code): replies and its own cases;
- `ops`: the operations centre, reads everything;
- `open311`: an Open311 GeoReport v2 client (creates and reads service requests);
- `station`: a street's grid station (城市管理工作站, level-3 commanders), bound to its
  9-digit street code: dispatches by hand the cases of its street that have not been
  escalated past it, and hands triage cases up to the district;
- `city`: the city platform (一网统管, the 12345 hotline): hands tasks over as
  CloudEvents (`POST /v1/city/tasks`) and reads the cases that came from it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Mapping

import redis
from werkzeug.datastructures import Headers

from shared import redis_keys as keys
from shared.models import ApiKeyRecorded
from shared.outbox import intake_outbox

KEY_PREFIX = "gbk_"
_KEY = re.compile(r"^gbk_([0-9a-f]{12})\.([A-Za-z0-9_\-]{20,128})$")
WWW_AUTHENTICATE = 'Bearer realm="gridbus"'


class Role(str, Enum):
    grid_app = "grid_app"
    department = "department"
    ops = "ops"
    open311 = "open311"
    station = "station"
    city = "city"


ROLES = tuple(r.value for r in Role)


# -- errors and the authenticated caller ----------------------------------------------
class AuthError(Exception):
    status = 401

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def as_json(self) -> dict[str, list[dict[str, str]]]:
        """The HTTP body, shaped like intake's other errors."""
        return {"errors": [{"field": "Authorization", "message": self.message}]}

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": WWW_AUTHENTICATE} if self.status == 401 else {}


class Unauthorized(AuthError):
    """No key, a malformed key, an unknown or revoked key, or a wrong secret (401)."""

    status = 401


class Forbidden(AuthError):
    """A valid key whose role or department may not do this (403)."""

    status = 403


@dataclass(frozen=True)
class Principal:
    role: Role
    dept: str | None
    key_id: str
    street: str | None = None  # a station key's street

    @property
    def actor(self) -> str:
        """How this caller appears in a case's timeline."""
        scope = self.dept or self.street
        return f"{self.role.value}:{scope}:{self.key_id}" if scope else f"{self.role.value}:{self.key_id}"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    role: Role
    dept: str | None
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    street: str | None = None


# -- creating, listing, revoking -----------------------------------------------------
def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def create_key(
    client: redis.Redis,
    role: Role | str,
    dept: str | None = None,
    name: str = "",
    prefix: str | None = None,
    street: str | None = None,
) -> tuple[str, KeyInfo]:
    """Create a key; returns (the full key — its only appearance —, its stored info).
    `prefix`: the Redis key prefix of another stack (default: this one's)."""
    role = Role(role)
    if role is Role.department and not dept:
        raise ValueError("a department key needs its department code")
    if role is not Role.department and dept:
        raise ValueError(f"a {role.value} key is not bound to a department")
    if role is Role.station and not (street and re.fullmatch(r"\d{9}", street)):
        raise ValueError("a station key needs its 9-digit street code")
    if role is not Role.station and street:
        raise ValueError(f"a {role.value} key is not bound to a street")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = _now()
    fields: dict[Any, Any] = {
        "secret_sha256": _digest(secret),
        "role": role.value,
        "dept": dept or "",
        "name": name,
        "created_at": now.isoformat(),
        "street": street or "",
    }
    # 48-bit ids practically never clash; if one does, refuse rather than overwrite a key
    if client.exists(keys.api_key(key_id, prefix)):
        raise RuntimeError("key id collision; try again")
    pipe = client.pipeline()
    pipe.hset(keys.api_key(key_id, prefix), mapping=fields)
    pipe.sadd(keys.api_keys(prefix), key_id)
    _record(
        client,
        pipe,
        ApiKeyRecorded(
            message_id=f"apikey:{key_id}:created",
            case_id="",
            correlation_id=key_id,
            key_id=key_id,
            role=role.value,
            dept=dept,
            name=name,
            street=street or None,
            secret_sha256=fields["secret_sha256"],
            created_at=now,
        ),
        prefix,
    )
    pipe.execute()
    info = KeyInfo(key_id, role, dept or None, name, now, None, None, street or None)
    return f"{KEY_PREFIX}{key_id}.{secret}", info


def _record(client: redis.Redis, pipe: Any, record: ApiKeyRecorded, prefix: str | None) -> None:
    """The archive's copy, in intake's outbox in the same transaction (its relay publishes it)."""
    intake_outbox(client, prefix).add_in(pipe, [record])


def _dt(value: str | bytes | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)


def _info(key_id: str, h: Mapping[str, str]) -> KeyInfo:
    return KeyInfo(
        key_id,
        Role(h["role"]),
        h.get("dept") or None,
        h.get("name", ""),
        _dt(h["created_at"]) or _now(),
        _dt(h.get("last_used_at")),
        _dt(h.get("revoked_at")),
        h.get("street") or None,
    )


def _decoded(h: Mapping[Any, Any]) -> dict[str, str]:
    # callers may hand us a client with or without decode_responses
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in h.items()
    }


def list_keys(client: redis.Redis) -> list[KeyInfo]:
    ids = sorted((i.decode() if isinstance(i, bytes) else i) for i in client.smembers(keys.api_keys()))
    pipe = client.pipeline()
    for key_id in ids:
        pipe.hgetall(keys.api_key(key_id))
    out = []
    for key_id, h in zip(ids, pipe.execute(), strict=True):
        if h:
            out.append(_info(key_id, _decoded(h)))
    return sorted(out, key=lambda k: (k.created_at, k.key_id))


def revoke_key(client: redis.Redis, key_id: str) -> bool:
    """Revoke at once (the next request with it gets 401). False if there is no such key."""
    key_id = key_id.removeprefix(KEY_PREFIX).split(".", 1)[0]
    h = _decoded(client.hgetall(keys.api_key(key_id)))
    if not h:
        return False
    now = _now()
    # the hash of the secret goes too: a revoked key can never be revived by a bug
    pipe = client.pipeline()
    pipe.hset(keys.api_key(key_id), "revoked_at", now.isoformat())
    pipe.hdel(keys.api_key(key_id), "secret_sha256")
    _record(
        client,
        pipe,
        ApiKeyRecorded(
            message_id=f"apikey:{key_id}:revoked",
            case_id="",
            correlation_id=key_id,
            key_id=key_id,
            role=h["role"],
            dept=h.get("dept") or None,
            name=h.get("name", ""),
            street=h.get("street") or None,
            created_at=_dt(h.get("created_at")) or now,
            revoked_at=now,
        ),
        None,
    )
    pipe.execute()
    return True


# -- checking a request ---------------------------------------------------------------
def _header(headers: Mapping[str, str] | Headers, name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for k, v in headers.items():
        if k.lower() == lowered:
            return v
    return None


def record_use(client: redis.Redis, key_id: str, used_at: str | None = None) -> None:
    """The key's `last_used_at` (now unless given)."""
    client.hset(keys.api_key(key_id), "last_used_at", used_at or _now().isoformat())


def use_time() -> str:
    """What `last_used_at` holds for a use now (for RateLimiter.admit(used_at=...))."""
    return _now().isoformat()


def key_digest(token: str | None) -> tuple[str, str]:
    """A bare key's (id, SHA-256 of its secret); Unauthorized when it is missing or malformed."""
    if not token:
        raise Unauthorized("an API key is required")
    m = _KEY.match(token.strip())
    if not m:
        raise Unauthorized("malformed API key")
    key_id, secret = m.groups()
    return key_id, _digest(secret)


def authenticate_key(token: str | None, client: redis.Redis, record: bool = True) -> Principal:
    """Check a bare key (Bearer token or Open311 `api_key`) and return who it is.
    `record=False`: the caller records the use itself. (intake's HTTP gate checks the key
    and its rate limit in one script instead: RateLimiter.admit.)"""
    key_id, digest = key_digest(token)
    h = _decoded(client.hgetall(keys.api_key(key_id)))
    stored = h.get("secret_sha256", "")
    # compare even when the key is unknown, so unknown ids and wrong secrets cost the same
    ok = hmac.compare_digest(digest, stored or "0" * 64)
    if not ok or not stored or h.get("revoked_at"):
        raise Unauthorized("invalid or revoked API key")
    if record:
        record_use(client, key_id)
    return Principal(Role(h["role"]), h.get("dept") or None, key_id, h.get("street") or None)


def bearer_token(headers: Mapping[str, str] | Headers) -> str:
    """The key of `Authorization: Bearer <key>`; Unauthorized (401) without one."""
    value = _header(headers, "Authorization")
    if not value:
        raise Unauthorized("missing Authorization: Bearer <API key>")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <API key>'")
    return token.strip()


def authenticate(headers: Mapping[str, str] | Headers, client: redis.Redis, record: bool = True) -> Principal:
    """`Authorization: Bearer <key>` → Principal; Unauthorized (401) otherwise."""
    return authenticate_key(bearer_token(headers), client, record)


def require(principal: Principal, *roles: Role | str, dept: str | None = None) -> Principal:
    """Forbidden (403) unless the caller has one of `roles`; with `dept`, a department
    key must also be bound to that department (other roles are not department-bound)."""
    allowed = {Role(r) for r in roles}
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise Forbidden(f"role {principal.role.value} may not do this (needs {names})")
    if dept is not None and principal.role is Role.department and principal.dept != dept:
        raise Forbidden(f"this key belongs to department {principal.dept}, not {dept}")
    return principal
