"""The command centre's hands over HTTP, as a nameko mixin of `IntakeService`: dispatch
by hand (`POST /v1/cases/{id}/dispatch`), evaluation (`POST /v1/cases/{id}/evaluation`)
and the joint-meeting agenda (`GET /v1/reports/meeting`).

Entrypoints only: the rules are in dispatching.py, evaluation.py and
services/reports/meeting.py. Uses what IntakeService provides: `self.redis`, `self.bus`,
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
    department_codes: set[str] = DepartmentCodes()  # type: ignore[assignment]

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
        log.info("dispatch_requested", case_id=case_id, by=who.actor, applied=applied,
                 departments=body.departments, hand_up=body.hand_up, level=body.level)
        return json_response(202 if applied else 200, case_answer(case, applied))

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
