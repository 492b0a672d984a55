"""The operations centre's backlog: open cases by street, department, level and age."""

from datetime import datetime, timedelta, timezone

from services.intake.observe import age_bucket, backlog
from shared.models import Assignment, Case, CaseStatus, Location

NOW = datetime(2026, 11, 27, 8, tzinfo=timezone.utc)


def case(age_h: float, depts: list[str]) -> Case:
    at = NOW - timedelta(hours=age_h)
    return Case(
        case_id=f"c{age_h}{depts}",
        report_id="r",
        correlation_id="r",
        status=CaseStatus.dispatched,
        category="01037",
        severity="normal",
        description="d",
        location=Location(lat=25.2, lon=110.3),
        grid="450305001001001",
        street="450305001",
        reporter_id="w",
        reporter_role="grid_officer",
        observed_at=at,
        registered_at=at,
        updated_at=at,
        assignments=[
            Assignment(dept=d, street="450305001", level=3, order_id=f"o/1/{d}", dispatched_at=at) for d in depts
        ],
    )


def test_age_buckets() -> None:
    assert [age_bucket(h * 3600) for h in (1, 5, 30, 100, 200)] == ["lt_4h", "4h_1d", "1d_3d", "3d_7d", "gt_7d"]


def test_joint_cases_count_for_each_department_and_undispatched_under_none() -> None:
    counts = backlog(
        [case(1, ["lighting"]), case(2, ["lighting"]), case(30, ["cityman", "market"]), case(0.1, [])], NOW
    )
    assert counts == {
        ("450305001", "lighting", "3", "lt_4h"): 2,
        ("450305001", "cityman", "3", "1d_3d"): 1,
        ("450305001", "market", "3", "1d_3d"): 1,
        ("450305001", "none", "0", "lt_4h"): 1,
    }
