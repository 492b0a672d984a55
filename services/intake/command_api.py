"""The command centre's hands over HTTP, as a nameko mixin of `IntakeService`: dispatch
by hand (`POST /v1/cases/{id}/dispatch`), evaluation (`POST /v1/cases/{id}/evaluation`),
the joint-meeting agenda (`GET /v1/reports/meeting`) and the city platform's task
hand-over (`POST /v1/city/tasks`).

Entrypoints only: the rules are in dispatching.py, evaluation.py and
services/intake/reports/meeting.py. Uses what IntakeService provides: `self.redis`, `self.bus`,
`self.domain`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from services.intake.auth import Role
from services.intake.boundary import api, json_response, principal
from services.intake.dispatching import ManualDispatch, apply_manual_dispatch
from services.intake.evaluation import EvaluationRequest, NotClosed, apply_evaluation
from services.intake.validation import parse

log = structlog.get_logger("gridbus.intake.command")


class DepartmentCodes(DependencyProvider):
    """The department codes of departments.yaml (read at start-up)."""

    def setup(self) -> None:
        from shared.departments import load_departments

        self.codes = {d.code for d in load_departments()}

    def get_dependency(self, worker_ctx: Any) -> set[str]:
        return self.codes


class CommandApi:
    redis: Any
    bus: Any
    domain: Any
    department_codes: set[str] = DepartmentCodes()

    @api("POST", "/v1/cases/<string:case_id>/dispatch", roles=(Role.ops, Role.station), body="json")
    def post_dispatch(self, request: Request, case_id: str) -> Response:
        # imported here: service.py imports this module while it is being defined
        from services.intake.publishing import publish_stored
        from services.intake.service import case_answer

        store, _ = self.domain.for_client(self.redis)
        who = principal(request)
        body = parse(ManualDispatch, request.get_data())
        case, events, applied = apply_manual_dispatch(store, case_id, body, who, self.department_codes)
        publish_stored(self.bus, store, events)
        log.info(
            "dispatch_requested",
            case_id=case_id,
            by=who.actor,
            applied=applied,
            departments=body.departments,
            hand_up=body.hand_up,
            level=body.level,
        )
        return json_response(202 if applied else 200, case_answer(case, applied))

    @api("POST", "/v1/city/tasks", roles=(Role.city, Role.ops), body="cloudevents")
    def post_city_task(self, request: Request) -> Response:
        """A city-platform task (12345 hotline …) handed over as a structured CloudEvent:
        registered like any report, with `source` kept (the same task again: 200)."""
        from services.intake.validation import FieldError, InvalidInput
        from shared import metrics
        from shared.citytasks import TaskInvalid, parse_task
        from shared.crosswalk import load_crosswalk

        try:
            report = parse_task(request.get_data(), load_crosswalk())
        except TaskInvalid as exc:
            metrics.REPORTS_RECEIVED.labels("city", "invalid").inc()
            raise InvalidInput([FieldError(f or "body", m) for f, m in exc.errors]) from None
        status, body = self._register(report, "city", None)  # type: ignore[attr-defined]
        return json_response(status, body)

    @api("POST", "/v1/cases/<string:case_id>/evaluation", roles=(Role.grid_app, Role.ops), body="json")
    def post_evaluation(self, request: Request, case_id: str) -> Response:
        from services.intake.publishing import publish_stored
        from services.intake.service import case_answer

        store, _ = self.domain.for_client(self.redis)
        window = timedelta(hours=self.domain.settings.evaluation_reopen_hours)
        body = parse(EvaluationRequest, request.get_data())
        try:
            case, events, applied = apply_evaluation(store, case_id, body, principal(request).actor, window)
        except NotClosed as exc:
            return json_response(409, {"error": "not_closed", "message": str(exc), "current": exc.current.value})
        publish_stored(self.bus, store, events)
        log.info("case_evaluated", case_id=case_id, rating=body.rating, status=case.status.value, applied=applied)
        return json_response(200, case_answer(case, applied))

    @api("GET", "/v1/reports/meeting", roles=(Role.ops, Role.station))
    def get_meeting_agenda(self, request: Request) -> Response:
        from zoneinfo import ZoneInfo

        from services.intake.auth import Forbidden
        from services.intake.reports.meeting import agenda_for, markdown, parse_period, to_csv
        from services.intake.validation import FieldError, InvalidInput

        store, _ = self.domain.for_client(self.redis)
        tz = ZoneInfo(self.domain.settings.timezone)
        args = request.args
        who = principal(request)
        street = args.get("street", "").strip() or who.street or ""
        if who.role is Role.station and street != who.street:
            raise Forbidden(f"this key is the grid station of street {who.street}, not {street}")
        fmt = args.get("format", "json")
        errors = []
        if fmt not in ("json", "markdown", "csv"):
            errors.append(FieldError("format", "json, markdown or csv"))
        for name in ("street", "from", "to"):
            if not (street if name == "street" else args.get(name, "").strip()):
                errors.append(FieldError(name, "required"))
        if not errors:
            try:
                lo, hi = parse_period(args["from"], args["to"], tz)
                agenda = agenda_for(store, street, lo, hi)
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                errors.append(FieldError(field, message))
        if errors:
            raise InvalidInput(errors)
        if fmt == "markdown":
            return Response(markdown(agenda, tz), status=200, headers={"Content-Type": "text/markdown; charset=utf-8"})
        if fmt == "csv":
            return Response(to_csv(agenda), status=200, headers={"Content-Type": "text/csv; charset=utf-8"})
        return json_response(200, agenda.as_dict())
