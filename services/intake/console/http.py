"""The operations console under `/console`, as a nameko mixin of `IntakeService`
(it is served by intake's HTTP server, on the API's port).

Pages read cases through intake's store, the indicators and the notification log through
shared/ (read only: sla and the notifier write them). Every action
— dispatch by hand, verification, suspension decision, cancellation — calls the very
API endpoint method (`post_dispatch`, `post_verification`, …) with the logged-in key as
its Bearer token, so the console has no path to case state of its own: the same
authorisation, validation, state machine, outbox and logs as a client of the API.

Uses what IntakeService provides: `self.redis`, `self.domain`, and the endpoint methods.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlparse
from zoneinfo import ZoneInfo

import structlog
from jinja2 import Environment, FileSystemLoader
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from services.intake.auth import AuthError
from services.intake.console import sessions, views
from services.intake.console.sessions import NotLoggedIn, Session
from shared.config import get_settings
from shared.indicators import current_period
from shared.indicators import load as load_indicators
from shared.models import Case, utcnow
from shared.notification_log import notifications_of

log = structlog.get_logger("gridbus.console")
HERE = Path(__file__).resolve().parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
CONSOLE_ROLES = ("ops", "station")
HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# the console's forms → the API endpoint method they call, and the Chinese name of the action
ACTIONS = {
    "dispatch": ("post_dispatch", "派遣"),
    "verification": ("post_verification", "核查"),
    "suspension": ("post_suspension", "挂起审批"),
    "cancellation": ("post_cancellation", "作废"),
}


class ConsoleNames(DependencyProvider):
    """Department, category and grid names for display (read at start-up)."""

    def setup(self) -> None:
        from shared.catalog import load_catalog
        from shared.departments import load_departments
        from shared.grid import load_grid

        self.names = views.Names(
            grid=load_grid(),
            depts={d.code: d.name for d in load_departments()},
            categories={c.code: c.name for c in load_catalog()},
        )

    def get_dependency(self, worker_ctx: Any) -> views.Names:
        return self.names


def page(template: str, status: int = 200, **context: Any) -> Response:
    return Response(TEMPLATES.get_template(template).render(**context), status=status, headers=HEADERS)


def redirect(to: str, status: int = 303) -> Response:
    return Response("", status=status, headers={"Location": to, "Cache-Control": "no-store"})


def form_fields(form: Any, name: str) -> list[str]:
    return [v for v in form.getlist(name) if v.strip()]


def action_body(action: str, form: Any) -> dict[str, Any]:
    """A console form → the JSON body of the API endpoint it calls. The form's one-time
    id is the idempotency key, so a double click applies once."""
    if action == "dispatch":
        body: dict[str, Any] = {
            "dispatch_id": form.get("form_id", ""),
            "departments": form_fields(form, "dept"),
            "note": form.get("note", "").strip(),
        }
        if form.get("level", "").strip():
            body["level"] = int(form["level"]) if form["level"].isdigit() else form["level"]
        if form.get("hand_up"):
            body["hand_up"] = True
        return body
    if action == "verification":
        return {
            "result": form.get("result", ""),
            "note": form.get("note", "").strip(),
            "verifier": form.get("verifier", "").strip(),
        }
    if action == "suspension":
        return {
            "decision": form.get("decision", ""),
            "approver": form.get("approver", "").strip(),
            "note": form.get("note", "").strip(),
        }
    return {"reason": form.get("reason", "").strip()}


def error_text(body: Any) -> str:
    """An API error body, whatever its shape, as one line for the page."""
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list):
            return "；".join(f"{e.get('field') or ''} {e.get('message', '')}".strip() for e in body["errors"])
        if body.get("message"):
            return str(body["message"])
    return json.dumps(body, ensure_ascii=False)[:300]


class ConsoleApi:
    """Mixin: needs `self.redis`, `self.domain` and intake's endpoint methods."""

    redis: Any
    domain: Any
    console_names: views.Names = ConsoleNames()

    # ------------------------------------------------------------------ plumbing
    def _tz(self) -> ZoneInfo:
        return ZoneInfo(get_settings().timezone)

    def _session(self, request: Request) -> Session:
        return sessions.current(self.redis, request.cookies.get(sessions.COOKIE))

    def _street(self, session: Session) -> str | None:
        """A station key sees its own street only."""
        return getattr(session.principal, "street", None) if session.principal.role.value == "station" else None

    def _logged_in(self, request: Request, render: Callable[[Session], Response]) -> Response:
        try:
            session = self._session(request)
        except NotLoggedIn:
            return redirect(f"/console/login?next={quote(request.full_path.rstrip('?'), safe='/?=&')}")
        return render(session)

    def _context(self, session: Session, **more: Any) -> dict[str, Any]:
        street = self._street(session)
        who = session.principal.role.value
        if street:
            who += f" · {self.console_names.grid.name_of(street) or street}"
        return {
            "who": who,
            "key_id": session.principal.key_id,
            "csrf": session.csrf,
            "tz": get_settings().timezone,
            **more,
        }

    def _open_cases(self) -> list[Case]:
        store, _ = self.domain.for_client(self.redis)
        ids = store.open_case_ids()
        return [c for i in range(0, len(ids), 500) for c in store.get_many(ids[i : i + 500]) if c is not None]

    def _call_api(
        self,
        session: Session,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *args: str,
    ) -> tuple[int, Any]:
        """Call an API endpoint method as a client with this session's key would."""
        headers = {"Authorization": f"Bearer {session.key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        environ = EnvironBuilder(
            path=path,
            method="GET" if body is None else "POST",
            headers=list(headers.items()),
            data=data,
            content_type="application/json" if data is not None else None,
        ).get_environ()
        resp = getattr(self, method)(Request(environ), *args)
        raw = resp.get_data()
        try:
            return resp.status_code, json.loads(raw) if raw else {}
        except ValueError:
            return resp.status_code, {"message": raw.decode(errors="replace")[:300]}

    # ------------------------------------------------------------------ log in / out
    @http("GET", "/console")
    def console_root(self, request: Request) -> Response:
        return redirect("/console/board", 302)

    @http("GET", "/console/login")
    def console_login_form(self, request: Request) -> Response:
        return page("login.html.j2", next=_safe_next(request.args.get("next")), error="")

    @http("POST", "/console/login")
    def console_login(self, request: Request) -> Response:
        if not _same_origin(request):
            return page("login.html.j2", 403, next="/console/board", error="请求来源不符")
        target = _safe_next(request.form.get("next"))
        try:
            session = sessions.log_in(self.redis, request.form.get("key", ""), CONSOLE_ROLES)
        except AuthError as exc:
            log.info("console_login_refused", reason=exc.message)
            return page("login.html.j2", 401, next=target, error=f"登录失败：{exc.message}")
        log.info("console_login", key_id=session.principal.key_id, role=session.principal.role.value)
        resp = redirect(target)
        resp.set_cookie(
            sessions.COOKIE,
            session.cookie_value,
            max_age=sessions.SESSION_TTL_S,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=get_settings().public_base_url.startswith("https://"),
        )
        return resp

    @http("POST", "/console/logout")
    def console_logout(self, request: Request) -> Response:
        try:
            session = self._session(request)
            if _same_origin(request) and sessions.csrf_ok(session, request.form.get("csrf")):
                sessions.log_out(self.redis, session)
        except NotLoggedIn:
            pass
        resp = redirect("/console/login")
        resp.delete_cookie(sessions.COOKIE, path="/console")
        return resp

    @http("GET", "/console/static/<string:name>")
    def console_static(self, request: Request, name: str) -> Response:
        if name not in STATIC:
            return Response("not found", status=404)
        return Response(
            (HERE / "static" / name).read_bytes(),
            headers={"Content-Type": STATIC[name], "Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    # ------------------------------------------------------------------ pages
    @http("GET", "/console/board")
    def console_board(self, request: Request) -> Response:
        def render(session: Session) -> Response:
            return page("board.html.j2", nav="board", **self._context(session, board=self._board(session)))

        return self._logged_in(request, render)

    @http("GET", "/console/board/live")
    def console_board_live(self, request: Request) -> Response:
        """The board's body alone, fetched by console.js every few seconds."""
        try:
            session = self._session(request)
        except NotLoggedIn:
            return Response("", status=401, headers={"Cache-Control": "no-store"})
        return page("board_live.html.j2", **self._context(session, board=self._board(session)))

    def _board(self, session: Session) -> views.Board:
        return views.board(self._open_cases(), utcnow(), self._tz(), self.console_names, self._street(session))

    @http("GET", "/console/triage")
    def console_triage(self, request: Request) -> Response:
        def render(session: Session) -> Response:
            queues = views.triage_rows(
                self._open_cases(), utcnow(), self._tz(), self.console_names, self._street(session)
            )
            return page(
                "triage.html.j2",
                nav="triage",
                **self._context(
                    session,
                    queues=queues,
                    departments=self._dispatchable(),
                    form_id=_form_id(),
                    notice=_notice(request),
                ),
            )

        return self._logged_in(request, render)

    def _dispatchable(self) -> list[tuple[str, str]]:
        return [(code, name) for code, name in self.console_names.depts.items() if code != "station"]

    @http("GET", "/console/league")
    def console_league(self, request: Request) -> Response:
        def render(session: Session) -> Response:
            month = request.args.get("month", "").strip() or current_period(self._tz())
            error = ""
            try:
                datetime.strptime(month, "%Y-%m")
            except ValueError:
                error, month = f"月份格式应为 YYYY-MM（收到 {month[:20]}）", current_period(self._tz())
            rows = load_indicators(self.redis, month)
            names = self.console_names
            return page(
                "league.html.j2",
                422 if error else 200,
                nav="league",
                **self._context(
                    session,
                    month=month,
                    error=error,
                    target=views.TARGET_721_TEXT,
                    modes=views.MODE_LABELS,
                    depts=views.league(rows, "dept", names.depts),
                    streets=views.league(rows, "street", dict(names.grid.streets)),
                ),
            )

        return self._logged_in(request, render)

    @http("GET", "/console/cases/<string:case_id>")
    def console_case(self, request: Request, case_id: str) -> Response:
        def render(session: Session) -> Response:
            return self._case_page(session, case_id, notice=_notice(request))

        return self._logged_in(request, render)

    def _case_page(
        self, session: Session, case_id: str, status: int = 200, notice: str = "", error: str = ""
    ) -> Response:
        code, body = self._call_api(session, "get_case", f"/v1/cases/{case_id}", None, None, case_id)
        if code != 200:
            return page("error.html.j2", code, nav="", **self._context(session, message=error_text(body)))
        case = Case.model_validate(body)
        tz, names = self._tz(), self.console_names
        notifications = notifications_of(self.redis, case_id)
        for n in notifications:
            n["when"] = views.local(datetime.fromtimestamp(n["at"], tz), tz)
            n["outcome_label"] = views.OUTCOME_LABELS.get(n["outcome"].split(":")[0], n["outcome"])
        return page(
            "case.html.j2",
            status,
            nav="",
            **self._context(
                session,
                case=case,
                row=views.row_of(case, utcnow(), tz, names),
                names=names,
                local=views.local,
                tzinfo=tz,
                labels=views.STATUS_LABELS,
                map=views.map_of(case, names.grid, 200, 150),
                zoom=views.map_of(case, names.grid, 420, 300, span=0.006),
                notifications=notifications,
                departments=self._dispatchable(),
                form_id=_form_id(),
                notice=notice,
                error=error,
                modes=views.MODE_LABELS,
            ),
        )

    # ------------------------------------------------------------------ actions
    @http("POST", "/console/cases/<string:case_id>/<string:action>")
    def console_action(self, request: Request, case_id: str, action: str) -> Response:
        try:
            session = self._session(request)
        except NotLoggedIn:
            return redirect("/console/login")
        if action not in ACTIONS:
            return Response("unknown action", status=404)
        if not _same_origin(request) or not sessions.csrf_ok(session, request.form.get("csrf")):
            return page(
                "error.html.j2", 403, nav="", **self._context(session, message="表单已过期或来源不符，请刷新页面后重试")
            )
        method, label = ACTIONS[action]
        if not hasattr(self, method):
            return page("error.html.j2", 501, nav="", **self._context(session, message=f"本版本不支持{label}"))
        form_id = request.form.get("form_id") or secrets.token_hex(8)
        code, body = self._call_api(
            session,
            method,
            f"/v1/cases/{case_id}/{action}",
            action_body(action, request.form),
            f"console:{form_id}",
            case_id,
        )
        log.info("console_action", case_id=case_id, action=action, status=code, key_id=session.principal.key_id)
        if code >= 400:
            return self._case_page(session, case_id, status=code, error=f"{label}未成功：{error_text(body)}")
        back = request.form.get("back") == "triage"
        return redirect(f"/console/triage?done={action}" if back else f"/console/cases/{case_id}?done={action}")


def _form_id() -> str:
    return secrets.token_hex(8)


def _notice(request: Request) -> str:
    done = request.args.get("done", "")
    return f"{ACTIONS[done][1]}已提交" if done in ACTIONS else ""


def _safe_next(target: str | None) -> str:
    """Only a path inside the console (no open redirect to another site)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/board"


def _same_origin(request: Request) -> bool:
    """A POST whose Origin (or Referer) names another host is refused; browsers send one."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None
    return urlparse(origin).netloc == request.host
