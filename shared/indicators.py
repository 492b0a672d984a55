"""Department and street indicators per month: counts, rates, score, grade, 721 shares.
In shared/: sla writes the counters, the console (intake), `gridbus report` and sla's
commands read them.

Counters (Redis hash per month `sla:ind:YYYY-MM`, field `<scope>|<key>|<counter>`,
scope `dept` or `street`) are written by sla in the same transaction as the clock
change they come from, so each event counts once (services/sla/state.py) — except a
street's `registered`, which intake counts in the script that registers the case
(services/intake/lua/register.lua): the registration is intake's, and a second service
consuming every `case_registered` only to count it cost a queue hop per report:

- `registered`: a street's cases registered (intake, at registration); a department's
  cases received (its first order of a case);
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

- 满意率 satisfaction rate = (eval_satisfied + c × eval_basically_satisfied) / evaluations,
  c = SATISFACTION_BASIC_CREDIT (default 0.6); evaluations are the seventh step's ratings
  (`eval_<rating>` counters: the street's, and each department that resolved the case).

Score (0–100), weights w from GRADE_WEIGHTS (default on_time 0.4, closed 0.24,
no_rework 0.16, satisfaction 0.2) and penalty p = GRADE_ESCALATION_PENALTY (default 10)::

    score = 100 × Σ w_t × term_t / Σ w_t  −  p × escalation_rate,   clamped to [0, 100]
    terms: on_time_rate, closed_rate, 1 − rework_rate, satisfaction_rate

The sum runs over the terms that have data: without any evaluation in the month the
satisfaction term drops out and the other weights are scaled up (so the defaults give
exactly the former 50/30/20 of on-time, closed and no-rework). On-time with nothing
resolved counts 1 (0 when something breached), closed without registrations 0.

Where it comes from: the rates are the 专业部门 (department) indicators of digital urban
management evaluation — 按期处置率/按期结案率, 结案率, 返工率 and the public's 满意率 — as
used in the evaluation chapter of the national digital urban management standards
(CJ/T 292, GB/T 30428 family) and in the Qixing plan's "慢作为、不作为" accountability
(punctuality first). The weights and the escalation penalty are gridbus's own choice, not
taken from a published table: the district's 城市管理 office should confirm or replace
them (the settings above); tests/unit/test_grade_formula.py pins the formula. Grades
(docs/design.md §7): A ≥ 90, B ≥ 75, C ≥ 60, D ≥ 40, else E. A department or street
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
from shared.models import Mode721

COUNTERS = (
    "registered",
    "resolved",
    "resolved_on_time",
    "closed",
    "rework",
    "breaches",
    "escalations",
    "mode_service",
    "mode_management",
    "mode_enforcement",
    "on_site",
    "eval_satisfied",
    "eval_basically_satisfied",
    "eval_dissatisfied",
)
#: scopes kept for their 721 shares only (a patch or community is not graded)
SHARE_ONLY_SCOPES = ("community", "patch")
MODES = tuple(m.value for m in Mode721)
TARGET_721 = {"service": 0.7, "management": 0.2, "enforcement": 0.1}
GRADES = ((90.0, "A"), (75.0, "B"), (60.0, "C"), (40.0, "D"))
TERMS = ("on_time", "closed", "no_rework", "satisfaction")


@dataclass(frozen=True)
class GradeWeights:
    on_time: float = 0.4
    closed: float = 0.24
    no_rework: float = 0.16
    satisfaction: float = 0.2
    escalation_penalty: float = 10.0
    basic_credit: float = 0.6

    @classmethod
    def parse(cls, text: str, escalation_penalty: float = 10.0, basic_credit: float = 0.6) -> "GradeWeights":
        """`on_time=0.4,closed=0.24,...` (GRADE_WEIGHTS); unnamed terms weigh 0."""
        weights = dict.fromkeys(TERMS, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in weights:
                raise ValueError(f"GRADE_WEIGHTS: unknown term {name.strip()!r} (terms: {', '.join(TERMS)})")
            weights[name.strip()] = float(value)
            if weights[name.strip()] < 0:
                raise ValueError(f"GRADE_WEIGHTS: {name.strip()} must not be negative")
        if not any(weights.values()):
            raise ValueError("GRADE_WEIGHTS: at least one weight must be positive")
        return cls(**weights, escalation_penalty=escalation_penalty, basic_credit=basic_credit)

    @classmethod
    def from_settings(cls) -> "GradeWeights":
        from shared.config import get_settings

        s = get_settings()
        return cls.parse(s.grade_weights, s.grade_escalation_penalty, s.satisfaction_basic_credit)


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
    weights: GradeWeights | None = None  # None: from the settings

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
    def evaluations(self) -> int:
        return self.c("eval_satisfied") + self.c("eval_basically_satisfied") + self.c("eval_dissatisfied")

    def _weights(self) -> GradeWeights:
        return self.weights or GradeWeights.from_settings()

    @property
    def satisfaction_rate(self) -> float | None:
        credit = self._weights().basic_credit
        return _rate(self.c("eval_satisfied") + credit * self.c("eval_basically_satisfied"), self.evaluations)  # type: ignore[arg-type]

    @property
    def score(self) -> float | None:
        if self.scope in SHARE_ONLY_SCOPES:
            return None
        if not (self.c("registered") or self.c("resolved") or self.c("breaches")):
            return None
        w = self._weights()
        terms: dict[str, float | None] = {
            "on_time": self.on_time_rate if self.on_time_rate is not None else (0.0 if self.c("breaches") else 1.0),
            "closed": self.closed_rate if self.closed_rate is not None else 0.0,
            "no_rework": 1 - (self.rework_rate or 0.0),
            "satisfaction": self.satisfaction_rate,
        }
        used = {t: getattr(w, t) for t, v in terms.items() if v is not None and getattr(w, t) > 0}
        total = sum(used.values())
        base = sum(weight * terms[t] for t, weight in used.items()) / total if total else 0.0
        value = 100 * base - w.escalation_penalty * (self.escalation_rate or 0.0)
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
        out.update(
            on_time_rate=self.on_time_rate,
            closed_rate=self.closed_rate,
            rework_rate=self.rework_rate,
            escalation_rate=self.escalation_rate,
            satisfaction_rate=self.satisfaction_rate,
            score=self.score,
            grade=self.grade,
        )
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
    return period_of(datetime.now(tz), tz)


def period_of(at: datetime, tz: ZoneInfo) -> str:
    """The month (YYYY-MM, local time) an event that happened `at` counts in."""
    return at.astimezone(tz).strftime("%Y-%m")


def counter_field(scope: str, key: str, counter: str) -> str:
    """The field of one count in a month's hash (`keys.sla_indicators(period)`)."""
    return f"{scope}|{key}|{counter}"


