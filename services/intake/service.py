"""intake: the nameko shell. Entrypoints only; the logic lives in cases.py and store.py."""
from __future__ import annotations

import json
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from services.console.http import ConsoleApi
from services.intake.auth import AuthError, Role, authenticate, require
from services.intake.accountability_api import AccountabilityApi
from services.intake.cases import Registrar, apply_event
from services.intake.command_api import CommandApi
from services.intake.duplicates import load_duplicate_policy
from services.intake.http_api import CasesApi, Open311Api
from services.intake.observe import backlog, observe, publish_backlog
from services.intake.publishing import publish_stored, register_report
from services.intake.replies import (
    Cancellation,
    NoSuspensionRequested,
    NotAssigned,
    SuspensionDecision,
    Verification,
    apply_cancellation,
    apply_reply,
    apply_suspension_decision,
    apply_verification,
)
from services.intake.store import CaseNotFound, CaseStore
from services.intake.validation import InvalidInput, parse
from shared.lifecycle import IllegalTransition
from shared import metrics, topology
from shared.catalog import load_catalog
from shared.config import get_settings
from shared.grid import load_grid
from shared.models import Case, CaseStatus, Reply, Report, parse_event
from shared.nameko_ext import GridbusService, RedisProvider, Rejected, consume_reliably, event_or_reject

log = structlog.get_logger("gridbus.intake")
JSON = {"Content-Type": "application/json; charset=utf-8"}


def json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=str), status=status, headers=JSON)


class Domain(DependencyProvider):
    """Catalog, grid and store, loaded once per process (a bad file stops start-up)."""

    def setup(self) -> None:
        settings = get_settings()
        self.catalog = load_catalog()
        self.grid = load_grid()
        self.duplicates = load_duplicate_policy()
        self.settings = settings

    def get_dependency(self, worker_ctx: Any) -> "Domain":
        return self

    def for_client(self, client: Any) -> tuple[CaseStore, Registrar]:
        store = CaseStore(client, self.settings.district_code)
        return store, Registrar(store, self.catalog, self.grid, self.settings.timezone, self.duplicates,
                                self.settings.onsite_verify_sample_rate)


class BodyTooLarge(ValueError):
    pass


def read_body(request: Request) -> bytes:
    """The request body, refusing (413) anything above MAX_REPORT_BYTES without reading
    more than that, whether or not the client announced its length."""
    limit = get_settings().max_report_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise BodyTooLarge(f"body larger than {limit} bytes")
    return raw


def error_response(exc: Exception, case_id: str = "") -> Response:
    """The one place that turns domain errors into HTTP answers."""
    if isinstance(exc, InvalidInput):
        return json_response(422, exc.as_json())
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": 'Bearer realm="gridbus"'} if exc.status == 401 else {}
        resp = json_response(exc.status, {"errors": [{"field": "Authorization", "message": exc.message}]})
        resp.headers.extend(headers)
        return resp
    if isinstance(exc, NotAssigned):
        return json_response(403, {"errors": [{"field": "case_id", "message": str(exc)}]})
    if isinstance(exc, CaseNotFound):
        return json_response(404, {"errors": [{"field": "case_id", "message": f"no case {case_id}"}]})
    if isinstance(exc, BodyTooLarge):
        metrics.REQUEST_BYTES_REJECTED.inc()
        return json_response(413, {"errors": [{"field": "", "message": str(exc)}]})
    if isinstance(exc, IllegalTransition):
        return json_response(409, {"error": "illegal_transition", "message": str(exc),
                                   "current": exc.current.value, "allowed": [a.value for a in exc.allowed]})
    raise exc


def case_answer(case: Case, applied: bool) -> dict[str, Any]:
    return {"case_id": case.case_id, "status": case.status.value, "version": case.version, "applied": applied}


