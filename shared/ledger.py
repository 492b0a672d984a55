"""The accountability ledger (问责台账): every missed deadline, kept in Redis and — as its
`deadline_breached` event — in the `gridbus.audit` stream. sla writes it (services/sla/store.py,
in the same script that records the breach); this module reads it, for sla's CLI and for
intake's `GET /v1/accountability`, so neither service imports the other.

An entry: case, order, department, its liaison for the street, street, grid cell,
category, grid level whose limit passed, which clock (acknowledge / handle /
escalation, with the escalation step), the limit, when it was due, when it was
breached, and — once the department finally acknowledged/resolved — when it was done.
How late = (done, or now while still open) − due.

`summary` groups entries by department and by (department, liaison) for the
discipline-inspection referral (纪检监察移交): who missed deadlines repeatedly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis

from shared import redis_keys as keys
from shared.models import LATEST, clamp_instant

REPEATED = 2  # breaches in the period from which a department/liaison is listed for referral


@dataclass(frozen=True)
class Period:
    start: float
    end: float

    @classmethod
    def month(cls, month: str, tz: ZoneInfo) -> "Period":
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=tz)
        nxt = (first + timedelta(days=32)).replace(day=1)
        return cls(first.timestamp(), nxt.timestamp())

    @classmethod
    def parse(cls, start: str | None, end: str | None, tz: ZoneInfo) -> "Period":
        """`from`/`to` as dates (local, `to` inclusive) or ISO date-times; default: this month."""
        now = datetime.now(tz)
        lo = _instant(start, tz, False) if start else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        hi = _instant(end, tz, True) if end else (lo + timedelta(days=32)).replace(day=1)
        hi = max(hi, lo)  # `to` before `from`: an empty period, not an error
        return cls(lo.timestamp(), hi.timestamp())


def _instant(text: str, tz: ZoneInfo, end: bool) -> datetime:
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            if end and d == date.max:
                return LATEST
            value = datetime.combine(d + timedelta(days=1) if end else d, time(), tz)
        else:
            value = datetime.fromisoformat(text)
            if value.tzinfo is None:
                value = value.replace(tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (2026-11-01) or an ISO date-time") from exc
    return clamp_instant(value)  # year 1 or 9999: the ends of time, not an overflow


def entries(
    client: redis.Redis, period: Period, dept: str | None = None, street: str | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    ids = cast(list[str], client.zrangebyscore(keys.sla_ledger_by_time(), period.start, f"({period.end}"))
    if not ids:
        return []
    raws = client.hmget(keys.sla_ledger(), ids)
    ended = client.hmget(keys.sla_ledger_ended(), ids)
    now = datetime.now().timestamp() if now is None else now
    out = []
    for raw, done in zip(raws, ended, strict=True):
        if not raw:
            continue
        e = json.loads(raw)
        if dept and e["dept"] != dept:
            continue
        if street and not (e["street"] == street or e["grid"].startswith(street)):
            continue
        e["done"] = float(done) if done else None
        e["open"] = done is None
        e["late_seconds"] = late_tenths(e["done"] or now, e["due"]) / 10
        out.append(e)
    return out


def late_tenths(until: float, due: float) -> int:
    """How late, in whole tenths of a second (0 if in time). Integers, so that a sum over a
    year is exact in Python and in SQL alike; the float steps (−, ×10, round half to
    even) are the ones PostgreSQL's float8 arithmetic and round() do
    (services/archiver/rollup.py computes the same in SQL)."""
    return max(0, round((until - due) * 10))


@dataclass
class Tally:
    """One group's figures before they are shown (summable: a day's, a month's)."""

    breaches: int = 0
    cases: int = 0
    acknowledge: int = 0
    handle: int = 0
    escalation: int = 0
    still_open: int = 0
    late_tenths: int = 0
    late_tenths_max: int = 0
    highest_level: int | None = None  # the lowest level number (L1 is the highest)
    # orders liaisons tied on breaches, department and street: the first entry's position
    # in the entries (summary), its (breached_at, id) in the roll-ups — the same order, as
    # entries come sorted by both
    first: Any = None

    def add(self, e: dict[str, Any]) -> None:
        late = round(e["late_seconds"] * 10)  # the tenths late_tenths gave (exact: k/10 × 10 rounds to k)
        self.breaches += 1
        self.acknowledge += e["clock"] == "acknowledge"
        self.handle += e["clock"] == "handle"
        self.escalation += e["clock"] == "escalation"
        self.still_open += bool(e["open"])
        self.late_tenths += late
        self.late_tenths_max = max(self.late_tenths_max, late)
        self.highest_level = e["level"] if self.highest_level is None else min(self.highest_level, e["level"])

    def shown(self, repeated: int) -> dict[str, Any]:
        return {
            "breaches": self.breaches,
            "cases": self.cases,
            "acknowledge": self.acknowledge,
            "handle": self.handle,
            "escalation": self.escalation,
            "still_open": self.still_open,
            "late_hours_total": round(self.late_tenths / 36000, 2),
            "late_hours_max": round(self.late_tenths_max / 36000, 2),
            "highest_level": self.highest_level,
            "referral": self.breaches >= repeated,
        }


def shown(
    depts: dict[str, Tally], liaisons: dict[tuple[str, str, str], Tally], repeated: int = REPEATED
) -> dict[str, list[dict[str, Any]]]:
    """The summary of tallied groups: departments by breaches, then name; liaisons by
    breaches, department, street, then which came first."""
    d_rows = sorted(depts.items(), key=lambda kv: (-kv[1].breaches, kv[0]))
    l_rows = sorted(liaisons.items(), key=lambda kv: (-kv[1].breaches, kv[0][0], kv[0][1], kv[1].first))
    return {
        "departments": [{"dept": d, **t.shown(repeated)} for d, t in d_rows],
        "liaisons": [{"dept": d, "street": s, "liaison": n, **t.shown(repeated)} for (d, s, n), t in l_rows],
    }


def summary(rows: list[dict[str, Any]], repeated: int = REPEATED) -> dict[str, list[dict[str, Any]]]:
    """Entries grouped by department and by (department, street, liaison) for the
    discipline-inspection referral. services/reports.ledger_summary gives the same from
    the archive's roll-ups."""
    by_dept: dict[str, Tally] = defaultdict(Tally)
    by_liaison: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
    dept_cases: dict[str, set[str]] = defaultdict(set)
    liaison_cases: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for i, e in enumerate(rows):
        lkey = (e["dept"], e["street"], e["liaison"])
        by_dept[e["dept"]].add(e)
        by_liaison[lkey].add(e)
        if by_liaison[lkey].first is None:
            by_liaison[lkey].first = i
        dept_cases[e["dept"]].add(e["case_id"])
        liaison_cases[lkey].add(e["case_id"])
    for dept, t in by_dept.items():
        t.cases = len(dept_cases[dept])
    for lkey, t in by_liaison.items():
        t.cases = len(liaison_cases[lkey])
    return shown(by_dept, by_liaison, repeated)
