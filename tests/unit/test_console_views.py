"""What the console shows: the board's counts, the triage queue, the league, the map and
the form → API body mapping (no broker, no browser)."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from werkzeug.datastructures import MultiDict

from services.intake.console import views
from services.intake.console.http import _safe_next, action_body, error_text
from shared.grid import load_grid
from shared.indicators import Indicators
from shared.models import Assignment, Case, CaseStatus, Location, SuspensionRequest, TimelineEntry

NOW = datetime(2026, 11, 27, 8, tzinfo=timezone.utc)
TZ = ZoneInfo("Asia/Shanghai")
GRID = load_grid()
NAMES = views.Names(
    grid=GRID,
    depts={"lighting": "照明", "station": "城市管理工作站", "market": "市场监管"},
    categories={"01037": "路灯"},
)


def case(
    n: int,
    depts: list[str],
    street: str = "450305001",
    status: CaseStatus = CaseStatus.dispatched,
    handle_due_h: float = 2,
    **over: object,
) -> Case:
    at = NOW - timedelta(hours=n)
    grid = street + "001001"
    c = Case(
        case_id=f"450305-20261127-{n:06d}",
        report_id=f"r{n}",
        correlation_id="r",
        status=status,
        category="01037",
        severity="normal",
        description="路灯不亮",
        location=Location(lat=25.28, lon=110.312),
        grid=grid,
        street=street,
        reporter_id="w",
        reporter_role="grid_officer",
        observed_at=at,
        registered_at=at,
        updated_at=at,
        assignments=[
            Assignment(
                dept=d,
                street=street,
                level=3,
                order_id=f"{n}/1/{d}",
                dispatched_at=at,
                acknowledged_at=at,
                handle_due=NOW + timedelta(hours=handle_due_h),
            )
            for d in depts
        ],
    )
    return c.model_copy(update=over)


def test_board_counts_by_street_and_department_with_overdue_and_tiles() -> None:
    escalated = case(
        3,
        ["lighting"],
        handle_due_h=-1,
        timeline=[TimelineEntry(at=NOW, actor="sla", action="escalate", note="escalated L3 → L2 (step 1)")],
    )
    cases = [
        case(1, ["lighting"]),
        case(2, ["lighting", "market"]),
        escalated,
        case(4, ["station"]),
        case(5, ["station"], disputed=True),
        case(6, [], status=CaseStatus.registered),
        case(7, ["market"], street="450305003", status=CaseStatus.resolved),
        case(
            8,
            ["lighting"],
            suspension_request=SuspensionRequest(dept="lighting", reason="等配件", requested_at=NOW, reply_id="x"),
        ),
    ]
    b = views.board(cases, NOW, TZ, NAMES)
    assert b.totals == {
        "open": 8,
        "overdue": 1,
        "escalated": 1,
        "triage": 2,
        "disputed": 1,
        "verify": 1,
        "suspension": 1,
    }
    assert b.cells[("450305001", "lighting")].open == 4 and b.cells[("450305001", "lighting")].overdue == 1
    assert b.cells[("450305001", "market")].open == 1 and b.cells[("450305003", "market")].open == 1
    assert b.cells[("450305001", views.NONE_DEPT)].open == 1
    assert b.street_totals["450305001"].open == 7
    assert [d for d, _ in b.depts][:3] == ["lighting", "station", "market"]  # departments.yaml order
    assert dict(b.depts)[views.NONE_DEPT] == "未派遣"
    assert b.recent[0].case_id.endswith("000001")  # newest first
    assert b.now == "11-27 16:00"  # district time


def test_a_station_sees_its_street_only() -> None:
    b = views.board(
        [case(1, ["lighting"]), case(2, ["lighting"], street="450305003")], NOW, TZ, NAMES, street="450305003"
    )
    assert b.totals["open"] == 1 and [s for s, _ in b.streets] == ["450305003"]


def test_triage_queue_verification_and_suspension_lists() -> None:
    q = views.triage_rows(
        [
            case(1, ["station"]),
            case(2, ["station"], status=CaseStatus.resolved),
            case(3, ["lighting"], status=CaseStatus.resolved),
            case(
                4,
                ["lighting"],
                suspension_request=SuspensionRequest(dept="lighting", reason="雨天", requested_at=NOW, reply_id="y"),
            ),
        ],
        NOW,
        TZ,
        NAMES,
    )
    assert [r.case_id[-1] for r in q["triage"]] == ["1"]  # a resolved one waits for verification instead
    assert [r.case_id[-1] for r in q["verify"]] == ["3", "2"]  # oldest first
    assert q["suspension"][0].suspension_request == "照明：雨天"


def test_league_sorted_by_score_with_721_shares() -> None:
    rows = [
        Indicators(
            "dept",
            "lighting",
            {
                "registered": 10,
                "resolved": 10,
                "resolved_on_time": 10,
                "closed": 10,
                "mode_service": 7,
                "mode_management": 2,
                "mode_enforcement": 1,
            },
        ),
        Indicators("dept", "market", {"registered": 4, "resolved": 4, "resolved_on_time": 1, "breaches": 3}),
        Indicators("dept", "water", {}),
        Indicators("street", "450305001", {"registered": 3}),
    ]
    league = views.league(rows, "dept", {"lighting": "照明"})
    assert [r.key for r in league] == ["lighting", "market", "water"]
    top = league[0]
    assert (top.name, top.score, top.grade, top.on_time) == ("照明", "100.0", "A", "100.0%")
    assert top.shares == {"service": "70.0%", "management": "20.0%", "enforcement": "10.0%"}
    assert (league[2].score, league[2].grade) == ("-", "-")  # nothing happened: no grade
    assert [r.key for r in views.league(rows, "street", {})] == ["450305001"]


def test_map_puts_the_report_inside_its_highlighted_patch() -> None:
    c = case(1, ["lighting"]).model_copy(update={"grid": "450305001001001"})
    m = views.map_of(c, GRID)
    mine = [p for p in m.patches if p["mine"]]
    assert m.inside and len(mine) == 1
    xs = [float(pt.split(",")[0]) for pt in mine[0]["points"].split()]
    ys = [float(pt.split(",")[1]) for pt in mine[0]["points"].split()]
    assert min(xs) <= m.x <= max(xs) and min(ys) <= m.y <= max(ys)
    assert 0 < m.x < m.width and 0 < m.y < m.height


def test_forms_become_the_api_bodies() -> None:
    form = MultiDict([("form_id", "f1"), ("dept", "municipal"), ("dept", ""), ("note", " 派市政 "), ("level", "3")])
    assert action_body("dispatch", form) == {
        "dispatch_id": "f1",
        "departments": ["municipal"],
        "note": "派市政",
        "level": 3,
    }
    assert action_body("verification", MultiDict({"result": "pass", "verifier": "黄"})) == {
        "result": "pass",
        "note": "",
        "verifier": "黄",
    }
    assert action_body("suspension", MultiDict({"decision": "deny", "approver": "莫"}))["decision"] == "deny"
    assert error_text({"errors": [{"field": "note", "message": "too short"}]}) == "note too short"
    assert error_text({"error": "illegal_transition", "message": "closed"}) == "closed"


def test_login_redirects_stay_inside_the_console() -> None:
    assert _safe_next("/console/cases/1") == "/console/cases/1"
    for bad in ("https://evil.example/", "//evil.example", "/v1/cases", None, "/console\\@evil"):
        assert _safe_next(bad) == "/console/board"


def test_the_neighbourhood_map_centres_the_report_and_holds_its_patch() -> None:
    c = case(1, ["lighting"]).model_copy(update={"grid": "450305001001001"})
    m = views.map_of(c, GRID, 420, 300, span=0.006)
    assert abs(m.x - 210) < 15 and abs(m.y - m.height / 2) < 15
    mine = next(p for p in m.patches if p["mine"])
    for pt in mine["points"].split():
        x, y = map(float, pt.split(","))
        assert 0 <= x <= m.width and 0 <= y <= m.height
