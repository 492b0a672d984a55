"""The joint-meeting agenda (网格联席会议, district plan §四(三)1): what a street's
commander takes into the meeting of the grid's departments on recurring and difficult
problems, from the cases of the street registered in a period.

Sections:
- **hot spots** — the same category in the same patch at least MEETING_HOTSPOT_MIN times
  (duplicates and cancelled cases not counted: a hot spot is a problem that keeps coming
  back, not one problem reported many times);
- **disputed and repeatedly rejected** — 争议件, or rejected by two or more departments;
- **escalated past the street** — cases whose deadline escalation reached the district
  or the city (level 2 or 1), or that the district took over;
- **overdue by department** — assignments resolved after their handling deadline, or
  still open past it;
- **rework** — cases reopened after a failed verification or a dissatisfied evaluation;
- **门前三包 repeat offenders** — reports carrying a `merchant_id` attribute, merchants
  with at least MEETING_MERCHANT_MIN of them.

Plain code over `Case` documents; rendered as Markdown, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Callable, Iterable

from shared.lifecycle import FINAL_STATES
from shared.models import Case, CaseStatus

_ESCALATED = re.compile(r"escalated L(\d) → L(\d)")
_TAKEN_OVER = re.compile(r"^take-over at L(\d)")


@dataclass
class HotSpot:
    grid: str
    patch: str
    category: str
    category_name: str
    count: int
    open: int
    cases: list[str]


@dataclass
class Flagged:
    case_id: str
    category: str
    grid: str
    status: str
    detail: str


@dataclass
class Overdue:
    dept: str
    dept_name: str
    assignments: int
    overdue: int
    still_open: int
    hours_late_max: float
    cases: list[str]


@dataclass
class Merchant:
    merchant_id: str
    count: int
    categories: list[str]
    patches: list[str]
    cases: list[str]


@dataclass
class Agenda:
    street: str
    street_name: str
    start: datetime
    end: datetime
    cases: int
    hot_spot_min: int
    merchant_min: int
    hot_spots: list[HotSpot] = field(default_factory=list)
    disputed: list[Flagged] = field(default_factory=list)
    escalated: list[Flagged] = field(default_factory=list)
    overdue: list[Overdue] = field(default_factory=list)
    rework: list[Flagged] = field(default_factory=list)
    merchants: list[Merchant] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d


Names = Callable[[str], str]


def build(
    cases: Iterable[Case],
    street: str,
    street_name: str,
    start: datetime,
    end: datetime,
    now: datetime,
    hot_spot_min: int = 3,
    merchant_min: int = 2,
    category_name: Names = lambda c: c,
    grid_name: Names = lambda g: g,
    dept_name: Names = lambda d: d,
) -> Agenda:
    mine = [c for c in cases if c.grid.startswith(street) and start <= c.registered_at < end]
    agenda = Agenda(street, street_name, start, end, len(mine), hot_spot_min, merchant_min)
    counted = [c for c in mine if c.status not in (CaseStatus.duplicate, CaseStatus.cancelled)]

    spots: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for c in counted:
        spots[(c.grid, c.category)].append(c)
    for (grid, category), group in spots.items():
        if len(group) >= hot_spot_min:
            agenda.hot_spots.append(
                HotSpot(
                    grid,
                    grid_name(grid),
                    category,
                    category_name(category),
                    len(group),
                    sum(c.status not in FINAL_STATES for c in group),
                    [c.case_id for c in group],
                )
            )
    agenda.hot_spots.sort(key=lambda h: (-h.count, h.grid, h.category))

    for c in counted:
        if c.disputed or len(c.rejected_by) >= 2:
            kind = "争议件" if c.disputed else "rejected repeatedly"
            agenda.disputed.append(
                Flagged(
                    c.case_id,
                    c.category,
                    c.grid,
                    c.status.value,
                    f"{kind}: rejected by {', '.join(c.rejected_by) or '—'}",
                )
            )
        top = _highest_level(c)
        if top is not None and top <= 2:
            depts = sorted({a.dept for a in c.assignments})
            agenda.escalated.append(
                Flagged(
                    c.case_id,
                    c.category,
                    c.grid,
                    c.status.value,
                    f"reached L{top} ({'city' if top == 1 else 'district'}); departments {', '.join(depts)}",
                )
            )
        if c.rework_count:
            depts = sorted({a.dept for a in c.assignments if a.resolved_at is not None})
            agenda.rework.append(
                Flagged(
                    c.case_id,
                    c.category,
                    c.grid,
                    c.status.value,
                    f"reworked {c.rework_count}×; resolved by {', '.join(depts) or '—'}",
                )
            )

    late: dict[str, list[tuple[str, float, bool]]] = defaultdict(list)
    total: Counter[str] = Counter()
    for c in counted:
        for a in c.assignments:
            if a.handle_due is None:
                continue
            total[a.dept] += 1
            done = a.resolved_at
            if done is None and (not a.active or c.status in FINAL_STATES):
                continue  # closed before it was resolved (rejected, re-dispatched, cancelled)
            finish = done or now
            if finish > a.handle_due:
                late[a.dept].append((c.case_id, (finish - a.handle_due).total_seconds() / 3600, done is None))
    for dept, items in late.items():
        agenda.overdue.append(
            Overdue(
                dept,
                dept_name(dept),
                total[dept],
                len(items),
                sum(o for _, _, o in items),
                round(max(h for _, h, _ in items), 1),
                sorted({i for i, _, _ in items}),
            )
        )
    agenda.overdue.sort(key=lambda o: (-o.overdue, o.dept))

    merchants: dict[str, list[Case]] = defaultdict(list)
    for c in mine:
        m = c.attributes.get("merchant_id")
        if m and c.status is not CaseStatus.cancelled:
            merchants[m].append(c)
    for m, group in merchants.items():
        if len(group) >= merchant_min:
            agenda.merchants.append(
                Merchant(
                    m,
                    len(group),
                    sorted({category_name(c.category) for c in group}),
                    sorted({grid_name(c.grid) for c in group}),
                    [c.case_id for c in group],
                )
            )
    agenda.merchants.sort(key=lambda m: (-m.count, m.merchant_id))
    return agenda


def _highest_level(case: Case) -> int | None:
    """The highest grid level (smallest number) its escalation reached, or the level the
    district took it over at."""
    levels = []
    for t in case.timeline:
        for m in _ESCALATED.finditer(t.note):
            levels.append(int(m.group(2)))
        taken = _TAKEN_OVER.match(t.note)
        if taken:
            levels.append(int(taken.group(1)))
    return min(levels) if levels else None


# --------------------------------------------------------------------------- rendering


def markdown(a: Agenda, tz: tzinfo) -> str:
    start, end = a.start.astimezone(tz), a.end.astimezone(tz)
    out = [
        f"# 网格联席会议议题 · {a.street_name}（{a.street}）",
        "",
        f"{start:%Y-%m-%d} – {end:%Y-%m-%d}（不含） · {a.cases} cases registered in the street",
        "",
    ]

    def table(title: str, head: list[str], rows: list[list[Any]], empty: str) -> None:
        out.append(f"## {title}")
        out.append("")
        if not rows:
            out.extend([empty, ""])
            return
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            out.append("| " + " | ".join(str(x) for x in r) + " |")
        out.append("")

    table(
        f"1. Recurring hot spots (same category, same patch, ≥ {a.hot_spot_min}×)",
        ["patch", "category", "cases", "still open", "case ids"],
        [
            [f"{h.patch} ({h.grid})", f"{h.category_name} ({h.category})", h.count, h.open, ", ".join(h.cases)]
            for h in a.hot_spots
        ],
        "None.",
    )
    table(
        "2. Disputed (争议件) and repeatedly rejected",
        ["case", "category", "grid", "status", "why"],
        [[f.case_id, f.category, f.grid, f.status, f.detail] for f in a.disputed],
        "None.",
    )
    table(
        "3. Escalated past the street",
        ["case", "category", "grid", "status", "how far"],
        [[f.case_id, f.category, f.grid, f.status, f.detail] for f in a.escalated],
        "None.",
    )
    table(
        "4. Overdue by department",
        ["department", "assignments", "overdue", "still open", "max hours late", "cases"],
        [
            [f"{o.dept_name} ({o.dept})", o.assignments, o.overdue, o.still_open, o.hours_late_max, ", ".join(o.cases)]
            for o in a.overdue
        ],
        "None.",
    )
    table(
        "5. Rework (返工)",
        ["case", "category", "grid", "status", "rework"],
        [[f.case_id, f.category, f.grid, f.status, f.detail] for f in a.rework],
        "None.",
    )
    table(
        f"6. 门前三包 repeat offenders (merchant_id, ≥ {a.merchant_min}×)",
        ["merchant", "reports", "categories", "patches", "cases"],
        [
            [m.merchant_id, m.count, "、".join(m.categories), "、".join(m.patches), ", ".join(m.cases)]
            for m in a.merchants
        ],
        "None.",
    )
    return "\n".join(out).rstrip() + "\n"


CSV_FIELDS = ["section", "key", "name", "count", "status", "detail", "cases"]


def to_csv(a: Agenda) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for h in a.hot_spots:
        w.writerow(
            [
                "hot_spot",
                f"{h.grid}/{h.category}",
                f"{h.patch} {h.category_name}",
                h.count,
                f"{h.open} open",
                "",
                " ".join(h.cases),
            ]
        )
    for section, items in (("disputed", a.disputed), ("escalated", a.escalated), ("rework", a.rework)):
        for f in items:
            w.writerow([section, f.case_id, f.category, 1, f.status, f.detail, f.case_id])
    for o in a.overdue:
        w.writerow(
            [
                "overdue",
                o.dept,
                o.dept_name,
                o.overdue,
                f"{o.still_open} open",
                f"of {o.assignments}; max {o.hours_late_max} h late",
                " ".join(o.cases),
            ]
        )
    for m in a.merchants:
        w.writerow(
            ["merchant", m.merchant_id, "、".join(m.categories), m.count, "", "、".join(m.patches), " ".join(m.cases)]
        )
    return buf.getvalue()


def parse_period(start: str, end: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """`from`/`to`: dates (local; `to` inclusive) or ISO date-times. ValueError naming the field."""
    from datetime import date, time, timedelta

    from shared.models import LATEST, clamp_instant

    def one(text: str, name: str, is_end: bool) -> datetime:
        try:
            if len(text.strip()) == 10:
                d = date.fromisoformat(text.strip())
                if is_end and d == date.max:
                    return LATEST
                return clamp_instant(datetime.combine(d + timedelta(days=1) if is_end else d, time(), tz))
            value = datetime.fromisoformat(text.strip())
            return clamp_instant(value if value.tzinfo else value.replace(tzinfo=tz))  # year 1/9999: no overflow
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a date (2026-11-01) or an ISO date-time") from None

    lo, hi = one(start, "from", False), one(end, "to", True)
    return lo, max(hi, lo)  # `to` before `from`: an empty period, not an error


def agenda_for(store: Any, street: str, start: datetime, end: datetime, now: datetime | None = None) -> Agenda:
    """The agenda from intake's store, with names from the catalog, grid and departments."""
    from services.intake.reports.cases import cases_between
    from shared.catalog import load_catalog
    from shared.config import get_settings
    from shared.departments import load_departments
    from shared.grid import load_grid
    from shared.models import utcnow

    settings = get_settings()
    catalog, grid = load_catalog(), load_grid()
    if street not in grid.streets:
        raise ValueError(f"street: {street!r} is not a street of the grid ({', '.join(grid.streets)})")
    depts = {d.code: d.name for d in load_departments()}

    def category_name(code: str) -> str:
        c = catalog.get(code)
        return c.name if c else code

    return build(
        cases_between(store, start, end),
        street,
        grid.streets[street],
        start,
        end,
        now or utcnow(),
        settings.meeting_hotspot_min,
        settings.meeting_merchant_min,
        category_name,
        lambda g: grid.name_of(g) or g,
        lambda d: depts.get(d, d),
    )
