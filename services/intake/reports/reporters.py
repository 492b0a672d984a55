"""Per-reporter figures of a month (`gridbus report reporters --month YYYY-MM`): what the
plan's volunteer and part-time helper incentive (志愿者奖励机制) is counted on.

For each reporter (grid officer, part-time helper, citizen; an Open311 client appears as
its API key): `accepted` — reports registered as cases (not cancelled as invalid);
`handled_on_site` — of those, solved on the spot by the reporter (就地处置), by 721 mode;
`duplicates` — reports linked to an open case nearby (registered, not dispatched again);
`closed` — cases closed after verification. A month is the local calendar month of
registration.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

from shared.models import Case, CaseStatus

FIELDS = (
    "reporter_id",
    "role",
    "accepted",
    "handled_on_site",
    "on_site_service",
    "on_site_management",
    "on_site_enforcement",
    "duplicates",
    "closed",
    "cancelled",
)


@dataclass
class ReporterFigures:
    reporter_id: str
    role: str
    accepted: int = 0
    handled_on_site: int = 0
    on_site_service: int = 0
    on_site_management: int = 0
    on_site_enforcement: int = 0
    duplicates: int = 0
    closed: int = 0
    cancelled: int = 0
    cases: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("cases")
        return d


def figures(cases: Iterable[Case]) -> list[ReporterFigures]:
    """Figures per reporter, most accepted first."""
    by: dict[str, ReporterFigures] = {}
    for case in cases:
        f = by.get(case.reporter_id)
        if f is None:
            f = by[case.reporter_id] = ReporterFigures(case.reporter_id, case.reporter_role.value)
        f.cases.append(case.case_id)
        if case.status is CaseStatus.cancelled:
            f.cancelled += 1
            continue
        f.accepted += 1
        if case.handled_on_site is not None:
            f.handled_on_site += 1
            setattr(
                f,
                f"on_site_{case.handled_on_site.mode.value}",
                getattr(f, f"on_site_{case.handled_on_site.mode.value}") + 1,
            )
        if case.status is CaseStatus.duplicate:
            f.duplicates += 1
        if case.status is CaseStatus.closed:
            f.closed += 1
    return sorted(by.values(), key=lambda f: (-f.accepted, -f.handled_on_site, f.reporter_id))


def totals(rows: list[ReporterFigures]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        for k, v in r.row().items():
            if isinstance(v, int):
                out[k] += v
    return dict(out)
