"""City-platform tasks in (信息共享): a CloudEvents 1.0 structured JSON event, parsed with
the official SDK, whose `type` ends in `.task.created` and whose `data` is a `CityTask`
(e.g. a 12345 hotline case), becomes a gridbus report with `source` = {system,
external_id} kept for status sync back. Shared by the bridge (AMQP `bridge.inbound`) and
intake (`POST /v1/city/tasks`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.crosswalk import Crosswalk
from shared.models import CategoryCode, CleanStr, Coordinate, Instant, Line, Report, SolidText

FORMAT = JSONFormat()
TASK_TYPE_SUFFIX = ".task.created"
CONTENT_TYPE = FORMAT.CONTENT_TYPE  # application/cloudevents+json


class TaskInvalid(ValueError):
    """Not a task gridbus can take in: (field, message) pairs; `str()` joins them."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in errors))


def _loc(prefix: str, loc: tuple[object, ...]) -> str:
    return prefix + ".".join(map(str, loc))


def parse(raw: bytes) -> CloudEvent:
    """A structured JSON CloudEvent (TaskInvalid when it is not one)."""
    try:
        message = ce_http.HTTPMessage(headers={"content-type": FORMAT.CONTENT_TYPE}, body=raw)
        event = ce_http.from_structured(message, FORMAT, CloudEvent)
    except Exception as exc:  # the SDK raises several kinds; all mean "not a valid CloudEvent"
        raise TaskInvalid([("", f"not a CloudEvents 1.0 JSON event: {exc}")]) from None
    assert isinstance(event, CloudEvent)
    return event


# --------------------------------------------------------------------------- inbound


class Citizen(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: CleanStr = Field("", max_length=64)
    phone: str = Field("", max_length=20, description="Kept as digits, +, - and spaces")


class CityTask(BaseModel):
    """A city-platform task (e.g. a 12345 hotline case) as the city sends it. The field
    rules are those of the report it becomes (shared/models.py), so that the schema says
    what is accepted."""

    model_config = ConfigDict(extra="ignore")

    task_id: Line = Field(min_length=1, max_length=100)
    system: str = Field("12345", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")
    category: CategoryCode = Field(description="GB/T 47678.5 code (the city platform uses the same)")
    description: SolidText = Field(min_length=1, max_length=2000)
    lat: Coordinate = Field(ge=-90, le=90)
    lon: Coordinate = Field(ge=-180, le=180)
    address: CleanStr = Field("", max_length=200)
    grid: CleanStr | None = Field(None, max_length=100, description="The cell in the city grid's numbering")
    urgent: bool = False
    reported_at: Instant | None = None
    citizen: Citizen = Field(default_factory=Citizen)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class CityTaskEvent(BaseModel):
    """What the city platform sends: a CloudEvents 1.0 event in structured JSON mode
    (`application/cloudevents+json`) whose `data` is a `CityTask`. The official SDK
    parses it (`parse`); this model states the shape for clients (OpenAPI)."""

    model_config = ConfigDict(extra="forbid")  # extension attributes are taken, not described

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$", description="The city's event id")
    source: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9_.:/\-]+$",
        description="The city platform (a URI), e.g. urn:guilin:12345",
    )
    type: str = Field(
        max_length=200, pattern=r"^[A-Za-z0-9_.\-]*\.task\.created$", description="Ends in `.task.created`"
    )
    # optional but never null (the SDK refuses a null attribute): absent by default, no default shown
    time: Instant = Field(None, json_schema_extra=_no_default)  # type: ignore[assignment]
    datacontenttype: Literal["application/json"] = Field(None, json_schema_extra=_no_default)  # type: ignore[arg-type]
    data: CityTask


_ID = re.compile(r"[^A-Za-z0-9_.:\-]")


def report_of(event: CloudEvent, crosswalk: Crosswalk) -> Report:
    """The gridbus report for a city task (TaskInvalid naming what is wrong)."""
    if not event.get_type().endswith(TASK_TYPE_SUFFIX):
        raise TaskInvalid([("type", f"{event.get_type()!r}: only *{TASK_TYPE_SUFFIX} tasks are taken in")])
    data = event.get_data()
    try:
        task = CityTask.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        raise TaskInvalid([(_loc("data.", e["loc"]), e["msg"]) for e in exc.errors()]) from None
    grid = crosswalk.from_city(task.grid) if task.grid else None
    when = task.reported_at or event.get_time() or datetime.now().astimezone()
    body = {
        "report_id": _ID.sub("_", f"{task.system}:{task.task_id}")[:64],
        "category": task.category,
        "description": task.description,
        "severity": "urgent" if task.urgent else "normal",
        "location": {"lat": task.lat, "lon": task.lon, "address": task.address, **({"grid": grid} if grid else {})},
        "reporter": {
            "id": task.system,
            "role": "citizen",
            "name": task.citizen.name,
            "phone": re.sub(r"[^0-9+\- ]", "", task.citizen.phone),
        },
        "observed_at": when.isoformat(),
        "source": {"system": task.system, "external_id": task.task_id},
    }
    try:
        return Report.model_validate(body)
    except ValidationError as exc:
        raise TaskInvalid([(_loc("", e["loc"]), e["msg"]) for e in exc.errors()]) from None


def parse_task(raw: bytes, crosswalk: Crosswalk) -> Report:
    """Raw structured CloudEvent bytes → the report (TaskInvalid naming what is wrong)."""
    return report_of(parse(raw), crosswalk)
