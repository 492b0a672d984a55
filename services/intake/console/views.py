"""What the console shows, computed from cases and indicators without nameko or HTTP:
the board, the triage queue, suspension requests, the league table and a case's map.

Everything here reads; nothing changes state (the console's actions call intake's API
endpoints, see services/intake/console/http.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from services.intake import dispatching
from shared.grid import GridRegistry
from shared.indicators import MODES, TARGET_721, Indicators, pct
from shared.models import Assignment, Case, CaseStatus

STATUS_LABELS = {
    CaseStatus.reported: "已上报",
    CaseStatus.registered: "已立案",
    CaseStatus.dispatched: "已派遣",
    CaseStatus.acknowledged: "已签收",
    CaseStatus.in_progress: "处置中",
    CaseStatus.resolved: "已处置待核查",
    CaseStatus.closed: "已结案",
    CaseStatus.rejected: "已退回",
    CaseStatus.reopened: "返工",
    CaseStatus.suspended: "挂起",
    CaseStatus.duplicate: "重复件",
    CaseStatus.cancelled: "已作废",
}
MODE_LABELS = {"service": "服务", "management": "管理", "enforcement": "执法"}
OUTCOME_LABELS = {"delivered": "已送达", "no_address": "无地址", "dead": "发送失败"}
NONE_DEPT = "none"  # registered, not yet dispatched


def local(dt: datetime | None, tz: ZoneInfo) -> str:
    """A moment in the district's time, e.g. `11-27 09:30`; the pages say the zone once."""
    return "" if dt is None else dt.astimezone(tz).strftime("%m-%d %H:%M")


def active(case: Case) -> list[Assignment]:
    return [a for a in case.assignments if a.active]


def overdue(a: Assignment, now: datetime) -> bool:
    """A deadline of this assignment has passed with its goal not reached."""
    if a.resolved_at is None and a.handle_due is not None and a.handle_due < now:
        return True
    return a.acknowledged_at is None and a.ack_due is not None and a.ack_due < now


def escalated(case: Case) -> bool:
    return any(e.actor == "sla" and e.note.startswith("escalated") for e in case.timeline)


def in_triage(case: Case) -> bool:
    """With the grid station, waiting to be dispatched by hand (resolved ones wait for verification)."""
    return case.status not in (CaseStatus.resolved, CaseStatus.closed) and dispatching.in_triage(case)


@dataclass
class CaseRow:
    case_id: str
    status: str
    status_label: str
    category: str
    description: str
    street: str
    grid: str
    depts: str
    due: str
    registered: str
    overdue: bool
    escalated: bool
    disputed: bool
    triage: bool
    suspension_request: str = ""


def row_of(case: Case, now: datetime, tz: ZoneInfo, names: "Names") -> CaseRow:
    act = active(case)
    dues = [a.handle_due for a in act if a.handle_due is not None and a.resolved_at is None]
    req = case.suspension_request
    return CaseRow(
        case_id=case.case_id,
        status=case.status.value,
        status_label=STATUS_LABELS[case.status],
        category=names.category(case.category),
        description=case.description[:60],
        street=names.grid.name_of(case.street) or case.street,
        grid=names.grid.name_of(case.grid) or case.grid,
        depts="、".join(names.dept(a.dept) for a in act) or "—",
        due=local(min(dues), tz) if dues else "",
        registered=local(case.registered_at, tz),
        overdue=any(overdue(a, now) for a in act),
        escalated=escalated(case),
        disputed=case.disputed,
        triage=in_triage(case),
        suspension_request=f"{names.dept(req.dept)}：{req.reason}" if req else "",
    )


@dataclass
class Names:
    """Codes → Chinese names for display."""

    grid: GridRegistry
    depts: dict[str, str]
    categories: dict[str, str]

    def dept(self, code: str) -> str:
        return self.depts.get(code, code)

    def category(self, code: str) -> str:
        name = self.categories.get(code)
        return f"{code} {name}" if name else code


@dataclass
class Cell:
    open: int = 0
    overdue: int = 0


@dataclass
class Board:
    now: str
    streets: list[tuple[str, str]]
    depts: list[tuple[str, str]]
    cells: dict[tuple[str, str], Cell]
    totals: dict[str, int]
    recent: list[CaseRow]
    street_totals: dict[str, Cell] = field(default_factory=dict)


