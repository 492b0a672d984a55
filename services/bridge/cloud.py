"""Case events ⇄ CloudEvents 1.0 (JSON), with the official SDK (`cloudevents`).

Outbound, one CloudEvent per lifecycle event:
- `id` = the event's message id (a receiver drops repeats by it), `source` =
  BRIDGE_SOURCE (default `urn:gridbus:<district>`), `type` = BRIDGE_TYPE_PREFIX + the
  event name with dots (`cn.gridbus.case.dispatched`), `subject` = the case id, `time` =
  when it happened, `datacontenttype` application/json;
- `data` = the event's JSON body as gridbus publishes it, plus `citygrid` (the case's
  cell in the city grid's numbering, from the crosswalk) when known;
- extensions: `correlationid` (the report id), and for a case taken in from the city
  platform `externalsystem` and `externalid` — the city's own task id, for status sync.

Inbound, a city-platform task as a CloudEvent whose `type` ends in `.task.created`; its
`data` (`CityTask`) becomes a gridbus report with `source` = {system, external_id}.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from services.bridge.crosswalk import Crosswalk
from shared.models import Report

FORMAT = JSONFormat()
TASK_TYPE_SUFFIX = ".task.created"


def event_type(prefix: str, event_name: str) -> str:
    return prefix + event_name.replace("_", ".")


def outbound(body: dict[str, Any], source: str, prefix: str, citygrid: str | None = None,
             external: tuple[str, str] | None = None) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": body["message_id"], "source": source, "type": event_type(prefix, body["event"]),
        "subject": body["case_id"], "time": datetime.fromisoformat(body["occurred_at"]),
        "datacontenttype": "application/json", "correlationid": body.get("correlation_id", ""),
    }
    if external is not None:
        attributes["externalsystem"], attributes["externalid"] = external
    data = dict(body)
    if citygrid:
        data["citygrid"] = citygrid
    return CloudEvent(attributes, data)


def http_message(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Structured content mode: the whole event as `application/cloudevents+json`."""
    message = ce_http.to_structured(event, FORMAT)
    return dict(message.headers), message.body


def amqp_message(event: CloudEvent) -> tuple[dict[str, Any], bytes]:
    """Structured content mode on AMQP: (properties incl. content-type, body)."""
    message = ce_amqp.to_structured(event, FORMAT)
    return dict(message.properties), message.application_data


def parse(raw: bytes) -> CloudEvent:
    """A structured JSON CloudEvent (ValueError when it is not one)."""
    try:
        message = ce_http.HTTPMessage(headers={"content-type": FORMAT.CONTENT_TYPE}, body=raw)
        event = ce_http.from_structured(message, FORMAT, CloudEvent)
    except Exception as exc:  # the SDK raises several kinds; all mean "not a valid CloudEvent"
        raise ValueError(f"not a CloudEvents 1.0 JSON event: {exc}") from None
    assert isinstance(event, CloudEvent)
    return event


# --------------------------------------------------------------------------- inbound


class Citizen(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field("", max_length=64)
    phone: str = Field("", max_length=20)


class CityTask(BaseModel):
    """A city-platform task (e.g. a 12345 hotline case) as the city sends it."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=100)
    system: str = Field("12345", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")
    category: str = Field(pattern=r"^\d{5}$", description="GB/T 47678.5 code (the city platform uses the same)")
    description: str = Field(min_length=1, max_length=2000)
    lat: float
    lon: float
    address: str = Field("", max_length=200)
    grid: str | None = Field(None, description="The cell in the city grid's numbering")
    urgent: bool = False
    reported_at: AwareDatetime | None = None
    citizen: Citizen = Field(default_factory=Citizen)


_ID = re.compile(r"[^A-Za-z0-9_.:\-]")


def report_of(event: CloudEvent, crosswalk: Crosswalk) -> Report:
    """The gridbus report for a city task (ValueError naming what is wrong)."""
    if not event.get_type().endswith(TASK_TYPE_SUFFIX):
        raise ValueError(f"type {event.get_type()!r}: only *{TASK_TYPE_SUFFIX} tasks are taken in")
    data = event.get_data()
    try:
        task = CityTask.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        raise ValueError("; ".join(f"data.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    grid = crosswalk.from_city(task.grid) if task.grid else None
    when = task.reported_at or event.get_time() or datetime.now().astimezone()
    body = {
        "report_id": _ID.sub("_", f"{task.system}:{task.task_id}")[:64],
        "category": task.category, "description": task.description,
        "severity": "urgent" if task.urgent else "normal",
        "location": {"lat": task.lat, "lon": task.lon, "address": task.address, **({"grid": grid} if grid else {})},
        "reporter": {"id": task.system, "role": "citizen", "name": task.citizen.name,
                     "phone": re.sub(r"[^0-9+\- ]", "", task.citizen.phone)},
        "observed_at": when.isoformat(),
        "source": {"system": task.system, "external_id": task.task_id},
    }
    try:
        return Report.model_validate(body)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