def refresh_gauges(client: redis.Redis, tz: ZoneInfo, depts: Iterable[str] = (), streets: Iterable[str] = ()) -> int:
    """Export this month's indicators as Prometheus gauges (sla's /metrics). Counts of the
    known departments and streets read 0 before their first event; rates, score and grade
    exist only where they are defined."""
    rows = {(r.scope, r.key): r for r in load(client, current_period(tz))}
    for scope, codes in (("dept", depts), ("street", streets)):
        for code in codes:
            rows.setdefault((scope, code), Indicators(scope, code))
    gauges = (
        *metrics.SLA_MONTH_COUNTS.values(),
        *metrics.SLA_MONTH_RATIOS.values(),
        metrics.SLA_MONTH_SCORE,
        metrics.SLA_MONTH_RESOLVED_BY_MODE,
        metrics.SLA_MONTH_SHARE,
        metrics.SLA_GRADE,
    )
    for gauge in gauges:  # a new month starts empty: last month's rates must not linger
        gauge.clear()
    for row in rows.values():
        graded = row.scope in ("dept", "street")  # communities and patches keep a few counts, no rates
        for name, gauge in metrics.SLA_MONTH_COUNTS.items():
            if graded or name in row.counts:
                gauge.labels(row.scope, row.key).set(row.c(name))
        for mode, share in row.shares().items():
            metrics.SLA_MONTH_RESOLVED_BY_MODE.labels(row.scope, row.key, mode).set(row.c(f"mode_{mode}"))
            if share is not None:
                metrics.SLA_MONTH_SHARE.labels(row.scope, row.key, mode).set(share)
        if not graded:
            continue
        for name, gauge in metrics.SLA_MONTH_RATIOS.items():
            value = getattr(row, name)
            if value is not None:
                gauge.labels(row.scope, row.key).set(value)
        if row.score is not None:
            metrics.SLA_MONTH_SCORE.labels(row.scope, row.key).set(row.score)
            metrics.SLA_GRADE.labels(row.scope, row.key, row.grade).set(1)
    return len(rows)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
