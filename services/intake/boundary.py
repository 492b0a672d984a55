"""Intake's HTTP boundary: one entrypoint for every route, one table of errors, one JSON
answer.

`@api(method, url, roles=…)` replaces nameko's `@http`. Before any nameko worker is
taken, in the connection's own green thread, a request is
1. authenticated (Bearer key, or Open311's `api_key`) and its role checked → 401/403;
2. rate limited per API key (a Redis token bucket, limits per role; checked with the key in
   one script, RateLimiter.admit) → 429 + Retry-After;
3. for a route with a body: `Content-Type` checked → 415; the body read — chunked or
   with a Content-Length — up to MAX_REPORT_BYTES → 413, within
   HTTP_READ_TIMEOUT_SECONDS → 408.
Only then does it take one of INTAKE_HTTP_WORKERS slots and a nameko worker, with the
body already in memory. So a client that sends its body slowly holds a green thread and
a socket, never a worker: the AMQP consumers keep their own share of the pool (the
container's `max_workers` is the AMQP share plus the HTTP share, shared/config.py), and
an unauthenticated client never makes intake read its body.

Every exception, raised before the worker or by the handler, becomes a JSON answer
through `ERRORS` (the mapped-errors table): 4xx naming the field, 503 with Retry-After
when Redis or the broker is unavailable (`shared.resilience.transient_dependency`, the
consumers' own test, `DependencyUnavailable` included), and for anything unexpected a 500 carrying an
error id that is logged with the traceback. Handlers never see nameko's own error
logging: the wrapper answers before nameko would log.

Other intake mixins reuse all of it: decorate with `@api(...)`, read the caller with
`principal(request)`, the body with `request.get_data()`, raise domain errors.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import eventlet
import structlog
from eventlet.event import Event
from eventlet.semaphore import Semaphore
from nameko.extensions import SharedExtension
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from services.intake import open311
from services.intake.auth import (
    AuthError,
    Principal,
    Role,
    authenticate,
    bearer_token,
    require,
    use_time,
)
from services.intake.ratelimit import RateLimiter
from services.intake.replies import NoSuspensionRequested, NotAssigned
from services.intake.store import CaseNotFound, VersionConflict
from services.intake.validation import IDEMPOTENCY_KEY, FieldError, InvalidInput
from shared import metrics
from shared.config import get_settings
from shared.lifecycle import IllegalTransition
from shared.redisdb import connect
from shared.resilience import transient_dependency

log = structlog.get_logger("gridbus.intake.http")
JSON_TYPE = "application/json; charset=utf-8"
RETRY_AFTER_S = 2  # what a 503 tells clients to wait
PRINCIPAL = "gridbus.principal"
IDEMPOTENCY_HELP = "1–40 of A–Z a–z 0–9 _ . : -"
ALL_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"


# -- errors of the boundary itself ---------------------------------------------------
class ApiError(Exception):
    """An HTTP error with the field it is about (the request's fault)."""

    status = 400

    def __init__(self, message: str, field: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class RequestTimeout(ApiError):
    status = 408


class BodyTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class RateLimited(ApiError):
    status = 429


class NotFound(ApiError):
    status = 404


class Unavailable(ApiError):
    """Intake cannot serve right now (all HTTP worker slots busy)."""

    status = 503


@dataclass
class Problem:
    """One error answer before it is rendered (intake's shape or Open311's)."""

    status: int
    field: str
    message: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # `field` is a field name here
    body: Any = None  # a body of its own (409 illegal transition), else {"errors": [...]}
    errors: list[FieldError] | None = None


def _unavailable(exc: BaseException, dependency: str) -> Problem:
    metrics.HTTP_DEPENDENCY_UNAVAILABLE.inc()
    log.warning("http_dependency_unavailable", dependency=dependency, error=type(exc).__name__, message=str(exc))
    return Problem(503, "", "a dependency of intake is unavailable; retry later", {"Retry-After": str(RETRY_AFTER_S)})


def _http_exception(exc: HTTPException) -> Problem:
    return Problem(exc.code or 400, "", exc.description or exc.name)


# The mapped-errors table: the first row whose type matches answers. Order matters where
# types inherit (Unauthorized/Forbidden are AuthError; CaseNotFound is a KeyError).
ERRORS: tuple[tuple[tuple[type[BaseException], ...], Callable[[Any], Problem]], ...] = (
    ((ApiError,), lambda e: Problem(e.status, e.field, e.message, e.headers)),
    ((InvalidInput,), lambda e: Problem(422, e.errors[0].field if e.errors else "", str(e), errors=e.errors)),
    ((AuthError,), lambda e: Problem(e.status, "Authorization", e.message, e.headers())),
    ((CaseNotFound,), lambda e: Problem(404, "case_id", f"no case {e.args[0] if e.args else ''}")),
    (
        (IllegalTransition,),
        lambda e: Problem(
            409,
            "action",
            str(e),
            body={
                "error": "illegal_transition",
                "message": str(e),
                "current": e.current.value,
                "allowed": [a.value for a in e.allowed],
            },
        ),
    ),
    (
        (NoSuspensionRequested,),
        lambda e: Problem(409, "decision", str(e), body={"error": "no_suspension_requested", "message": str(e)}),
    ),
    ((NotAssigned,), lambda e: Problem(403, "case_id", str(e))),
    ((open311.Open311Error,), lambda e: Problem(e.status, "", e.description)),
    ((VersionConflict,), lambda e: Problem(503, "", "the case changed meanwhile; retry", {"Retry-After": "1"})),
    ((HTTPException,), _http_exception),
)


def problem_of(exc: BaseException, request: Request | None = None) -> Problem:
    for types, make in ERRORS:
        if isinstance(exc, types):
            return make(exc)
    # Redis, the broker, PostgreSQL down or busy (shared/resilience.py decides, for the
    # consumers too): the request may succeed later
    dependency = transient_dependency(exc)
    if dependency:
        return _unavailable(exc, dependency)
    error_id = uuid.uuid4().hex[:12]
    metrics.HTTP_UNEXPECTED_ERRORS.inc()
    log.error(
        "http_unexpected_error",
        error_id=error_id,
        path=request.path if request else None,
        method=request.method if request else None,
        exc_info=exc,
    )
    return Problem(500, "", f"internal error {error_id}; it has been logged")


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """The one JSON answer of intake's HTTP API."""
    resp = Response(json.dumps(body, ensure_ascii=False, default=str), status=status, content_type=JSON_TYPE)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def render(p: Problem, style: str = "gridbus") -> Response:
    headers = dict(p.headers)
    if p.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="gridbus"')
    if p.status == 413:
        metrics.REQUEST_BYTES_REJECTED.inc()
    if style == "open311":
        # Open311 answers errors as [{"code", "description"}]; an auth failure is its 403
        status = 403 if p.status == 401 else p.status
        text = f"{p.field}: {p.message}" if p.field and not p.message.startswith(p.field) else p.message
        return json_response(status, [{"code": status, "description": text}], headers)
    if p.body is not None:
        return json_response(p.status, p.body, headers)
    errors = p.errors or [FieldError(p.field, p.message)]
    return json_response(p.status, {"errors": [{"field": e.field, "message": e.message} for e in errors]}, headers)


def error_response(exc: BaseException, request: Request | None = None, style: str = "gridbus") -> Response:
    return render(problem_of(exc, request), style)


# -- what a handler reads --------------------------------------------------------------
def principal(request: Request) -> Principal:
    """Who sent the request (set by the boundary before the handler runs)."""
    return request.environ[PRINCIPAL]


def idempotency_key(request: Request) -> str | None:
    """The `Idempotency-Key` header, validated; None when absent. Callers scope it to the
    principal (a key holder can never hit another holder's key)."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.match(value):
        raise InvalidInput([FieldError("Idempotency-Key", IDEMPOTENCY_HELP)])
    return value


def scoped_key(request: Request, purpose: str) -> str | None:
    """`<purpose>:<API key id>:<Idempotency-Key>`, or None without the header."""
    key = idempotency_key(request)
    return None if key is None else f"{purpose}:{principal(request).key_id}:{key}"


# -- the gate: work done in the connection's green thread ------------------------------
class HttpGate(SharedExtension):
    """Shared by all `api` entrypoints of a container: the Redis client that checks keys
    and rate limits, and the HTTP share of the worker pool."""

    def setup(self) -> None:
        settings = get_settings()
        self.settings = settings
        self.client = connect(settings)
        self.limiter = RateLimiter(self.client, settings)
        self.slots = Semaphore(settings.intake_http_workers)

    def stop(self) -> None:
        self.client.close()
        super().stop()


def _is_json(request: Request) -> bool:
    return request.mimetype == "application/json"


def _is_cloudevent(request: Request) -> bool:
    # structured mode is application/cloudevents+json (CloudEvents HTTP binding §3.2)
    return request.mimetype in ("application/cloudevents+json", "application/json")


def _is_form(request: Request) -> bool:
    return request.mimetype == "application/x-www-form-urlencoded"


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The whole body, chunked or with a Content-Length, refusing (413) anything above
    `limit` without reading more than limit + 1 bytes. Under eventlet's WSGI server a
    chunked request has no CONTENT_LENGTH and werkzeug would hand out an empty stream
    (docs/design.md §10): read eventlet's own input, which decodes chunks."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not chunked:
        try:
            n = int(length) if length else 0
        except ValueError:
            raise ApiError("Content-Length is not a number", "Content-Length") from None
        if n > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes", "")
        raw = stream.read(n) if n > 0 else b""
        if len(raw) < n:
            raise ApiError(f"body ended after {len(raw)} of {n} bytes", "Content-Length")
        return raw
    parts: list[bytes] = []
    size = 0
    while True:
        part = stream.read(min(65536, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes", "")
    return b"".join(parts)


def _buffer(environ: dict[str, Any], raw: bytes) -> None:
    """Hand werkzeug the body read, as if it had come with a Content-Length."""
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["CONTENT_LENGTH"] = str(len(raw))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = True


class ApiEntrypoint(HttpRequestHandler):
    """nameko's HTTP entrypoint with the boundary in front of the worker."""

    gate = HttpGate()

    def __init__(
        self,
        method: str,
        url: str,
        roles: Iterable[Role | str] = (),
        auth: str = "bearer",
        body: str | None = None,
        style: str = "gridbus",
        **kwargs: Any,
    ) -> None:
        super().__init__(method, url, **kwargs)
        self.roles = tuple(Role(r) for r in roles)
        self.auth = auth if self.roles else "none"
        self.body = body  # None, "json", "form" or "cloudevents"
        self.style = style

    def start(self) -> None:
        # eventlet's server reads a request's headers before the app runs; this bounds
        # that phase (and idle keep-alive connections) too. nameko applies it per
        # accepted socket from the shared server's attribute.
        server = getattr(self.server, "_serv", None)
        if server is not None:
            server.socket_timeout = get_settings().http_read_timeout_seconds
        super().start()

    # ---- the steps before a worker
    def _authenticate(self, request: Request, form_key: str | None = None) -> Principal:
        """Who calls, with a role this route allows, within its rate limit: the key, its
        role, its bucket and its use recorded in one round trip (RateLimiter.admit)."""
        admit = self.gate.limiter.admit
        if self.auth == "open311":
            try:
                key = form_key or request.args.get("api_key")
                return admit(key if key else bearer_token(request.headers), self.roles, use_time())
            except AuthError as exc:  # Open311 has no 401: a key problem is its 403
                raise open311.Open311Error(403, f"api_key: {exc.message}") from None
        return admit(bearer_token(request.headers), self.roles, use_time())

    def _read(self, request: Request) -> None:
        if self.body == "json" and not _is_json(request):
            raise UnsupportedMediaType("Content-Type must be application/json", "Content-Type")
        if self.body == "form" and not _is_form(request):
            raise UnsupportedMediaType("Content-Type must be application/x-www-form-urlencoded", "Content-Type")
        if self.body == "cloudevents" and not _is_cloudevent(request):
            raise UnsupportedMediaType(
                "Content-Type must be application/cloudevents+json (a structured CloudEvent)", "Content-Type"
            )
        settings = self.gate.settings
        try:
            with eventlet.Timeout(settings.http_read_timeout_seconds):
                raw = read_body(request.environ, settings.max_report_bytes)
        except (eventlet.Timeout, TimeoutError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and "timed out" not in str(exc):
                raise
            metrics.HTTP_READ_TIMEOUTS.inc()
            raise RequestTimeout(
                f"body not received within {settings.http_read_timeout_seconds:g} s", "", {"Connection": "close"}
            ) from None
        _buffer(request.environ, raw)

    def _admit(self, request: Request) -> None:
        preauth = self.auth == "bearer" or (
            self.auth == "open311"
            and (request.args.get("api_key") or request.headers.get("Authorization") or self.body is None)
        )
        who: Principal | None = None
        if preauth:
            who = self._authenticate(request)
        if self.body:
            self._read(request)
        else:
            _buffer(request.environ, b"")
        if self.auth != "none" and who is None:
            # Open311's POST carries api_key in the form: only here can it be read
            who = self._authenticate(request, request.form.get("api_key") or None)
        if who is not None:
            request.environ[PRINCIPAL] = who

    def handle_request(self, request: Request) -> Response:
        request.shallow = False
        try:
            self._admit(request)
            if not self.gate.slots.acquire(timeout=self.gate.settings.http_read_timeout_seconds):
                raise Unavailable("intake is busy; retry", "", {"Retry-After": str(RETRY_AFTER_S)})
            try:
                event = Event()
                args, kwargs = self.get_entrypoint_parameters(request)
                self.container.spawn_worker(
                    self, args, kwargs, context_data={}, handle_result=functools.partial(self.handle_result, event)
                )
                result = event.wait()
            finally:
                self.gate.slots.release()
            return self.response_from_result(result)
        except Exception as exc:
            return error_response(exc, request, self.style)


def api(
    method: str,
    url: str,
    *,
    roles: Iterable[Role | str] = (),
    auth: str = "bearer",
    body: str | None = None,
    style: str = "gridbus",
) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Decorate an intake HTTP handler (see the module docstring). `roles`: who may call
    (none: anybody); `auth`: "bearer" or "open311" (api_key parameter or Bearer);
    `body`: "json" or "form" for routes that take one; `style`: "open311" for Open311's
    error shape."""

    def register(fn: Callable[..., Response]) -> Callable[..., Response]:
        allowed = tuple(Role(r) for r in roles)

        @functools.wraps(fn)
        def handler(self: Any, request: Request, *args: Any, **path: Any) -> Response:
            try:
                if allowed and PRINCIPAL not in request.environ:
                    # called as a method, not through the entrypoint (the operations console
                    # calls the API's own handlers): the same checks, in the worker
                    request.environ[PRINCIPAL] = require(authenticate(request.headers, self.redis), *allowed)
                    if body == "json" and not _is_json(request):
                        raise UnsupportedMediaType("Content-Type must be application/json", "Content-Type")
                return fn(self, request, *args, **path)
            except Exception as exc:  # answered here, so nameko logs no worker error
                return error_response(exc, request, style)

        return ApiEntrypoint.decorator(method, url, roles=roles, auth=auth, body=body, style=style)(handler)

    return register


class FallbackApi:
    """JSON 404 for every path no route matches (werkzeug would answer HTML)."""

    @api(ALL_METHODS, "/<path:unknown>")
    def no_such_route(self, request: Request, unknown: str) -> Response:
        raise NotFound(f"no route {request.method} /{unknown}", "path")
