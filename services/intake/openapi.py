"""The OpenAPI 3.1 document of intake's HTTP API, built from the pydantic models.

Schemas come from the same models that validate requests and shape answers, so the
document cannot describe fields the code does not have. `docs/openapi.json` is this
document committed (`gridbus openapi --write`); a test fails when they differ.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from services.intake import open311, openapi_examples
from services.intake.dispatching import ManualDispatch
from services.intake.evaluation import EvaluationRequest
from services.intake.queries import MAX_LIMIT, CaseListItem, CasePage
from services.intake.replies import Cancellation, SuspensionDecision, Verification
from services.intake.validation import IDEMPOTENCY_KEY
from shared.citytasks import CityTaskEvent
from shared.config import REPO_ROOT
from shared.models import (
    ATTRIBUTE_KEY,
    LINE_PATTERN,
    SOLID_LINE_PATTERN,
    TEXT_PATTERN,
    URL_PATTERN,
    Case,
    CaseStatus,
    Reply,
    Report,
)

DOC_PATH = REPO_ROOT / "docs" / "openapi.json"
REF = "#/components/schemas/{model}"


# -- answer shapes that have no model in the code (the handlers build them as dicts) --
class ReportAccepted(BaseModel):
    case_id: str = Field(examples=["450305-20261127-000123"])
    status: str = Field(examples=["registered"])


class CaseAnswer(BaseModel):
    """What a reply or a verification answers: the case's state after it."""

    case_id: str
    status: CaseStatus
    version: int
    applied: bool = Field(description="false when this reply/verification id was already applied (idempotent)")


class FieldErrorItem(BaseModel):
    field: str = Field(description="Dotted path of the bad field (`location.lat`), or a header/parameter name")
    message: str


class Errors(BaseModel):
    errors: list[FieldErrorItem]


class IllegalTransitionError(BaseModel):
    error: str = Field(examples=["illegal_transition"])
    message: str
    current: CaseStatus
    allowed: list[str] = Field(description="Actions allowed from the current state")


class CatalogEntry(BaseModel):
    code: str
    name: str
    kind: str = Field(description="component | matter")
    local: bool


class CatalogClass(BaseModel):
    class_code: str
    class_name: str
    kind: str
    categories: list[CatalogEntry]


class CatalogTree(BaseModel):
    classes: list[CatalogClass]
    count: int


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class CaseView(Case):
    """A case as `GET /v1/cases/{case_id}` shows it (with its timeline)."""


class NewServiceRequest(BaseModel):
    """Form fields of Open311 `POST requests.json` (application/x-www-form-urlencoded)."""

    api_key: str = Field(description="An API key with role open311")
    service_code: str = Field(description="A catalog code (see services.json)")
    lat: float
    long: float
    address_string: str = ""
    description: str = Field("", description="Defaults to the service name")
    media_url: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""


