"""Department and street indicators per month: counts, rates, score, grade, 721 shares.

Counters (Redis hash per month `sla:ind:YYYY-MM`, field `<scope>|<key>|<counter>`,
scope `dept` or `street`) are written by sla in the same transaction as the clock
change they come from, so each event counts once (services/sla/state.py):

- `registered`: a street's cases registered (case_registered); a department's cases
  received (its first order of a case);
- `resolved`, `resolved_on_time` (its handle clock had not breached), `mode_<721 mode>`:
  a department's resolve replies; a street's cases resolved;
- `closed` (verification passed), `rework` (verification failed → reopened: 返工);
- `breaches` (every missed deadline, escalation steps included), `escalations`;
- `on_site`: a street's, community's or patch's cases handled on site by their reporter
  (就地处置: registered resolved, never dispatched; they count as registered and resolved
  on time too). Communities and patches (scopes `community`, `patch`) keep only
  `resolved`, `on_site` and the mode counts: they have 721 shares but no grade.

A month is the local (Asia/Shanghai) calendar month in which the event happened.

Rates (0–1; a rate with a zero denominator is not defined and shown as "-"):

- 按期结案率 on-time rate = resolved_on_time / resolved
- 结案率 closed rate       = closed / registered       (capped at 1)
- 返工率 rework rate       = rework / resolved          (capped at 1)
- escalation rate         = escalations / registered   (capped at 1)

Score (0–100)::

    score = 100 × (0.5 × on_time_rate + 0.3 × closed_rate + 0.2 × (1 − rework_rate))
            − 10 × escalation_rate,   clamped to [0, 100]

Where it comes from: the three rates are the 专业部门 (department) indicators of
digital urban management evaluation — 按期处置率/按期结案率, 结案率 and 返工率, as used in
the evaluation chapter of the national digital urban management standards (CJ/T 292,
GB/T 30428 family) and in the Qixing plan's "慢作为、不作为" accountability (punctuality
first). The weights (50/30/20) and the escalation penalty are gridbus's own choice, not
taken from a published table: the district's 城市管理 office should confirm or replace
them. Grades (DESIGN §7): A ≥ 90, B ≥ 75, C ≥ 60, D ≥ 40, else E. A department or street
with nothing registered, resolved or breached in the month has no score.

721 shares: of resolutions by mode (service / management / enforcement), against the
plan's target 70 / 20 / 10 (%).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import redis

from shared import metrics
from shared import redis_keys as keys

COUNTERS = ("registered", "resolved", "resolved_on_time", "closed", "rework", "breaches", "escalations",
            "mode_service", "mode_management", "mode_enforcement", "on_site")
#: scopes kept for their 721 shares only (a patch or community is not graded)
SHARE_ONLY_SCOPES = ("community", "patch")
MODES = ("service", "management", "enforcement")
TARGET_721 = {"service": 0.7, "management": 0.2, "enforcement": 0.1}
GRADES = ((90.0, "A"), (75.0, "B"), (60.0, "C"), (40.0, "D"))
WEIGHTS = {"on_time": 0.5, "closed": 0.3, "no_rework": 0.2}
ESCALATION_PENALTY = 10.0


def grade_of(score: float | None) -> str:
    if score is None:
        return "-"
    for floor, grade in GRADES:
        if score >= floor:
            return grade
    return "E"


def _rate(num: int, den: int, cap: bool = False) -> float | None:
    if den <= 0:
        return None
    value = num / den
    return min(value, 1.0) if cap else value


@dataclass
class Indicators:
    scope: str
    key: str
    counts: dict[str, int] = field(default_factory=dict)

    def c(self, name: str) -> int:
        return int(self.counts.get(name, 0))

    @property
    def on_time_rate(self) -> float | None:
        return _rate(self.c("resolved_on_time"), self.c("resolved"))

    @property
    def closed_rate(self) -> float | None:
        return _rate(self.c("closed"), self.c("registered"), cap=True)

    @property
    def rework_rate(self) -> float | None:
        return _rate(self.c("rework"), self.c("resolved"), cap=True)

    @property
    def escalation_rate(self) -> float | None:
        return _rate(self.c("escalations"), self.c("registered"), cap=True)

    @property
    def score(self) -> float | None:
        if self.scope in SHARE_ONLY_SCOPES:
            return None
        if not (self.c("registered") or self.c("resolved") or self.c("breaches")):
            return None
        on_time = self.on_time_rate if self.on_time_rate is not None else (0.0 if self.c("breaches") else 1.0)
        closed = self.closed_rate if self.closed_rate is not None else 0.0
        rework = self.rework_rate or 0.0
        value = 100 * (WEIGHTS["on_time"] * on_time + WEIGHTS["closed"] * closed
                       + WEIGHTS["no_rework"] * (1 - rework)) - ESCALATION_PENALTY * (self.escalation_rate or 0.0)
        return round(max(0.0, min(100.0, value)), 1)

    @property
    def grade(self) -> str:
        return grade_of(self.score)

    def shares(self) -> dict[str, float | None]:
        total = sum(self.c(f"mode_{m}") for m in MODES)
        return {m: _rate(self.c(f"mode_{m}"), total) for m in MODES}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope, "key": self.key}
        out.update({k: self.c(k) for k in COUNTERS})
        out.update(on_time_rate=self.on_time_rate, closed_rate=self.closed_rate, rework_rate=self.rework_rate,
                   escalation_rate=self.escalation_rate, score=self.score, grade=self.grade)
        out.update({f"share_{m}": v for m, v in self.shares().items()})
        return out


def load(client: redis.Redis, period: str) -> list[Indicators]:
    raw = client.hgetall(keys.sla_indicators(period))
    by: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for f, v in raw.items():
        f = f.decode() if isinstance(f, bytes) else f
        scope, key, counter = f.split("|", 2)
        by[(scope, key)][counter] = int(v)
    return [Indicators(scope, key, counts) for (scope, key), counts in sorted(by.items())]


def current_period(tz: ZoneInfo) -> str:
    return datetime.now(tz).strftime("%Y-%m")


def refresh_gauges(client: redis.Redis, tz: ZoneInfo, depts: Iterable[str] = (), streets: Iterable[str] = ()) -> int:
    """Export this month's indicators as Prometheus gauges (sla's /metrics). Counts of the
    known departments and streets read 0 before their first event; rates, score and grade
    exist only where they are defined."""
    rows = {(r.scope, r.key): r for r in load(client, current_period(tz))}
    for scope, codes in (("dept", depts), ("street", streets)):
        for code in codes:
            rows.setdefault((scope, code), Indicators(scope, code))
    gauges = (*metrics.SLA_MONTH_COUNTS.values(), *metrics.SLA_MONTH_RATIOS.values(), metrics.SLA_MONTH_SCORE,
              metrics.SLA_MONTH_RESOLVED_BY_MODE, metrics.SLA_MONTH_SHARE, metrics.SLA_GRADE)
    for gauge in gauges:  # a new month starts empty: last month's rates must not linger
        gauge.clear()
    for row in rows.values():
        for name, gauge in metrics.SLA_MONTH_COUNTS.items():
            gauge.labels(row.scope, row.key).set(row.c(name))
        for name, gauge in metrics.SLA_MONTH_RATIOS.items():
            value = getattr(row, name)
            if value is not None:
                gauge.labels(row.scope, row.key).set(value)
        for mode, share in row.shares().items():
            metrics.SLA_MONTH_RESOLVED_BY_MODE.labels(row.scope, row.key, mode).set(row.c(f"mode_{mode}"))
            if share is not None:
                metrics.SLA_MONTH_SHARE.labels(row.scope, row.key, mode).set(share)
        if row.score is not None:
            metrics.SLA_MONTH_SCORE.labels(row.scope, row.key).set(row.score)
            metrics.SLA_GRADE.labels(row.scope, row.key, row.grade).set(1)
    return len(rows)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
