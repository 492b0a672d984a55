"""Reports over any period from the archive (PostgreSQL): indicators, grades, 721 shares,
on-time rates and the accountability ledger for a month, a year or any run of months.

The counters are the very increments sla committed in Redis (`clocks_recorded` carries
them, `case_registered` the street's registrations), kept one row each with the local
month they count in; the formulas are shared/indicators.py's and the ledger's
summary services/sla/ledger.py's. So for the same data a month from SQL equals sla's
Redis figures exactly, and a year is the sum of its months — which Redis only keeps while
its monthly hashes live. Reporters' phone numbers are in none of these tables; the
liaison's phone of a ledger entry is dropped from every report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from shared.indicators import Indicators
from shared.ledger import REPEATED, Period, Tally, late_tenths, shown, summary

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
        "SELECT scope, key, counter, sum(n)::bigint FROM indicator_months WHERE period BETWEEN %s AND %s"
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
        e["late_seconds"] = late_tenths(e["done"] or now, e["due"]) / 10
        out.append(e)
    return out


def _days(period: Period, tz: ZoneInfo) -> tuple[date, date] | None:
    """The period as local days [first, end) if both bounds are local midnights."""
    out = []
    for at in (period.start, period.end):
        if at != math.floor(at) or abs(at) > 1e11:
            return None
        local = datetime.fromtimestamp(at, tz)
        if local.time() != dtime():
            return None
        out.append(local.date())
    return out[0], out[1]


def ledger_summary(
    conn: psycopg.Connection,
    period: Period,
    tz: ZoneInfo,
    dept: str | None = None,
    street: str | None = None,
    now: float | None = None,
    repeated: int = REPEATED,
) -> dict[str, list[dict[str, Any]]]:
    """shared/ledger.summary of the period's entries, read from the roll-ups when the
    period is whole local days and no street is asked for (a street also matches grid
    cells by prefix, which the roll-ups do not know): whole months from the monthly rows,
    the days around them from the daily ones, and the open entries — late by `now` —
    one by one. Otherwise, and while the roll-ups are not cut in this time zone, from
    the entries."""
    now = datetime.now().timestamp() if now is None else now
    days = _days(period, tz)
    if days is None or street or rollup_state(conn) != tz.key:
        return summary(ledger_entries(conn, period, dept, street, now), repeated)
    first, end = days
    m1 = first if first.day == 1 else (first.replace(day=1) + timedelta(days=32)).replace(day=1)
    m2 = end.replace(day=1)
    if m1 < m2:
        where = (
            "((grain = 'm' AND bucket >= %(m1)s AND bucket < %(m2)s) OR (grain = 'd' AND "
            "((bucket >= %(first)s AND bucket < %(m1)s) OR (bucket >= %(m2)s AND bucket < %(end)s))))"
        )
    else:
        where = "grain = 'd' AND bucket >= %(first)s AND bucket < %(end)s"
    params: dict[str, Any] = {"first": first, "end": end, "m1": m1, "m2": m2, "dept": dept, "now": now}
    params.update(start=period.start, stop=period.end)
    only = " AND dept = %(dept)s" if dept else ""
    liaisons: dict[tuple[str, str, str], Tally] = {}
    for d, s, n, b, ack, hd, esc, lvl, late, late_max, first_at, first_id in conn.execute(
        "SELECT dept, street, liaison, sum(breaches), sum(acknowledge), sum(handle), sum(escalation), min(min_level), "
        "sum(closed_late), max(closed_late_max), min(first_at), "
        "(array_agg(first_id ORDER BY first_at, first_id))[1] "
        f"FROM ledger_rollup WHERE {where}{only} GROUP BY 1, 2, 3",
        params,
    ):
        liaisons[(d, s, n)] = Tally(
            breaches=int(b),
            acknowledge=int(ack),
            handle=int(hd),
            escalation=int(esc),
            late_tenths=int(late),
            late_tenths_max=int(late_max),
            highest_level=int(lvl),
            first=(float(first_at), first_id),
        )
    # open entries: late by now, per entry as shared/ledger.late_tenths (rint is round half to even)
    for d, s, n, k, late, late_max in conn.execute(
        "SELECT dept, street, liaison, count(*), sum(t), max(t) FROM ("
        "  SELECT dept, street, liaison, greatest(0, round((%(now)s::float8 - due) * 10))::bigint AS t FROM ledger"
        f"  WHERE done_at IS NULL AND breached_at >= %(start)s AND breached_at < %(stop)s{only}) o GROUP BY 1, 2, 3",
        params,
    ):
        t = liaisons[(d, s, n)]
        t.still_open = int(k)
        t.late_tenths += int(late)
        t.late_tenths_max = max(t.late_tenths_max, int(late_max))
    depts: dict[str, Tally] = {}
    for (d, _s, _n), t in liaisons.items():
        agg = depts.setdefault(d, Tally())
        for name in ("breaches", "acknowledge", "handle", "escalation", "still_open", "late_tenths"):
            setattr(agg, name, getattr(agg, name) + getattr(t, name))
        agg.late_tenths_max = max(agg.late_tenths_max, t.late_tenths_max)
        agg.highest_level = (
            t.highest_level if agg.highest_level is None else min(agg.highest_level, t.highest_level or 0)
        )
    for scope, d, s, n, k in conn.execute(
        "SELECT scope, dept, street, liaison, sum(n) FROM ledger_firsts "
        f"WHERE {where}{only} AND prev_day < %(first)s GROUP BY 1, 2, 3, 4",
        params,
    ):
        if scope == "d":
            depts[d].cases = int(k)
        else:
            liaisons[(d, s, n)].cases = int(k)
    return shown(depts, liaisons, repeated)


def rollup_state(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT timezone FROM rollup_state").fetchone()
    return row[0] if row else None


def public(entry: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as reports and exports show it."""
    return {k: v for k, v in entry.items() if k not in HIDDEN}