MODELS: list[type[BaseModel]] = [
    Report,
    ReportAccepted,
    Reply,
    Verification,
    Cancellation,
    SuspensionDecision,
    CaseAnswer,
    CaseView,
    CaseListItem,
    CasePage,
    Errors,
    IllegalTransitionError,
    CatalogTree,
    Health,
    NewServiceRequest,
    open311.Service,
    open311.ServiceDefinition,
    open311.ServiceRequest,
    open311.ServiceRequestCreated,
    open311.ErrorItem,
    ManualDispatch,
    EvaluationRequest,
    CityTaskEvent,
]


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF)
    schemas = top["$defs"]
    view = schemas["CaseView"]
    # internal bookkeeping (ids of applied events) is not served
    view["properties"].pop("applied_messages", None)
    return dict(sorted(schemas.items()))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _body(name: str, description: str, array: bool = False) -> dict[str, Any]:
    schema = {"type": "array", "items": _ref(name)} if array else _ref(name)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _q(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


E401 = _body("Errors", "No, malformed, unknown or revoked API key (`WWW-Authenticate: Bearer`)")
E422 = _body("Errors", "Invalid input; every bad field is named")
E404 = _body("Errors", "No such case")
O311_ERR = {"type": "array", "items": _ref("ErrorItem")}


def _o311(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": O311_ERR}}}


def bearer(*roles: str) -> dict[str, Any]:
    return {"security": [{"bearer": []}], "x-roles": list(roles)}


def _paths() -> dict[str, Any]:
    return {
        "/v1/reports": {
            "post": {
                "tags": ["reports"],
                "summary": "Report a problem (the grid app's report)",
                **bearer("grid_app", "ops"),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "Same key → same case",
                    }
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Report")}}},
                "responses": {
                    "401": E401,
                    "403": _body("Errors", "Not a grid_app or ops key"),
                    "202": _body("ReportAccepted", "Registered as a new case"),
                    "200": _body(
                        "ReportAccepted", "This report_id (or Idempotency-Key) was seen before: the same case"
                    ),
                    "413": _body("Errors", "Body larger than MAX_REPORT_BYTES"),
                    "422": E422,
                },
            }
        },
        "/v1/cases": {
            "get": {
                "tags": ["cases"],
                "summary": "List cases (cursor pagination)",
                "description": "Ordered by registration time, then case id. A department key sees only cases "
                "assigned to its department. A page may come back short, with a `next_cursor`, when "
                "the server's scan cap is reached before the page fills: keep following the cursor.",
                **bearer("ops", "grid_app", "department"),
                "parameters": [
                    _q("status", "Comma-separated case states", type="string"),
                    _q("dept", "Cases with any assignment to this department"),
                    _q("grid", "Grid code prefix (street 9, community 12, patch 15 digits)"),
                    _q("category", "Category code prefix (`01` the class, `01037` one code)"),
                    _q("since", "Registered at or after (ISO 8601; no offset = district local time)"),
                    _q("until", "Registered at or before (ISO 8601)"),
                    _q("cursor", "`next_cursor` of the previous page"),
                    _q("limit", "Page size", type="integer", minimum=1, maximum=MAX_LIMIT, default=50),
                ],
                "responses": {
                    "200": _body("CasePage", "One page"),
                    "401": E401,
                    "403": _body("Errors", "Wrong role, or a department asking for another's cases"),
                    "422": E422,
                },
            }
        },
        "/v1/cases/{case_id}": {
            "get": {
                "tags": ["cases"],
                "summary": "One case with its assignments and timeline",
                "description": "A department key sees only cases that were assigned to its department, a station "
                "key only cases of its street, a city key only cases handed over by the city "
                "platform; any other answers 404, as a case that does not exist.",
                **bearer("ops", "grid_app", "department", "station", "city"),
                "parameters": [_path("case_id", "e.g. 450305-20261127-000123")],
                "responses": {
                    "200": _body("CaseView", "The case"),
                    "401": E401,
                    "403": _body("Errors", "Wrong role, or a department key for another's case"),
                    "404": E404,
                },
            }
        },
        "/v1/cases/{case_id}/replies": {
            "post": {
                "tags": ["cases"],
                "summary": "A department's reply (acknowledge, progress, suspend, reject, resolve)",
                "description": (
                    "Idempotent by `reply_id`. Only a department the case is currently assigned to may reply."
                ),
                **bearer("department"),
                "parameters": [_path("case_id", "The case")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Reply")}}},
                "responses": {
                    "200": _body("CaseAnswer", "Applied (or already applied: `applied` false)"),
                    "401": E401,
                    "403": _body("Errors", "Not a department key, or the case is not assigned to this department"),
                    "404": E404,
                    "409": _body("IllegalTransitionError", "The action is not allowed in the case's current state"),
                    "422": E422,
                },
            }
        },
        "/v1/cases/{case_id}/verification": {
            "post": {
                "tags": ["cases"],
                "summary": "The grid's check of a resolution: pass closes, fail reopens (rework)",
                **bearer("grid_app", "ops"),
                "parameters": [
                    _path("case_id", "The case"),
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Verification")}}},
                "responses": {
                    "200": _body("CaseAnswer", "Applied"),
                    "401": E401,
                    "403": _body("Errors", "Wrong role"),
                    "404": E404,
                    "409": _body("IllegalTransitionError", "The case is not resolved"),
                    "422": E422,
                },
            }
        },
        "/v1/cases/{case_id}/suspension": {
            "post": {
                "tags": ["cases"],
                "summary": "The operations centre approves or denies a department's suspension request",
                "description": "A department's `suspend` reply only requests a suspension (with its reason); on "
                "approval the case becomes `suspended` and its clocks pause until the department "
                "resumes with a `progress` reply. The approver is recorded on the timeline.",
                **bearer("ops"),
                "parameters": [
                    _path("case_id", "The case"),
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SuspensionDecision")}},
                },
                "responses": {
                    "200": _body("CaseAnswer", "Decided"),
                    "401": E401,
                    "403": _body("Errors", "Not an ops key"),
                    "404": E404,
                    "409": {
                        "description": "No pending request, or the case can no longer be suspended",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "422": E422,
                },
            }
        },
        "/v1/cases/{case_id}/cancellation": {
            "post": {
                "tags": ["cases"],
                "summary": "The operations centre cancels an invalid case (with the reason)",
                **bearer("ops"),
                "parameters": [
                    _path("case_id", "The case"),
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Cancellation")}}},
                "responses": {
                    "200": _body("CaseAnswer", "Cancelled"),
                    "401": E401,
                    "403": _body("Errors", "Not an ops key"),
                    "404": E404,
                    "409": _body("IllegalTransitionError", "The case is already closed, cancelled or a duplicate"),
                    "422": E422,
                },
            }
        },
        "/v1/cases/{case_id}/dispatch": {
            "post": {
                "tags": ["cases"],
                "summary": "Dispatch by hand (改派, take-over, hand-up): a new round to chosen departments",
                "description": "For a case in triage, disputed, rejected, escalated or wrongly assigned. Closes the "
                "current round at once; router sends the orders (route `manual`, `lead` on the lead "
                "department's) and sla starts fresh clocks. An ops key (the district's command "
                "centre) may dispatch any such case; a station key only cases of its street not "
                "escalated past it, at level 3 or below, and may hand a triage case up to the "
                "district (`hand_up`). Idempotent by `dispatch_id`.",
                **bearer("ops", "station"),
                "parameters": [_path("case_id", "The case")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ManualDispatch")}}},
                "responses": {
                    "202": _body("CaseAnswer", "Requested: the new round is being dispatched"),
                    "200": _body("CaseAnswer", "This dispatch_id was already applied (`applied` false)"),
                    "401": E401,
                    "403": _body("Errors", "Not an ops/station key, another street's station, or escalated past it"),
                    "404": E404,
                    "409": _body("IllegalTransitionError", "Not in a state that can be re-dispatched"),
                    "413": _body("Errors", "Body larger than MAX_REPORT_BYTES"),
                    "422": E422,
                },
            }
        },
        "/v1/city/tasks": {
            "post": {
                "tags": ["reports"],
                "summary": "The city platform hands a task over (12345 hotline, 一网统管)",
                "description": "A CloudEvents 1.0 event in structured mode (`application/cloudevents+json`; "
                "`application/json` is accepted too) whose `type` ends in `.task.created` and whose "
                "`data` is the task. Registered like any report (reporter role `citizen`), with "
                "`source` = {system, external_id}: every event of the case the bridge sends back "
                "carries `externalsystem`/`externalid`. `data.grid` in the city grid's numbering is "
                "translated by config/crosswalk.yaml. The same task again (same system and task id) "
                "answers 200 with the same body. Keys: role `city` (or `ops`).",
                **bearer("city", "ops"),
                "requestBody": {
                    "required": True,
                    "content": {"application/cloudevents+json": {"schema": _ref("CityTaskEvent")}},
                },
                "responses": {
                    "202": _body("ReportAccepted", "Registered: a new case"),
                    "200": _body("ReportAccepted", "This task was handed over before: the same case"),
                    "401": E401,
                    "403": _body("Errors", "Not a city or ops key"),
                    "413": _body("Errors", "Body larger than MAX_REPORT_BYTES"),
                    "415": _body("Errors", "Not application/cloudevents+json"),
                    "422": _body(
                        "Errors",
                        "Not a CloudEvent, not a task (`type`), or a task field (`data.*`) "
                        "or the report made from it is invalid; the field is named",
                    ),
                },
            }
        },
        "/v1/cases/{case_id}/evaluation": {
            "post": {
                "tags": ["cases"],
                "summary": "Evaluate (评价) a closed case: satisfied, basically satisfied, dissatisfied",
                "description": "By the reporter (through the grid app) or the operations centre. Dissatisfied within "
                "EVALUATION_REOPEN_HOURS of the closing reopens the case (rework) unless `reopen` is "
                "false. Counts in the satisfaction rate of the grade. Idempotent by `evaluation_id`.",
                **bearer("grid_app", "ops"),
                "parameters": [_path("case_id", "The case")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EvaluationRequest")}},
                },
                "responses": {
                    "200": _body("CaseAnswer", "Recorded (status `reopened` when it reopened the case)"),
                    "401": E401,
                    "403": _body("Errors", "Not a grid_app or ops key"),
                    "404": E404,
                    "409": {
                        "description": "The case is not closed",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["error", "message", "current"],
                                    "properties": {
                                        "error": {"type": "string"},
                                        "message": {"type": "string"},
                                        "current": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "413": _body("Errors", "Body larger than MAX_REPORT_BYTES"),
                    "422": E422,
                },
            }
        },
        "/v1/reports/meeting": {
            "get": {
                "tags": ["ops"],
                "summary": "The joint-meeting agenda (联席会议) of a street for a period",
                "description": "Recurring hot spots (same category in the same patch MEETING_HOTSPOT_MIN times), "
                "disputed and repeatedly rejected cases, cases escalated past the street, overdue by "
                "department, rework, 门前三包 repeat offenders (reports with a `merchant_id` "
                "attribute, MEETING_MERCHANT_MIN times). A station key reads only its own street "
                "(its street by default).",
                **bearer("ops", "station"),
                "parameters": [
                    _q("street", "Street code (9 digits); a station key's own street by default"),
                    {
                        "name": "from",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "First day (2026-11-01) or ISO date-time",
                    },
                    {
                        "name": "to",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "Last day (inclusive) or ISO date-time",
                    },
                    _q("format", "json (default), markdown or csv", type="string", enum=["json", "markdown", "csv"]),
                ],
                "responses": {
                    "200": {
                        "description": "The agenda",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": [
                                        "street",
                                        "start",
                                        "end",
                                        "cases",
                                        "hot_spots",
                                        "disputed",
                                        "escalated",
                                        "overdue",
                                        "rework",
                                        "merchants",
                                    ],
                                }
                            },
                            "text/markdown": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "401": E401,
                    "403": _body("Errors", "Not an ops/station key, or another street's station"),
                    "422": E422,
                },
            }
        },
        "/v1/accountability": {
            "get": {
                "tags": ["ops"],
                "summary": "The accountability ledger (督查问责): breaches, and who breached repeatedly",
                "description": "Written by sla on every breach (case, department, liaison, level, which clock, how "
                "late). Departments and liaisons with at least `repeated` breaches in the period are "
                "flagged for the discipline-inspection referral.",
                **bearer("ops"),
                "parameters": [
                    _q("dept", "Department code"),
                    _q("street", "Street code (9 digits)"),
                    _q("from", "Start date or date-time (default: first day of this month)"),
                    _q("to", "End date (inclusive) or date-time (default: now)"),
                    _q("repeated", "Breaches from which a department/liaison is flagged", type="integer", minimum=1),
                ],
                "responses": {
                    "200": {
                        "description": "The ledger for the period",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["from", "to", "count", "entries"],
                                    "properties": {
                                        "from": {"type": "string"},
                                        "to": {"type": "string"},
                                        "count": {"type": "integer"},
                                        "entries": {"type": "array", "items": {"type": "object"}},
                                        "departments": {"type": "array", "items": {"type": "object"}},
                                        "liaisons": {"type": "array", "items": {"type": "object"}},
                                    },
                                }
                            }
                        },
                    },
                    "401": E401,
                    "403": _body("Errors", "Not an ops key"),
                    "422": E422,
                },
            }
        },
        "/v1/catalog": {
            "get": {
                "tags": ["catalog"],
                "summary": "The category catalog (GB/T 47678.5-2026 + local extensions)",
                "responses": {"200": _body("CatalogTree", "Classes with their categories")},
            }
        },
        "/healthz": {
            "get": {
                "tags": ["ops"],
                "summary": "Liveness (Redis reachable)",
                "responses": {"200": _body("Health", "Up")},
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["ops"],
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/open311/v2/services.json": {
            "get": {
                "tags": ["open311"],
                "summary": "Open311 GeoReport v2: service types (the catalog)",
                "responses": {"200": _body("Service", "Every service", array=True)},
            }
        },
        "/open311/v2/services/{service_code}.json": {
            "get": {
                "tags": ["open311"],
                "summary": "Open311: a service definition (no extra attributes)",
                "parameters": [_path("service_code", "A catalog code")],
                "responses": {
                    "200": _body("ServiceDefinition", "The definition"),
                    "404": _o311("No such service_code"),
                },
            }
        },
        "/open311/v2/requests.json": {
            "post": {
                "tags": ["open311"],
                "summary": "Open311: create a service request (becomes a case)",
                "x-roles": ["open311"],  # api_key is a form field (or a Bearer header)
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 40},
                        "description": "A retried POST with the same key and api_key is the same request",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": _ref("NewServiceRequest")}},
                },
                "responses": {
                    "201": _body("ServiceRequestCreated", "Created", array=True),
                    "200": _body("ServiceRequestCreated", "Seen before (same Idempotency-Key)", array=True),
                    "400": _o311("Missing or invalid field, or a place outside the district's grid"),
                    "403": _o311("api_key missing, invalid or not an open311 key"),
                    "404": _o311("No such service_code"),
                    "413": _o311("Body too large"),
                },
            },
            "get": {
                "tags": ["open311"],
                "summary": "Open311: service requests",
                "description": "Without dates: the last 90 days; a date range may not span more than 90 days; "
                "at most 1000 requests, oldest first. `service_request_id` overrides the other "
                "filters.",
                "security": [{"open311_api_key": []}, {"bearer": []}],
                "parameters": [
                    _q("service_request_id", "Comma-separated ids"),
                    _q("service_code", "Comma-separated service codes"),
                    _q("start_date", "Requested at or after (W3C date-time)"),
                    _q("end_date", "Requested at or before (W3C date-time)"),
                    _q("status", "open, closed or open,closed"),
                ],
                "responses": {
                    "200": _body("ServiceRequest", "Matching requests", array=True),
                    "400": _o311("Bad parameter"),
                    "403": _o311("api_key missing or invalid"),
                },
            },
        },
        "/open311/v2/requests/{service_request_id}.json": {
            "get": {
                "tags": ["open311"],
                "summary": "Open311: one service request",
                "security": [{"open311_api_key": []}, {"bearer": []}],
                "parameters": [_path("service_request_id", "The case id")],
                "responses": {
                    "200": _body("ServiceRequest", "A one-element list, as the spec has it", array=True),
                    "403": _o311("api_key missing or invalid"),
                    "404": _o311("No such service request"),
                },
            }
        },
    }


# -- exactly what the server accepts (issue 11) ----------------------------------------
# The models give types and lengths; what they cannot say is added here, from the same
# sources the server checks against (catalog, grid, the boundary's rules), so that a
# schema-valid request is one the server accepts and every answer it can give is listed.
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key from the same API key → the same result (scoped to the key)",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern, "maxLength": 40},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _date_or_time() -> dict[str, Any]:
    return {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}


QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "status@/v1/cases": {
        "type": "string",
        "pattern": "^({s})(,({s}))*$".format(s="|".join(c.value for c in CaseStatus)),
    },
    "dept@/v1/cases": {"type": "string", "pattern": "^[A-Za-z0-9]{1,20}$"},
    "grid@/v1/cases": {"type": "string", "pattern": "^[0-9]{1,15}$"},
    "category@/v1/cases": {"type": "string", "pattern": "^[0-9]{1,5}$"},
    "since@/v1/cases": {"type": "string", "format": "date-time"},
    "until@/v1/cases": {"type": "string", "format": "date-time"},
    "cursor@/v1/cases": {
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]{1,200}$",
        "description": "only a `next_cursor` this API returned is valid (else 422)",
    },
    "from@/v1/accountability": _date_or_time(),
    "to@/v1/accountability": _date_or_time(),
    "repeated@/v1/accountability": {"type": "integer", "minimum": 1, "maximum": 1000000},
    "from@/v1/reports/meeting": _date_or_time(),
    "to@/v1/reports/meeting": _date_or_time(),
    "street@/v1/reports/meeting": {
        "type": "string",
        "pattern": "^[0-9]{9}$",
        "description": "required with an ops key; a station key's own street by default",
    },
    "start_date@/open311/v2/requests.json": {"type": "string", "format": "date-time"},
    "end_date@/open311/v2/requests.json": {"type": "string", "format": "date-time"},
    "status@/open311/v2/requests.json": {"type": "string", "enum": ["open", "closed", "open,closed", "closed,open"]},
}


