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

Inbound (shared/citytasks.py, used by this bridge's queue and by intake's
`POST /v1/city/tasks`): a city-platform task as a CloudEvent whose `type` ends in
`.task.created`; its `data` becomes a gridbus report with `source` = {system, external_id}.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from shared.citytasks import FORMAT, TASK_TYPE_SUFFIX, CityTask, parse, report_of

__all__ = [
    "FORMAT",
    "TASK_TYPE_SUFFIX",
    "CityTask",
    "CloudEvent",
    "amqp_message",
    "http_message",
    "outbound",
    "parse",
    "report_of",
]


def event_type(prefix: str, event_name: str) -> str:
    return prefix + event_name.replace("_", ".")


def outbound(
    body: dict[str, Any], source: str, prefix: str, citygrid: str | None = None, external: tuple[str, str] | None = None
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": body["message_id"],
        "source": source,
        "type": event_type(prefix, body["event"]),
        "subject": body["case_id"],
        "time": datetime.fromisoformat(body["occurred_at"]),
        "datacontenttype": "application/json",
        "correlationid": body.get("correlation_id", ""),
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
