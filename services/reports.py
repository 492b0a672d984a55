"""Reports over any period from the archive (PostgreSQL): indicators, grades, 721 shares,
on-time rates and the accountability ledger for a month, a year or any run of months.

The counters are the very increments sla committed in Redis (`clocks_recorded` carries
them, `case_registered` the street's registrations), kept one row each with the local
month they count in; the formulas are services/sla/indicators.py's and the ledger's
summary services/sla/ledger.py's. So for the same data a month from SQL equals sla's
Redis figures exactly, and a year is the sum of its months — which Redis only keeps while
its monthly hashes live. Reporters' phone numbers are in none of these tables; the
liaison's phone of a ledger entry is dropped from every report.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import psycopg

from services.sla.indicators import Indicators
from shared.ledger import Period

HIDDEN = ("liaison_phone",)


def months(start: str, end: str) -> tuple[str, str]:
    """`YYYY` or `YYYY-MM` bounds → the first and last month (inclusive)."""
    lo = start if len(start) == 7 else f"{start}-01"
    hi = end if len(end) == 7 else f"{end}-12"
    for value in (lo, hi):
        datetime.strptime(value, "%Y-%m")  # ValueError names a bad bound
    if hi < lo:
        raise ValueError("`to` must not be before `from`")
    return lo, hi


def indicators(conn: psycopg.Connection, first: str, last: str, scope: str | None = None) -> list[Indicators]:
    """Department and street indicators summed over the months `first`..`last` (YYYY-MM)."""
    by: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    q = (
        "SELECT scope, key, counter, sum(n)::bigint FROM indicator_counts WHERE period BETWEEN %s AND %s"
        + (" AND scope = %s" if scope else "")
        + " GROUP BY 1, 2, 3"
    )
    for sc, key, counter, n in conn.execute(q, (first, last, scope) if scope else (first, last)):
        by[(sc, key)][counter] = int(n)
    return [Indicators(sc, key, counts) for (sc, key), counts in sorted(by.items())]


def ledger_entries(
    conn: psycopg.Connection,
    period: Period,
    dept: str | None = None,
    street: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The ledger entries breached within `period`, shaped as services/sla/ledger.entries gives them."""
    now = datetime.now().timestamp() if now is None else now
    q = (
        "SELECT l.body, e.done_at FROM ledger l LEFT JOIN ledger_ended e USING (breach_id) "
        "WHERE l.breached_at >= %s AND l.breached_at < %s"
    )
    params: list[Any] = [period.start, period.end]
    if dept:
        q += " AND l.dept = %s"
        params.append(dept)
    if street:
        q += " AND (l.street = %s OR l.body->>'grid' LIKE %s)"
        params += [street, f"{street}%"]
    out = []
    for body, done in conn.execute(q + " ORDER BY l.breached_at, l.breach_id", params):
        e = dict(body)
        e["done"] = float(done) if done is not None else None
        e["open"] = done is None
        e["late_seconds"] = round(max(0.0, (e["done"] or now) - e["due"]), 1)
        out.append(e)
    return out


def public(entry: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as reports and exports show it."""
    return {k: v for k, v in entry.items() if k not in HIDDEN}
