"""Intake's query API and Open311 GeoReport v2, as nameko mixins of `IntakeService`.

Entrypoints only: parsing lives in queries.py and open311.py, keys in auth.py. nameko
collects `@http` entrypoints and dependency providers from base classes too (it walks
the class with `inspect.getmembers`), so `class IntakeService(CasesApi, Open311Api)`
serves them. The mixins use what IntakeService provides: `self.redis` (redis.Redis),
`self.bus` (shared.bus.Bus) and `self.domain` (`.catalog`, `.settings`,
`.for_client(redis) -> (CaseStore, Registrar)`).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import structlog
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from services.intake import open311, queries
from services.intake.auth import Forbidden, Principal, Role
from services.intake.boundary import api, idempotency_key, json_response, principal
from services.intake.openapi import document
from services.intake.publishing import register_report
from services.intake.store import CaseNotFound
from services.intake.validation import InvalidInput
from shared import metrics

log = structlog.get_logger("gridbus.intake.api")
OPEN311_MAX_SCAN = 5000  # no cursor in Open311: one request may read more (90-day window)


class AgencyNames(DependencyProvider):
    """Department code → name, for Open311's `agency_responsible` (read at start-up)."""

    def setup(self) -> None:
        from shared.departments import load_departments

        self.names = {d.code: d.full_name or d.name for d in load_departments()}

    def get_dependency(self, worker_ctx: Any) -> dict[str, str]:
        return self.names


class CasesApi:
    """`GET /v1/cases` (Bearer ops, grid_app or department) and `GET /openapi.json`."""

    redis: Any
    domain: Any

    @api("GET", "/v1/cases", roles=(Role.ops, Role.grid_app, Role.department))
    def list_cases_http(self, request: Request) -> Response:
        tz = ZoneInfo(self.domain.settings.timezone)
        query = _scoped(queries.parse_query(request.args, tz), principal(request))
        store, _ = self.domain.for_client(self.redis)
        page = queries.list_cases(store, query)
        return json_response(200, page.model_dump(mode="json"))

    @api("GET", "/openapi.json")
    def openapi_document(self, request: Request) -> Response:
        return json_response(200, document())


def _scoped(query: queries.CaseQuery, principal: Principal) -> queries.CaseQuery:
    """A department sees only cases that were assigned to it."""
    if principal.role is not Role.department:
        return query
    if query.filter.dept not in (None, principal.dept):
        raise Forbidden(f"a {principal.dept} key may list only cases assigned to {principal.dept}")
    f = query.filter
    scoped = queries.CaseFilter(f.statuses, principal.dept, f.grid, f.category, f.since, f.until)
    return queries.CaseQuery(scoped, query.after, query.limit)


class Open311Api:
    """Open311 GeoReport v2, JSON only, under /open311/v2/. The spec passes `api_key` as
    a parameter (a form field on POST); a Bearer header is accepted as well."""

    redis: Any
    bus: Any
    domain: Any
    open311_agencies: dict[str, str] = AgencyNames()

    @api("GET", "/open311/v2/services.json", style="open311")
    def open311_services(self, request: Request) -> Response:
        return json_response(200, [s.model_dump(mode="json") for s in open311.services(self.domain.catalog)])

    @api("GET", "/open311/v2/services/<string:service_code>.json", style="open311")
    def open311_service(self, request: Request, service_code: str) -> Response:
        return json_response(200, open311.service_definition(self.domain.catalog, service_code).model_dump(mode="json"))

    @api("POST", "/open311/v2/requests.json", roles=(Role.open311,), auth="open311", body="form", style="open311")
    def open311_post_request(self, request: Request) -> Response:
        who = principal(request)
        try:
            report = open311.report_from_form(request.form, who.key_id, self.domain.catalog, idempotency_key(request))
            store, registrar = self.domain.for_client(self.redis)
            try:
                result = register_report(self.bus, store, registrar, report, "open311", key_id=who.key_id)
            except InvalidInput as exc:
                raise open311.invalid_to_open311(exc) from None
        except InvalidInput as exc:
            raise open311.invalid_to_open311(exc) from None
        except open311.Open311Error as exc:
            if exc.status == 400:
                metrics.REPORTS_RECEIVED.labels("open311", "invalid").inc()
            raise
        return json_response(201 if result.created else 200, [open311.created(result.case_id).model_dump(mode="json")])

    @api("GET", "/open311/v2/requests.json", roles=(Role.open311, Role.ops), auth="open311", style="open311")
    def open311_list_requests(self, request: Request) -> Response:
        tz = ZoneInfo(self.domain.settings.timezone)
        store, _ = self.domain.for_client(self.redis)
        q = open311.parse_requests_query(request.args, tz)
        if q.ids:
            cases = []
            for case_id in q.ids[: open311.MAX_RESULTS]:
                try:
                    cases.append(store.get(case_id))
                except CaseNotFound:
                    continue
        else:
            f = queries.CaseFilter(since=q.start, until=q.end)
            cases, _, _ = queries.scan(store, f, limit=open311.MAX_RESULTS, max_scan=OPEN311_MAX_SCAN, extra=q.matches)
        return json_response(
            200,
            [
                open311.request_of(c, self.domain.catalog, self.open311_agencies, tz).model_dump(mode="json")
                for c in cases
            ],
        )

    @api(
        "GET",
        "/open311/v2/requests/<string:service_request_id>.json",
        roles=(Role.open311, Role.ops),
        auth="open311",
        style="open311",
    )
    def open311_get_request(self, request: Request, service_request_id: str) -> Response:
        tz = ZoneInfo(self.domain.settings.timezone)
        store, _ = self.domain.for_client(self.redis)
        try:
            case = store.get(service_request_id)
        except CaseNotFound:
            raise open311.Open311Error(404, f"service_request_id {service_request_id} not found") from None
        return json_response(
            200, [open311.request_of(case, self.domain.catalog, self.open311_agencies, tz).model_dump(mode="json")]
        )
