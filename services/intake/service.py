"""intake: the nameko shell. Entrypoints only; the logic lives in cases.py and store.py."""

from __future__ import annotations

import json
from typing import Any

import structlog
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from werkzeug.wrappers import Request, Response

from services.intake.accountability_api import AccountabilityApi
from services.intake.auth import Role
from services.intake.boundary import FallbackApi, api, json_response, principal, scoped_key
from services.intake.cases import Registrar, apply_event
from services.intake.command_api import CommandApi
from services.intake.console.http import ConsoleApi
from services.intake.duplicates import load_duplicate_policy
from services.intake.http_api import CasesApi, Open311Api
from services.intake.observe import backlog, observe, publish_backlog
from services.intake.publishing import OutboxCompletions, publish_stored, register_report, relay_stored
from services.intake.reconcile import repair_stuck
from services.intake.replies import (
    Cancellation,
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
from shared import metrics, topology
from shared.archive import ArchiveReader
from shared.catalog import load_catalog
from shared.config import get_settings
from shared.grid import load_grid
from shared.lifecycle import IllegalTransition
from shared.models import Case, CaseStatus, Reply, Report
from shared.nameko_ext import GridbusService, RedisProvider, Rejected, consume_reliably, event_or_reject
from shared.outbox import intake_outbox
from shared.reconcile import take_turn
from shared.redisdb import connect

log = structlog.get_logger("gridbus.intake")


class Domain(DependencyProvider):
    """Catalog, grid and store, loaded once per process (a bad file stops start-up)."""

    def setup(self) -> None:
        settings = get_settings()
        self.catalog = load_catalog()
        self.grid = load_grid()
        self.duplicates = load_duplicate_policy()
        self.settings = settings
        self.archive = ArchiveReader(settings.database_url)  # connects on first use only
        self.completions = OutboxCompletions(intake_outbox(connect(settings)))
        self._stores: dict[int, tuple[CaseStore, Registrar]] = {}

    def stop(self) -> None:
        self.completions.stop()  # workers are done: what they published leaves the outbox now

    def get_dependency(self, worker_ctx: Any) -> "Domain":
        return self

    def for_client(self, client: Any) -> tuple[CaseStore, Registrar]:
        # one pair per client (the container has one): both hold no state of a request, and
        # building them registered their scripts (a SHA-1 of each source) on every message
        pair = self._stores.get(id(client))
        if pair is None or pair[0].r is not client:
            store = CaseStore(
                client,
                self.settings.district_code,
                self.archive,
                self.completions.add,
                self.completions.publish_later,
            )
            pair = (
                store,
                Registrar(
                    store,
                    self.catalog,
                    self.grid,
                    self.settings.timezone,
                    self.duplicates,
                    self.settings.onsite_verify_sample_rate,
                ),
            )
            self._stores[id(client)] = pair
        return pair


def case_answer(case: Case, applied: bool) -> dict[str, Any]:
    return {"case_id": case.case_id, "status": case.status.value, "version": case.version, "applied": applied}


class IntakeService(GridbusService, CasesApi, Open311Api, AccountabilityApi, CommandApi, ConsoleApi, FallbackApi):
    """Entrypoints here and in the mixins (case queries, Open311, accountability, dispatch
    by hand, the operations console services/intake/console/http.py, JSON 404s): nameko
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
    # Every route goes through services/intake/boundary.py: authentication, rate limit,
    # Content-Type and the body are checked before a worker runs; errors are raised and
    # answered by its table.
    @api("POST", "/v1/reports", roles=(Role.grid_app, Role.ops), body="json")
    def post_report(self, request: Request) -> Response:
        try:
            report = parse(Report, request.get_data())
            # the Idempotency-Key is scoped to the API key that sent it
            status, body = self._register(report, "http", scoped_key(request, "idem"))
        except InvalidInput:
            metrics.REPORTS_RECEIVED.labels("http", "invalid").inc()
            raise
        return json_response(status, body)

    @api("GET", "/v1/cases/<string:case_id>", roles=(Role.ops, Role.grid_app, Role.department, Role.station, Role.city))
    def get_case(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        who = principal(request)
        case = store.get(case_id)
        # "not yours" answers exactly like "no such case": ids of other departments' (streets') cases do not leak
        if who.role is Role.department and all(a.dept != who.dept for a in case.assignments):
            raise CaseNotFound(case_id)
        if who.role is Role.station and case.street != who.street:
            raise CaseNotFound(case_id)
        if who.role is Role.city and case.source is None:  # the city platform reads what it handed over
            raise CaseNotFound(case_id)
        return json_response(200, case.model_dump(mode="json", exclude={"applied_messages"}))

    @api("POST", "/v1/cases/<string:case_id>/replies", roles=(Role.department,), body="json")
    def post_reply(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        dept = principal(request).dept or ""
        reply = parse(Reply, request.get_data())
        try:
            case, events, applied = apply_reply(store, case_id, dept, reply)
        except NotAssigned:
            if all(a.dept != dept for a in store.get(case_id).assignments):
                raise CaseNotFound(case_id) from None  # never this department's: as if it did not exist
            raise
        publish_stored(self.bus, store, events)
        observe(case, events)
        log.info(
            "reply_applied",
            case_id=case_id,
            dept=dept,
            action=reply.action.value,
            status=case.status.value,
            applied=applied,
            channel="http",
        )
        return json_response(200, case_answer(case, applied))

    @api("POST", "/v1/cases/<string:case_id>/verification", roles=(Role.grid_app, Role.ops), body="json")
    def post_verification(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        who = principal(request)
        check = parse(Verification, request.get_data())
        key = scoped_key(request, "verify") or f"verify:{check.result}:{check.verifier}:{check.note}"
        case, events, applied = apply_verification(
            store, case_id, check, key, f"{who.actor}:{check.verifier}".rstrip(":")
        )
        publish_stored(self.bus, store, events)
        log.info("verification_applied", case_id=case_id, result=check.result, status=case.status.value)
        return json_response(200, case_answer(case, applied))

    @api("POST", "/v1/cases/<string:case_id>/suspension", roles=(Role.ops,), body="json")
    def post_suspension(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        decision = parse(SuspensionDecision, request.get_data())
        key = scoped_key(request, "suspension") or f"suspension:{decision.decision}:{decision.approver}:{decision.note}"
        case, events, applied = apply_suspension_decision(store, case_id, decision, key, principal(request).actor)
        publish_stored(self.bus, store, events)
        log.info("suspension_decided", case_id=case_id, decision=decision.decision, status=case.status.value)
        return json_response(200, case_answer(case, applied))

    @api("POST", "/v1/cases/<string:case_id>/cancellation", roles=(Role.ops,), body="json")
    def post_cancellation(self, request: Request, case_id: str) -> Response:
        store, _ = self.domain.for_client(self.redis)
        check = parse(Cancellation, request.get_data())
        key = scoped_key(request, "cancel") or f"cancel:{check.reason}"
        case, events, applied = apply_cancellation(store, case_id, check, key, principal(request).actor)
        publish_stored(self.bus, store, events)
        log.info("case_cancelled", case_id=case_id, applied=applied)
        return json_response(200, case_answer(case, applied))

    @api("GET", "/v1/catalog")
    def get_catalog(self, request: Request) -> Response:
        return json_response(200, self.domain.catalog.tree())

    @api("GET", "/healthz")
    def healthz(self, request: Request) -> Response:
        self.redis.ping()  # down: 503 with Retry-After through the boundary
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
        log.info(
            "reply_applied",
            case_id=case_id,
            dept=dept,
            action=reply.action.value,
            status=case.status.value,
            applied=applied,
            channel="amqp",
        )

    @consume_reliably(topology.Q_INTAKE_EVENTS)
    def consume_event(self, body: Any) -> None:
        event = event_or_reject(body)
        store, _ = self.domain.for_client(self.redis)
        try:
            case, events, applied = apply_event(store, event)
        except CaseNotFound:
            raise Rejected(f"unknown case {event.case_id}", "unknown_case") from None
        log.info("case_changed", case_id=case.case_id, status=case.status.value, by=body.get("event"))
        publish_stored(self.bus, store, events)
        observe(case, events, applied=event if applied else None)

    # -------------------------------------------------------------- indicators
    @timer(interval=30)
    def refresh_backlog(self) -> None:
        store, _ = self.domain.for_client(self.redis)
        ids = store.open_case_ids()
        cases = [c for i in range(0, len(ids), 500) for c in store.get_many(ids[i : i + 500]) if c is not None]
        publish_backlog(backlog(cases))

    # -------------------------------------------------------------- repair
    @timer(interval=get_settings().reconcile_seconds)
    def reconcile(self) -> None:
        """Cases stuck in `registered` get their case.registered again (one replica a turn)."""
        settings = get_settings()
        if not take_turn(self.redis, "intake", settings.reconcile_seconds):
            return
        store, _ = self.domain.for_client(self.redis)
        repaired = repair_stuck(
            store, self.bus.publish_events, settings.reconcile_after_seconds, settings.reconcile_window_seconds
        )
        if repaired:
            metrics.REPAIRS.labels("intake", "registered_reemitted").inc(len(repaired))

    # -------------------------------------------------------------- outbox relay
    @timer(interval=get_settings().outbox_relay_seconds)
    def relay_outbox(self) -> None:
        store, _ = self.domain.for_client(self.redis)
        relayed = relay_stored(self.bus, store, get_settings().outbox_relay_after_seconds)
        if relayed:
            metrics.REPAIRS.labels("intake", "outbox_relayed").inc(relayed)
        metrics.OUTBOX_PENDING.set(store.outbox.size())
        metrics.OUTBOX_OLDEST_AGE.set(store.outbox.oldest_age())