def _errors_response(
    description: str, headers: dict[str, Any] | None = None, open311_shape: bool = False
) -> dict[str, Any]:
    schema = O311_ERR if open311_shape else _ref("Errors")
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _harden_paths(paths: dict[str, Any]) -> dict[str, Any]:
    for url, ops in paths.items():
        for op in ops.values():
            o311 = url.startswith("/open311/")
            authed = bool(op.get("security")) or "x-roles" in op
            if o311 and authed:
                op.setdefault("x-roles", ["open311", "ops"] if "get" in ops and op is ops.get("get") else ["open311"])
            params = op.setdefault("parameters", [])
            for i, prm in enumerate(params):
                if prm.get("in") == "header" and prm["name"] == "Idempotency-Key":
                    params[i] = dict(IDEMPOTENCY_HEADER)
                if prm.get("in") == "query":
                    schema = QUERY_SCHEMAS.get(f"{prm['name']}@{url}")
                    if schema:
                        prm["schema"] = schema
                    if url == "/v1/reports/meeting" and prm["name"] == "street":
                        from shared.grid import load_grid

                        prm["required"] = True  # a station may leave it out; the schema holds for every key
                        prm["schema"] = {**prm["schema"], "enum": sorted(load_grid().streets)}
            if url == "/v1/cases/{case_id}/dispatch" and not any(p["name"] == "Idempotency-Key" for p in params):
                pass  # idempotent by dispatch_id in the body
            responses = op["responses"]
            extra: dict[str, Any] = {
                "503": _errors_response(
                    "Redis or the broker is unavailable, or intake is busy: retry after `Retry-After` seconds",
                    RETRY_AFTER,
                    o311,
                ),
            }
            if authed:
                if not o311:
                    extra["401"] = E401
                extra["403"] = _errors_response("Wrong role (or api_key missing/invalid for Open311)", None, o311)
                extra["429"] = _errors_response(
                    "This API key's rate limit (RATE_LIMIT_<ROLE>) is reached: retry after `Retry-After` seconds",
                    RETRY_AFTER,
                    o311,
                )
            if "requestBody" in op:
                extra["408"] = _errors_response("The body did not arrive within HTTP_READ_TIMEOUT_SECONDS", None, o311)
                extra["413"] = _errors_response("Body larger than MAX_REPORT_BYTES (chunked or not)", None, o311)
                extra["415"] = _errors_response("Content-Type is not the one this operation takes", None, o311)
                if not o311:
                    extra.setdefault("422", E422)
            if "{" in url:
                extra["404"] = _errors_response(
                    "No such case (for a department or station key also: not one of its cases — the same answer)",
                    None,
                    o311,
                )
            if any(p.get("in") == "query" for p in params) and not o311 and url != "/v1/cases/{case_id}":
                extra.setdefault("422", E422)
            if any(p.get("in") == "header" and p["name"] == "Idempotency-Key" for p in params):
                if o311:
                    extra.setdefault("400", _o311("Missing or invalid field"))
                else:
                    extra.setdefault("422", E422)
            for code, resp in extra.items():
                responses.setdefault(code, resp)
            if "429" in responses or "503" in responses:
                for code in ("429", "503"):
                    if code in responses:
                        responses[code].setdefault("headers", RETRY_AFTER)
            op["responses"] = dict(sorted(responses.items()))
    return paths


