"""`GET /v1/accountability`: sla's accountability ledger over HTTP, for the operations
centre and the discipline-inspection referral (role `ops`).

A mixin for IntakeService (it serves the public HTTP API; the ledger itself is written
by sla, services/sla/ledger.py). Query: `dept`, `street` (9-digit code), `from`, `to`
(dates, `to` inclusive, or ISO date-times; default: this month), `repeated` (breaches
from which a department/liaison is flagged for referral, default 2).

Answer 200: {"from", "to", "count", "entries": [...], "departments": [...], "liaisons": [...]};
401/403 as every authenticated endpoint; 422 for a bad parameter.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from services.intake.auth import AuthError, Role, authenticate, require
from services.sla.ledger import REPEATED, Period, entries, summary
from shared.config import get_settings

_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=str), status=status,
                    headers={**_JSON, **(headers or {})})


def accountability_response(client: Any, args: Any, headers: Any) -> Response:
    """The endpoint's logic, callable without nameko (tests)."""
    try:
        require(authenticate(headers, client), Role.ops)
    except AuthError as exc:
        extra = {"WWW-Authenticate": 'Bearer realm="gridbus"'} if exc.status == 401 else {}
        return _answer(exc.status, {"errors": [{"field": "Authorization", "message": exc.message}]}, extra)
    tz = ZoneInfo(get_settings().timezone)
    try:
        period = Period.parse(args.get("from"), args.get("to"), tz)
        repeated = int(args.get("repeated") or REPEATED)
        if repeated < 1:
            raise ValueError("repeated must be ≥ 1")
    except ValueError as exc:
        field = "repeated" if "repeated" in str(exc) or "invalid literal" in str(exc) else "from/to"
        return _answer(422, {"errors": [{"field": field, "message": str(exc)}]})
    rows = entries(client, period, dept=args.get("dept") or None, street=args.get("street") or None)

    def iso(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")

    for e in rows:
        for k in ("due", "breached_at", "done"):
            e[k] = iso(e[k])
    return _answer(200, {"from": iso(period.start), "to": iso(period.end), "count": len(rows),
                         "entries": rows, **summary(rows, repeated)})


class AccountabilityApi:
    """Mixin: needs `self.redis` (a Redis client, decode_responses=True)."""

    redis: Any

    @http("GET", "/v1/accountability")
    def get_accountability(self, request: Request) -> Response:
        return accountability_response(self.redis, request.args, request.headers)