class IntakeService(GridbusService, CasesApi, Open311Api, AccountabilityApi, CommandApi, ConsoleApi):
    """Entrypoints here and in the mixins (case queries, Open311, accountability, dispatch
    by hand, the operations console services/console/http.py): nameko
    collects entrypoints and dependencies from base classes too."""

    name = "intake"

    redis = RedisProvider()
    domain: Domain = Domain()

    def _register(self, report: Report, channel: str, idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        store, registrar = self.domain.for_client(self.redis)
        result = register_report(self.bus, store, registrar, report, channel, idempotency_key)
        if result.created:
            duplicate_of, on_site = result.duplicate_of, result.status is CaseStatus.resolved
        else:
            first = store.get(result.case_id)
            duplicate_of, on_site = first.duplicate_of, first.handled_on_site is not None
        # a repeat gets the very body the first request got
        status = "duplicate" if duplicate_of else "resolved" if on_site else "registered"
        body: dict[str, Any] = {"case_id": result.case_id, "status": status}
        if duplicate_of:
            body["duplicate_of"] = duplicate_of
        return (202 if result.created else 200), body

    # -------------------------------------------------------------- HTTP
    @http("POST", "/v1/reports")
    def post_report(self, request: Request) -> Response:
        try:
            raw = read_body(request)
            require(authenticate(request.headers, self.redis), Role.grid_app, Role.ops)
        except (BodyTooLarge, AuthError) as exc:
            return error_response(exc)
        try:
            report = parse(Report, raw)
            status, body = self._register(report, "http", request.headers.get("Idempotency-Key"))
        except InvalidInput as exc:
            metrics.REPORTS_RECEIVED.labels("http", "invalid").inc()
            return json_response(422, exc.as_json())
        return json_response(status, body)

    @http("GET", "/v1/cases/<string:case_id>")
    def get_case(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        try:
            principal = require(authenticate(request.headers, self.redis), Role.ops, Role.grid_app, Role.department,
                                Role.station)
            case = store.get(case_id)
            if principal.role is Role.department and all(a.dept != principal.dept for a in case.assignments):
                raise NotAssigned(f"case {case_id} was never assigned to {principal.dept}")
            if principal.role is Role.station and case.street != principal.street:
                raise NotAssigned(f"case {case_id} is not in street {principal.street}")
        except (AuthError, CaseNotFound, NotAssigned) as exc:
            return error_response(exc, case_id)
        return json_response(200, case.model_dump(mode="json", exclude={"applied_messages"}))

    @http("POST", "/v1/cases/<string:case_id>/replies")
    def post_reply(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        try:
            principal = require(authenticate(request.headers, self.redis), Role.department)
            reply = parse(Reply, read_body(request))
            case, events, applied = apply_reply(store, case_id, principal.dept or "", reply)
        except (BodyTooLarge, InvalidInput, AuthError, NotAssigned, CaseNotFound, IllegalTransition) as exc:
            return error_response(exc, case_id)
        publish_stored(self.bus, store, events)
        observe(case, events)
        log.info("reply_applied", case_id=case_id, dept=principal.dept, action=reply.action.value,
                 status=case.status.value, applied=applied, channel="http")
        return json_response(200, case_answer(case, applied))

    @http("POST", "/v1/cases/<string:case_id>/verification")
    def post_verification(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        try:
            principal = require(authenticate(request.headers, self.redis), Role.grid_app, Role.ops)
            check = parse(Verification, read_body(request))
            key = request.headers.get("Idempotency-Key") or f"{check.result}:{check.verifier}:{check.note}"
            case, events, applied = apply_verification(store, case_id, check, f"verify:{key}",
                                                       f"{principal.actor}:{check.verifier}".rstrip(":"))
        except (BodyTooLarge, InvalidInput, AuthError, CaseNotFound, IllegalTransition) as exc:
            return error_response(exc, case_id)
        publish_stored(self.bus, store, events)
        log.info("verification_applied", case_id=case_id, result=check.result, status=case.status.value)
        return json_response(200, case_answer(case, applied))

    @http("POST", "/v1/cases/<string:case_id>/suspension")
    def post_suspension(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        try:
            principal = require(authenticate(request.headers, self.redis), Role.ops)
            decision = parse(SuspensionDecision, read_body(request))
            key = request.headers.get("Idempotency-Key") or f"{decision.decision}:{decision.approver}:{decision.note}"
            case, events, applied = apply_suspension_decision(store, case_id, decision, f"suspension:{key}",
                                                              principal.actor)
        except NoSuspensionRequested as exc:
            return json_response(409, {"error": "no_suspension_requested", "message": str(exc)})
        except (BodyTooLarge, InvalidInput, AuthError, CaseNotFound, IllegalTransition) as exc:
            return error_response(exc, case_id)
        publish_stored(self.bus, store, events)
        log.info("suspension_decided", case_id=case_id, decision=decision.decision, status=case.status.value)
        return json_response(200, case_answer(case, applied))

    @http("POST", "/v1/cases/<string:case_id>/cancellation")
    def post_cancellation(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        try:
            principal = require(authenticate(request.headers, self.redis), Role.ops)
            check = parse(Cancellation, read_body(request))
            key = request.headers.get("Idempotency-Key") or check.reason
            case, events, applied = apply_cancellation(store, case_id, check, f"cancel:{key}", principal.actor)
        except (BodyTooLarge, InvalidInput, AuthError, CaseNotFound, IllegalTransition) as exc:
            return error_response(exc, case_id)
        publish_stored(self.bus, store, events)
        log.info("case_cancelled", case_id=case_id, applied=applied)
        return json_response(200, case_answer(case, applied))

    @http("GET", "/v1/catalog")
    def get_catalog(self, request: Request) -> Response:
        return json_response(200, self.domain.catalog.tree())

    @http("GET", "/healthz")
    def healthz(self, request: Request) -> Response:
        self.redis.ping()
        return json_response(200, {"status": "ok"})

    # -------------------------------------------------------------- AMQP
    @consume_reliably(topology.Q_INTAKE_REPORTS)
    def consume_report(self, body: Any) -> None:
        try:
            report = parse(Report, body)
            self._register(report, "amqp")
        except InvalidInput as exc:
            metrics.REPORTS_RECEIVED.labels("amqp", "invalid").inc()
            raise Rejected(json.dumps(exc.as_json()["errors"], ensure_ascii=False), "invalid_report") from None

    @consume_reliably(topology.Q_INTAKE_REPLIES, with_properties=True)
    def consume_reply(self, body: Any, properties: dict[str, Any]) -> None:
        # Who replies is the broker-validated user_id, never a field of the body.
        dept = topology.dept_of_user(properties.get("user_id"))
        if dept is None:
            raise Rejected(f"reply without a department user_id (got {properties.get('user_id')!r})", "no_user_id")
        case_id = body.get("case_id") if isinstance(body, dict) else None
        if not case_id:
            raise Rejected("reply without case_id", "invalid_reply")
        store, _ = self.domain.for_client(self.redis)
        try:
            reply = parse(Reply, body)
            case, events, applied = apply_reply(store, case_id, dept, reply)
        except InvalidInput as exc:
            raise Rejected(json.dumps(exc.as_json()["errors"], ensure_ascii=False), "invalid_reply") from None
        except CaseNotFound:
            raise Rejected(f"unknown case {case_id}", "unknown_case") from None
        except NotAssigned as exc:
            raise Rejected(str(exc), "not_assigned") from None
        except IllegalTransition as exc:
            raise Rejected(str(exc), "illegal_transition") from None
        publish_stored(self.bus, store, events)
        observe(case, events)
        log.info("reply_applied", case_id=case_id, dept=dept, action=reply.action.value,
                 status=case.status.value, applied=applied, channel="amqp")

    @consume_reliably(topology.Q_INTAKE_EVENTS)
    def consume_event(self, body: Any) -> None:
        event = event_or_reject(body)
        store, _ = self.domain.for_client(self.redis)
        try:
            case, events, _ = apply_event(store, event)
        except CaseNotFound:
            raise Rejected(f"unknown case {event.case_id}", "unknown_case") from None
        log.info("case_changed", case_id=case.case_id, status=case.status.value, by=body.get("event"))
        publish_stored(self.bus, store, events)
        observe(case, events)

    # -------------------------------------------------------------- indicators
    @timer(interval=30)
    def refresh_backlog(self) -> None:
        store, _ = self.domain.for_client(self.redis)
        ids = store.open_case_ids()
        cases = [c for i in range(0, len(ids), 500) for c in store.get_many(ids[i:i + 500]) if c is not None]
        publish_backlog(backlog(cases))

    # -------------------------------------------------------------- outbox relay
    @timer(interval=get_settings().outbox_relay_seconds)
    def relay_outbox(self) -> None:
        store, _ = self.domain.for_client(self.redis)
        events = [parse_event(body) for _, body in store.outbox_older_than(get_settings().outbox_relay_seconds)]
        if events:
            log.info("outbox_relay", count=len(events))
            publish_stored(self.bus, store, events)
        metrics.OUTBOX_PENDING.set(store.outbox_size())
        metrics.OUTBOX_OLDEST_AGE.set(store.outbox_oldest_age())