def _district_boxes(steps: int = 8) -> list[tuple[float, float, float, float]]:
    """Axis-aligned boxes inside the district's outline (rows of a steps × steps raster
    over its bounding box, joined where neighbours are inside too): a JSON schema can
    bound a point by ranges only, so these say where a report is surely accepted."""
    from shapely.geometry import box

    from shared.grid import load_grid

    outline = load_grid().boundary
    minx, miny, maxx, maxy = outline.bounds
    dx, dy = (maxx - minx) / steps, (maxy - miny) / steps
    boxes = []
    for row in range(steps):
        y0, y1 = miny + row * dy, miny + (row + 1) * dy
        start = None
        for col in range(steps + 1):
            inside = col < steps and outline.contains(box(minx + col * dx, y0, minx + (col + 1) * dx, y1))
            if inside and start is None:
                start = col
            if not inside and start is not None:
                boxes.append((round(minx + start * dx, 6), round(y0, 6), round(minx + col * dx, 6), round(y1, 6)))
                start = None
    # rounding must not push an edge outside the outline
    return [b for b in boxes if outline.contains(box(*b))]


def _location_variants() -> list[dict[str, Any]]:
    """Where a report may be: any point of the district is accepted (shared/grid.py
    `place`), with no grid code or a code of the registry (patch, community, street)."""
    from shared.grid import load_grid

    grid = load_grid()
    codes = sorted(set(grid._cells) | {c for c in grid._names if len(c) in (9, 12)})
    variants = []
    for minx, miny, maxx, maxy in _district_boxes():
        variants.append(
            {
                "type": "object",
                "required": ["lat", "lon"],
                "additionalProperties": False,
                "properties": {
                    "lat": {"type": "number", "minimum": miny, "maximum": maxy},
                    "lon": {"type": "number", "minimum": minx, "maximum": maxx},
                    "address": {"type": "string", "maxLength": 200, "pattern": LINE_PATTERN},
                    "grid": {"type": "string", "enum": codes},
                },
            }
        )
    return variants


