"""`GET /v1/accountability`: sla's accountability ledger over HTTP, for the operations
centre and the discipline-inspection referral (role `ops`).

A mixin for IntakeService (it serves the public HTTP API; the ledger itself is written
by sla; its format is shared/ledger.py). Query: `dept`, `street` (9-digit code), `from`, `to`
(dates, `to` inclusive, or ISO date-times; default: this month), `repeated` (breaches
from which a department/liaison is flagged for referral, default 2).

Answer 200: {"from", "to", "count", "entries": [...], "departments": [...], "liaisons": [...]};
401/403 as every authenticated endpoint; 422 for a bad parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from services.intake.auth import Role, authenticate, require
from services.intake.boundary import api, error_response, json_response
from services.intake.validation import FieldError, InvalidInput
from shared.config import get_settings
from shared.ledger import REPEATED, Period, entries, summary


def accountability(client: Any, args: Any) -> Response:
    """The endpoint's logic for an authorised caller, callable without nameko (tests)."""
    tz = ZoneInfo(get_settings().timezone)
    try:
        period = Period.parse(args.get("from"), args.get("to"), tz)
    except ValueError as exc:
        raise InvalidInput([FieldError("from/to", str(exc))]) from None
    try:
        repeated = int(args.get("repeated") or REPEATED)
        if repeated < 1:
            raise ValueError
    except ValueError:
        raise InvalidInput([FieldError("repeated", "an integer ≥ 1")]) from None
    rows = entries(client, period, dept=args.get("dept") or None, street=args.get("street") or None)

    def iso(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")

    for e in rows:
        for k in ("due", "breached_at", "done"):
            e[k] = iso(e[k])
    return json_response(
        200,
        {
            "from": iso(period.start),
            "to": iso(period.end),
            "count": len(rows),
            "entries": rows,
            **summary(rows, repeated),
        },
    )


def accountability_response(client: Any, args: Any, headers: Any) -> Response:
    """Authentication and errors as the HTTP boundary answers them (tests without nameko)."""
    try:
        require(authenticate(headers, client), Role.ops)
        return accountability(client, args)
    except Exception as exc:
        return error_response(exc)


class AccountabilityApi:
    """Mixin: needs `self.redis` (a Redis client, decode_responses=True)."""

    redis: Any

    @api("GET", "/v1/accountability", roles=(Role.ops,))
    def get_accountability(self, request: Request) -> Response:
        return accountability(self.redis, request.args)
