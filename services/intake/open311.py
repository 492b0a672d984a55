"""Open311 GeoReport v2 (JSON) ⇄ gridbus reports and cases.

Field names are the spec's (http://wiki.open311.org/GeoReport_v2). Mapping choices:
- a *service* is a catalog entry: `service_code` is the 5-digit GB/T 47678.5 code,
  `group` its class; no service has extra attributes (`metadata` false), so a service
  definition has an empty `attributes` list;
- a *service request* is a case: `service_request_id` is the case id;
- `status` is `closed` once the case is closed, cancelled or a duplicate (docs/design.md §6 final
  states) and `open` otherwise — a resolved case is still open until the grid verifies it;
- `agency_responsible` names the departments of the active assignments (empty before
  dispatch); `expected_datetime` is the latest handling deadline among them;
- an Open311 client has no grid officer: the report's reporter is a `citizen` whose id
  is the API key's id, so every request can be traced to the key that made it.
Errors are `[{"code": <HTTP status>, "description": …}]`.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, tzinfo
from typing import Mapping

from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from services.intake.validation import IDEMPOTENCY_KEY, FieldError, InvalidInput, errors_of
from shared.catalog import Catalog, Category
from shared.lifecycle import FINAL_STATES
from shared.models import Case, CaseStatus, Report, clamp_instant, utcnow

DEFAULT_WINDOW = timedelta(days=90)  # the spec's default and largest date range
MAX_RESULTS = 1000  # the spec's default result cap

STATUS_NOTES = {
    CaseStatus.reported: "已收到",
    CaseStatus.registered: "已立案，等待派遣",
    CaseStatus.dispatched: "已派遣至责任部门",
    CaseStatus.acknowledged: "责任部门已签收",
    CaseStatus.in_progress: "正在处置",
    CaseStatus.suspended: "处置暂停",
    CaseStatus.rejected: "重新确定责任部门中",
    CaseStatus.reopened: "核查未通过，重新处置",
    CaseStatus.resolved: "已处置，等待网格员核查",
    CaseStatus.closed: "已核查结案",
    CaseStatus.duplicate: "重复上报，已并入原案件",
    CaseStatus.cancelled: "已作废",
}


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        self.status = status
        self.description = description
        super().__init__(description)

    def as_json(self) -> list[dict[str, object]]:
        return [{"code": self.status, "description": self.description}]


class ErrorItem(BaseModel):
    code: int = Field(description="The HTTP status code")
    description: str


class Service(BaseModel):
    service_code: str
    service_name: str
    description: str
    metadata: bool = False
    type: str = Field("realtime", description="realtime: the request id is returned at once")
    keywords: str = ""
    group: str


class ServiceDefinition(BaseModel):
    service_code: str
    attributes: list[dict[str, object]] = Field(default_factory=list)


class ServiceRequestCreated(BaseModel):
    service_request_id: str
    service_notice: str = ""
    account_id: str | None = None


class ServiceRequest(BaseModel):
    service_request_id: str
    status: str = Field(description="open | closed")
    status_notes: str = ""
    service_name: str
    service_code: str
    description: str
    agency_responsible: str = ""
    service_notice: str = ""
    requested_datetime: AwareDatetime
    updated_datetime: AwareDatetime
    expected_datetime: AwareDatetime | None = None
    address: str = ""
    address_id: str | None = None
    zipcode: str | None = None
    lat: float
    long: float
    media_url: str = ""


# -- services -----------------------------------------------------------------------
def service_of(c: Category) -> Service:
    kind = "部件" if c.kind == "component" else "事项"
    return Service(
        service_code=c.code,
        service_name=c.name,
        description=f"{c.class_name} · {c.name}（{kind}{'，本地扩展' if c.local else ''}）",
        keywords=",".join(filter(None, [c.class_name, c.name, kind])),
        group=c.class_name,
    )


def services(catalog: Catalog) -> list[Service]:
    # one service per code: a report carries only the code (see shared/catalog.py)
    return [service_of(catalog.get(code)) for code in sorted(catalog.codes())]  # type: ignore[arg-type]


def service_definition(catalog: Catalog, code: str) -> ServiceDefinition:
    if catalog.get(code) is None:
        raise Open311Error(404, f"service_code {code} not found")
    return ServiceDefinition(service_code=code)


# -- requests -------------------------------------------------------------------------
def _float(form: Mapping[str, str], name: str) -> float | None:
    value = form.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number") from None


def report_from_form(
    form: Mapping[str, str],
    key_id: str,
    catalog: Catalog,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Report:
    """A POST requests.json form → our Report (Open311Error 400 naming what is wrong)."""
    code = form.get("service_code", "").strip()
    if not code:
        raise Open311Error(400, "service_code is required")
    category = catalog.get(code)
    if category is None:
        raise Open311Error(404, f"service_code {code} not found")
    lat, lon = _float(form, "lat"), _float(form, "long")
    if lat is None or lon is None:
        # our grid cells are found by position; an address alone cannot be placed
        raise Open311Error(400, "lat and long are required")
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise Open311Error(400, "Idempotency-Key: 1–40 of A–Z a–z 0–9 _ . : -")
    # a retried POST with the same Idempotency-Key is the same request (same key holder)
    report_id = f"o311:{key_id}:{idempotency_key}" if idempotency_key else f"o311:{uuid.uuid4().hex}"
    media = form.get("media_url", "").strip()
    name = " ".join(filter(None, (form.get("first_name", "").strip(), form.get("last_name", "").strip())))
    body = {
        "report_id": report_id,
        "category": code,
        "description": form.get("description", "").strip() or category.name,
        "severity": "normal",
        "location": {"lat": lat, "lon": lon, "address": form.get("address_string", "").strip()},
        "media_urls": [media] if media else [],
        "reporter": {"id": key_id, "role": "citizen", "name": name, "phone": form.get("phone", "").strip()},
        "observed_at": (now or utcnow()).isoformat(),
    }
    try:
        return Report.model_validate_json(json.dumps(body, ensure_ascii=False))
    except ValidationError as exc:
        raise Open311Error(400, _describe(errors_of(exc))) from None


_FORM_NAMES = {
    "location.lat": "lat",
    "location.lon": "long",
    "location.address": "address_string",
    "media_urls[0]": "media_url",
    "reporter.name": "first_name/last_name",
    "reporter.phone": "phone",
}


def _describe(errors: list[FieldError]) -> str:
    return "; ".join(f"{_FORM_NAMES.get(e.field, e.field)}: {e.message}" for e in errors)


def invalid_to_open311(exc: InvalidInput) -> Open311Error:
    """Registration refused the report (e.g. outside the district's grid) → 400."""
    return Open311Error(400, _describe(exc.errors))


def created(case_id: str) -> ServiceRequestCreated:
    return ServiceRequestCreated(
        service_request_id=case_id, service_notice=f"已受理，案件号 {case_id}；将派遣至责任部门按时限处置。"
    )


def request_of(case: Case, catalog: Catalog, dept_names: Mapping[str, str], tz: tzinfo) -> ServiceRequest:
    category = catalog.get(case.category)
    active = [a for a in case.assignments if a.active]
    agencies = list(dict.fromkeys(dept_names.get(a.dept, a.dept) for a in active))
    dues = [a.handle_due for a in active if a.handle_due is not None]
    expected = max(dues).astimezone(tz) if dues else None
    notice = (
        f"由{'、'.join(agencies)}处置" + (f"，应于 {expected:%Y-%m-%d %H:%M} 前办结" if expected else "")
        if agencies and case.status not in FINAL_STATES
        else ""
    )
    return ServiceRequest(
        service_request_id=case.case_id,
        status="closed" if case.status in FINAL_STATES else "open",
        status_notes=_notes(case),
        service_name=category.name if category else case.category,
        service_code=case.category,
        description=case.description,
        agency_responsible="、".join(agencies),
        service_notice=notice,
        requested_datetime=case.registered_at.astimezone(tz),
        updated_datetime=case.updated_at.astimezone(tz),
        expected_datetime=expected,
        address=case.location.address,
        lat=case.location.lat,
        long=case.location.lon,
        media_url=case.media_urls[0] if case.media_urls else "",
    )


def _notes(case: Case) -> str:
    note = STATUS_NOTES.get(case.status, case.status.value)
    if case.status is CaseStatus.duplicate and case.duplicate_of:
        return f"{note}：{case.duplicate_of}"
    return note


class RequestsQuery(BaseModel):
    ids: list[str] = Field(default_factory=list)
    service_codes: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    start: datetime
    end: datetime

    def matches(self, case: Case) -> bool:
        if self.service_codes and case.category not in self.service_codes:
            return False
        if self.statuses and ("closed" if case.status in FINAL_STATES else "open") not in self.statuses:
            return False
        return True


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def _when(value: str, name: str, tz: tzinfo) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C/ISO 8601 date-time, e.g. 2026-11-27T09:30:00+08:00") from None
    return clamp_instant(dt if dt.tzinfo else dt.replace(tzinfo=tz))  # year 1 / 9999: no overflow


def parse_requests_query(args: Mapping[str, str], tz: tzinfo, now: datetime | None = None) -> RequestsQuery:
    """GET requests.json parameters. Without dates: the last 90 days; a range is at most
    90 days (the spec's limits), a longer one is cut to the 90 days up to `end_date`.
    `service_request_id` overrides the rest."""
    now = now or utcnow()
    statuses = set(_split(args.get("status")))
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status must be open and/or closed")
    given_start = _when(args["start_date"], "start_date", tz) if args.get("start_date", "").strip() else None
    given_end = _when(args["end_date"], "end_date", tz) if args.get("end_date", "").strip() else None
    if given_start is None and given_end is None:
        start, end = now - DEFAULT_WINDOW, now
    elif given_start is None:
        assert given_end is not None
        start, end = given_end - DEFAULT_WINDOW, given_end
    else:
        start = given_start
        end = given_end if given_end is not None else max(start, min(now, clamp_instant(start + DEFAULT_WINDOW)))
    # Limits, not errors (every combination of two valid dates is a valid query): an end
    # before the start is an empty range; a longer range is cut to the 90 days up to end.
    end = max(end, start)
    if end - start > DEFAULT_WINDOW:
        start = end - DEFAULT_WINDOW
    return RequestsQuery(
        ids=_split(args.get("service_request_id")),
        service_codes=frozenset(_split(args.get("service_code"))),
        statuses=frozenset(statuses),
        start=start,
        end=end,
    )