def board(
    cases: Iterable[Case], now: datetime, tz: ZoneInfo, names: Names, street: str | None = None, recent: int = 12
) -> Board:
    """Open cases by street × department (a jointly dispatched case counts for each of its
    departments, one not yet dispatched under `未派遣`), and the tiles: open, overdue,
    escalated, triage, disputed, awaiting verification, suspension requests."""
    cells: dict[tuple[str, str], Cell] = {}
    totals = dict.fromkeys(("open", "overdue", "escalated", "triage", "disputed", "verify", "suspension"), 0)
    street_totals: dict[str, Cell] = {}
    rows: list[tuple[datetime, CaseRow]] = []
    depts_seen: set[str] = set()
    for case in cases:
        if street and case.street != street:
            continue
        row = row_of(case, now, tz, names)
        totals["open"] += 1
        totals["overdue"] += row.overdue
        totals["escalated"] += row.escalated
        totals["triage"] += row.triage
        totals["disputed"] += case.disputed
        totals["verify"] += case.status is CaseStatus.resolved
        totals["suspension"] += case.suspension_request is not None
        st = street_totals.setdefault(case.street, Cell())
        st.open += 1
        st.overdue += row.overdue
        receivers: list[Assignment | None] = [*active(case)] or [None]  # None: no department yet
        for a in receivers:
            dept = a.dept if a else NONE_DEPT
            depts_seen.add(dept)
            cell = cells.setdefault((case.street, dept), Cell())
            cell.open += 1
            cell.overdue += bool(a and overdue(a, now))
        rows.append((case.registered_at, row))
    streets = [(code, name) for code, name in names.grid.streets.items() if not street or code == street]
    order = [d for d in names.depts if d in depts_seen] + sorted(d for d in depts_seen if d not in names.depts)
    dept_cols = [(d, "未派遣" if d == NONE_DEPT else names.dept(d)) for d in order]
    rows.sort(key=lambda t: t[0], reverse=True)
    return Board(
        now=local(now, tz),
        streets=streets,
        depts=dept_cols,
        cells=cells,
        totals=totals,
        recent=[r for _, r in rows[:recent]],
        street_totals=street_totals,
    )


def triage_rows(
    cases: Iterable[Case], now: datetime, tz: ZoneInfo, names: Names, street: str | None = None
) -> dict[str, list[CaseRow]]:
    """The grid station's work: cases to dispatch by hand (triage, disputed), resolutions
    to verify, suspension requests to decide."""
    out: dict[str, list[CaseRow]] = {"triage": [], "verify": [], "suspension": []}
    for case in sorted(cases, key=lambda c: c.registered_at):
        if street and case.street != street:
            continue
        row = row_of(case, now, tz, names)
        if row.triage:
            out["triage"].append(row)
        if case.status is CaseStatus.resolved:
            out["verify"].append(row)
        if case.suspension_request is not None:
            out["suspension"].append(row)
    return out


@dataclass
class LeagueRow:
    key: str
    name: str
    registered: int
    resolved: int
    on_time: str
    closed: str
    rework: str
    breaches: int
    escalations: int
    score: str
    grade: str
    shares: dict[str, str]
    sort_score: float


def league(rows: Iterable[Indicators], scope: str, names: dict[str, str]) -> list[LeagueRow]:
    """One month's league of a scope (`dept` or `street`), best score first."""
    out = []
    for r in rows:
        if r.scope != scope:
            continue
        shares = r.shares()
        out.append(
            LeagueRow(
                key=r.key,
                name=names.get(r.key, r.key),
                registered=r.c("registered"),
                resolved=r.c("resolved"),
                on_time=pct(r.on_time_rate),
                closed=pct(r.closed_rate),
                rework=pct(r.rework_rate),
                breaches=r.c("breaches"),
                escalations=r.c("escalations"),
                score="-" if r.score is None else f"{r.score:.1f}",
                grade=r.grade,
                shares={m: pct(shares[m]) for m in MODES},
                sort_score=-1.0 if r.score is None else r.score,
            )
        )
    return sorted(out, key=lambda x: (-x.sort_score, x.key))


TARGET_721_TEXT = " / ".join(f"{MODE_LABELS[m]} {round(100 * TARGET_721[m])}%" for m in MODES)


@dataclass
class MapView:
    width: int
    height: int
    boundary: str
    patches: list[dict[str, Any]]
    x: float
    y: float
    inside: bool


def map_of(case: Case, grid: GridRegistry, width: int = 420, height: int = 300, span: float | None = None) -> MapView:
    """The district outline, the patches that have polygons (the case's highlighted) and
    the report's position, projected plainly (lon → x, lat → y) into an SVG box: no map
    tiles, the console works without network. `span` (degrees): only the neighbourhood,
    that far around the report (and its whole patch); None: the whole district."""
    ring = list(grid.boundary.exterior.coords)
    outlines = grid.outlines()
    lat, lon = case.location.lat, case.location.lon
    if span is None:
        lons, lats = [p[0] for p in ring] + [lon], [p[1] for p in ring] + [lat]
    else:
        mine = [pt for code, pts in outlines if code == case.grid for pt in pts]
        lons = [lon - span, lon + span] + [p[0] for p in mine]
        lats = [lat - span * 0.7, lat + span * 0.7] + [p[1] for p in mine]
    lo_x, hi_x, lo_y, hi_y = min(lons), max(lons), min(lats), max(lats)
    pad = 10
    s = min((width - 2 * pad) / ((hi_x - lo_x) or 1e-6), (height - 2 * pad) / ((hi_y - lo_y) or 1e-6))

    def xy(x_lon: float, y_lat: float) -> tuple[float, float]:
        return round(pad + (x_lon - lo_x) * s, 1), round(pad + (hi_y - y_lat) * s, 1)

    def path(points: list[tuple[float, float]]) -> str:
        return " ".join(f"{x},{y}" for x, y in (xy(p_lon, p_lat) for p_lon, p_lat in points))

    patches = [{"code": code, "points": path(points), "mine": code == case.grid} for code, points in outlines]
    x, y = xy(lon, lat)
    return MapView(
        width, round(2 * pad + (hi_y - lo_y) * s) or height, path(ring), patches, x, y, grid.in_district(lat, lon)
    )
