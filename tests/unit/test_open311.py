"""Open311 GeoReport v2 ⇄ reports and cases: spec field names, status mapping, errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.intake import open311
from services.intake.open311 import Open311Error
from shared.catalog import Catalog, load_catalog
from shared.models import EARLIEST, LATEST, Assignment, Case, CaseStatus, Location

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
SPEC_REQUEST_FIELDS = {
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def form(**over: str) -> dict[str, str]:
    body = {
        "api_key": "k",
        "service_code": "01037",
        "lat": "25.28",
        "long": "110.312",
        "address_string": "七星区辰山路",
        "description": "路灯不亮",
        "media_url": "https://x.example/1.jpg",
        "first_name": "小",
        "last_name": "李",
        "phone": "13800001234",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def case(status: CaseStatus = CaseStatus.dispatched, assignments: list[Assignment] | None = None) -> Case:
    return Case(
        case_id="450305-20261127-000007",
        report_id="o311:x",
        correlation_id="o311:x",
        status=status,
        category="01037",
        severity="normal",
        description="路灯不亮",
        location=Location(lat=25.28, lon=110.312, address="七星区辰山路", grid="450305001001001"),
        grid="450305001001001",
        street="450305001",
        reporter_id="k1",
        reporter_role="citizen",
        observed_at=NOW,
        registered_at=NOW,
        updated_at=NOW + timedelta(minutes=5),
        media_urls=["https://x.example/1.jpg"],
        assignments=assignments or [],
    )


def assignment(dept: str, due_hours: float, active: bool = True) -> Assignment:
    return Assignment(
        dept=dept,
        street="450305001",
        level=3,
        order_id=f"o-{dept}",
        dispatched_at=NOW,
        handle_due=NOW + timedelta(hours=due_hours),
        active=active,
    )


def test_services_are_catalog_codes(catalog: Catalog) -> None:
    services = open311.services(catalog)
    assert len(services) == len(catalog.codes())
    lamp = next(s for s in services if s.service_code == "01037")
    assert lamp.service_name == "路灯" and lamp.metadata is False and lamp.type == "realtime"
    assert set(lamp.model_dump()) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert open311.service_definition(catalog, "01037").model_dump() == {"service_code": "01037", "attributes": []}
    with pytest.raises(Open311Error) as info:
        open311.service_definition(catalog, "99999")
    assert info.value.status == 404 and info.value.as_json()[0]["code"] == 404


def test_a_form_becomes_a_citizen_report(catalog: Catalog) -> None:
    report = open311.report_from_form(form(), "k1", catalog, now=NOW)
    assert report.category == "01037" and report.description == "路灯不亮"
    assert (report.location.lat, report.location.lon, report.location.address) == (25.28, 110.312, "七星区辰山路")
    assert report.reporter.role.value == "citizen" and report.reporter.id == "k1"
    assert report.reporter.name == "小 李" and report.media_urls == ["https://x.example/1.jpg"]
    # no description: the service name stands in (our reports always describe something)
    assert open311.report_from_form(form(description=""), "k1", catalog).description == "路灯"


def test_idempotency_key_gives_a_stable_report_id_per_api_key(catalog: Catalog) -> None:
    a = open311.report_from_form(form(), "k1", catalog, idempotency_key="req-1")
    b = open311.report_from_form(form(), "k1", catalog, idempotency_key="req-1")
    other = open311.report_from_form(form(), "k2", catalog, idempotency_key="req-1")
    assert a.report_id == b.report_id != other.report_id
    assert (
        open311.report_from_form(form(), "k1", catalog).report_id
        != open311.report_from_form(form(), "k1", catalog).report_id
    )
    with pytest.raises(Open311Error):
        open311.report_from_form(form(), "k1", catalog, idempotency_key="bad key!")


@pytest.mark.parametrize(
    "over, status, words",
    [
        ({"service_code": ""}, 400, "service_code"),
        ({"service_code": "99999"}, 404, "99999"),
        ({"lat": ""}, 400, "lat"),
        ({"long": "east"}, 400, "long"),
        ({"lat": "95"}, 400, "lat"),
        ({"phone": "call me"}, 400, "phone"),
        ({"media_url": "ftp://x/1.jpg"}, 400, "media_url"),
    ],
)
def test_bad_forms_are_errors_naming_the_spec_field(
    catalog: Catalog, over: dict[str, str], status: int, words: str
) -> None:
    with pytest.raises(Open311Error) as info:
        open311.report_from_form(form(**over), "k1", catalog)
    assert info.value.status == status
    [item] = info.value.as_json()
    assert item["code"] == status and words in item["description"]


def test_a_dispatched_case_is_open_with_its_agencies_and_deadline(catalog: Catalog) -> None:
    c = case(assignments=[assignment("lighting", 24), assignment("power", 48), assignment("gas", 99, active=False)])
    req = open311.request_of(c, catalog, {"lighting": "照明", "power": "供电"}, TZ)
    body = req.model_dump(mode="json")
    assert set(body) == SPEC_REQUEST_FIELDS
    assert body["service_request_id"] == c.case_id and body["status"] == "open"
    assert body["agency_responsible"] == "照明、供电"  # the inactive gas assignment is history
    assert body["expected_datetime"] == "2026-11-29T09:30:00+08:00"  # the later deadline, local time
    assert body["requested_datetime"] == "2026-11-27T09:30:00+08:00"
    assert body["updated_datetime"] == "2026-11-27T09:35:00+08:00"
    assert (body["lat"], body["long"], body["address"]) == (25.28, 110.312, "七星区辰山路")
    assert body["media_url"] == "https://x.example/1.jpg" and body["service_name"] == "路灯"
    assert "照明" in body["service_notice"]


@pytest.mark.parametrize(
    "status, expected",
    [
        (CaseStatus.registered, "open"),
        (CaseStatus.resolved, "open"),
        (CaseStatus.reopened, "open"),
        (CaseStatus.closed, "closed"),
        (CaseStatus.cancelled, "closed"),
        (CaseStatus.duplicate, "closed"),
    ],
)
def test_only_final_states_are_closed(catalog: Catalog, status: CaseStatus, expected: str) -> None:
    req = open311.request_of(case(status), catalog, {}, TZ)
    assert req.status == expected and req.status_notes


def test_before_dispatch_nobody_is_responsible(catalog: Catalog) -> None:
    req = open311.request_of(case(CaseStatus.registered), catalog, {}, TZ)
    assert req.agency_responsible == "" and req.expected_datetime is None and req.service_notice == ""


def test_requests_query_defaults_to_the_last_90_days() -> None:
    q = open311.parse_requests_query({}, TZ, now=NOW)
    assert (q.start, q.end) == (NOW - timedelta(days=90), NOW)
    q = open311.parse_requests_query(
        {
            "start_date": "2026-11-01T00:00:00+08:00",
            "status": "open,closed",
            "service_code": "01037,01001",
            "service_request_id": "a, b",
        },
        TZ,
        now=NOW,
    )
    assert q.start == datetime(2026, 11, 1, tzinfo=TZ) and q.end == NOW
    assert q.statuses == {"open", "closed"} and q.service_codes == {"01037", "01001"} and q.ids == ["a", "b"]


@pytest.mark.parametrize(
    "args, words",
    [
        ({"status": "pending"}, "status"),
        ({"start_date": "last week"}, "start_date"),
    ],
)
def test_bad_requests_query_is_400(args: dict[str, str], words: str) -> None:
    with pytest.raises(Open311Error) as info:
        open311.parse_requests_query(args, TZ, now=NOW)
    assert info.value.status == 400 and words in info.value.description


@pytest.mark.parametrize(
    "args, start, end",
    [
        # a longer range is cut to the 90 days up to end_date; a reversed one is empty
        (
            {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"},
            datetime(2026, 8, 3, tzinfo=timezone.utc),
            datetime(2026, 11, 1, tzinfo=timezone.utc),
        ),
        (
            {"start_date": "2026-11-02T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"},
            datetime(2026, 11, 2, tzinfo=timezone.utc),
            datetime(2026, 11, 2, tzinfo=timezone.utc),
        ),
        # the ends of time are clamped, never an overflow (issue 11: these were 500s)
        ({"end_date": "0001-01-01"}, EARLIEST - timedelta(days=90), EARLIEST),
        ({"start_date": "9999-12-31"}, LATEST, LATEST),
        (
            {"start_date": "0001-01-01T00:00:00", "end_date": "9999-12-31T23:59:59+14:00"},
            LATEST - timedelta(days=90),
            LATEST,
        ),
    ],
)
def test_requests_query_ranges_are_limited_not_refused(args: dict[str, str], start: datetime, end: datetime) -> None:
    q = open311.parse_requests_query(args, TZ, now=NOW)
    assert (q.start, q.end) == (start, end)


def test_requests_query_filters_by_code_and_open_closed() -> None:
    q = open311.parse_requests_query({"service_code": "01037", "status": "closed"}, TZ, now=NOW)
    assert q.matches(case(CaseStatus.closed))
    assert not q.matches(case(CaseStatus.dispatched))
    assert not q.matches(case(CaseStatus.closed).model_copy(update={"category": "01001"}))
