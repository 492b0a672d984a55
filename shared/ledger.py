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
        e["late_seconds"] = round(max(0.0, (e["done"] or now) - e["due"]), 1)
        out.append(e)
    return out


def summary(rows: list[dict[str, Any]], repeated: int = REPEATED) -> dict[str, list[dict[str, Any]]]:
    by_dept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_liaison: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in rows:
        by_dept[e["dept"]].append(e)
        by_liaison[(e["dept"], e["street"], e["liaison"])].append(e)

    def agg(items: list[dict[str, Any]]) -> dict[str, Any]:
        late = [e["late_seconds"] for e in items]
        return {
            "breaches": len(items),
            "cases": len({e["case_id"] for e in items}),
            "acknowledge": sum(e["clock"] == "acknowledge" for e in items),
            "handle": sum(e["clock"] == "handle" for e in items),
            "escalation": sum(e["clock"] == "escalation" for e in items),
            "still_open": sum(e["open"] for e in items),
            "late_hours_total": round(sum(late) / 3600, 2),
            "late_hours_max": round(max(late) / 3600, 2),
            "highest_level": min(e["level"] for e in items),
            "referral": len(items) >= repeated,
        }

    depts = [{"dept": d, **agg(v)} for d, v in by_dept.items()]
    liaisons = [{"dept": d, "street": s, "liaison": n, **agg(v)} for (d, s, n), v in by_liaison.items()]
    depts.sort(key=lambda r: (-r["breaches"], r["dept"]))
    liaisons.sort(key=lambda r: (-r["breaches"], r["dept"], r["street"]))
    return {"departments": depts, "liaisons": liaisons}