def _harden_schemas(schemas: dict[str, Any]) -> dict[str, Any]:
    from shared.catalog import load_catalog

    codes = sorted(c for c in load_catalog().codes() if re.fullmatch(r"\d{5}", c))
    report = schemas["Report"]["properties"]
    report["category"]["enum"] = codes
    report["location"] = {
        "anyOf": _location_variants(),
        "description": "A point of the district (the boxes are inside its outline; the rest of "
        "the outline is accepted too), optionally with a code of the grid registry",
    }
    report["attributes"]["propertyNames"] = {"pattern": ATTRIBUTE_KEY.pattern}
    reply = schemas["Reply"]
    # what _check_required in replies.py enforces
    solid_reason = {"type": "string", "pattern": SOLID_LINE_PATTERN, "maxLength": 500}
    reply["allOf"] = [
        {
            "if": {"properties": {"action": {"enum": ["reject", "suspend"]}}, "required": ["action"]},
            "then": {"required": ["reason"], "properties": {"reason": solid_reason}},
        },
        {
            "if": {"properties": {"action": {"const": "resolve"}}, "required": ["action"]},
            "then": {"required": ["mode"], "properties": {"mode": {"$ref": REF.format(model="Mode721")}}},
        },
    ]
    task = schemas["CityTask"]  # a city task becomes a report: the same rules
    task["properties"]["category"]["enum"] = codes
    task["anyOf"] = [
        {"properties": {"lat": v["properties"]["lat"], "lon": v["properties"]["lon"]}} for v in _location_variants()
    ]
    new = schemas["NewServiceRequest"]
    form = new["properties"]
    form["service_code"]["enum"] = codes
    # each form field as strict as the report field it becomes (open311.report_from_form)
    form["description"].update(maxLength=2000, pattern=TEXT_PATTERN)
    form["address_string"].update(maxLength=200, pattern=LINE_PATTERN)
    for name in ("first_name", "last_name"):
        form[name].update(maxLength=31, pattern=LINE_PATTERN)  # joined by a space: ≤ 64, the reporter's name
    form["phone"].update(pattern=r"^[0-9+\- ]{0,20}$")
    form["media_url"] = {
        "anyOf": [{"type": "string", "maxLength": 0}, {"type": "string", "pattern": URL_PATTERN, "maxLength": 500}],
        "default": "",
    }
    form["api_key"]["minLength"] = 1
    new["anyOf"] = [
        {"properties": {"lat": v["properties"]["lat"], "long": v["properties"]["lon"]}} for v in _location_variants()
    ]
    return schemas


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gridbus intake",
            "version": "1",
            "description": "Reports, cases, department replies, verification and Open311 GeoReport v2 of the "
            "Qixing District grid (docs/design.md §9). API keys: `gridbus keys create --role <role>`; "
            "roles grid_app, department (bound to one department), ops, open311.",
        },
        "tags": [{"name": n} for n in ("reports", "cases", "catalog", "open311", "ops")],
        "paths": openapi_examples.apply(_harden_paths(_paths())),
        "components": {
            "schemas": _harden_schemas(_schemas()),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer gbk_<id>.<secret>`; the operation's "
                    "`x-roles` lists the roles it accepts",
                },
                "open311_api_key": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "api_key",
                    "description": "Open311 key (role open311 or ops); on POST a form field",
                },
            },
        },
    }


def render() -> str:
    return json.dumps(document(), ensure_ascii=False, indent=2) + "\n"


def write(path: Path = DOC_PATH) -> None:
    path.write_text(render(), encoding="utf-8")
