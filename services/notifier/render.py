"""Message texts from Jinja2 templates, Chinese by default.

One template per event × channel, `templates/<event>.<channel>.j2`. A rendered template
is the subject on its first line, a blank line, then the body (markdown for the robots,
plain text for e-mail, SMS and the webhook summary). A file of the same name in the
override directory (config `notify_templates/`) replaces the built-in one; overrides
may `{% extends %}` or `{% import %}` the built-in `_*.j2` helpers.

Context keys the templates understand (all optional except `case_id`; flat, so the
notifier can fill them from any event — `context_from_event` does it for ours):
case_id, event_id, severity, category, category_name, street, street_name,
community_name, patch_name, grid, address, description, dept, dept_name, level,
from_level, to_level, route (the first assignment's), by, order_id, deadline (datetime or ISO
text), deadline_kind (acknowledge | handle), ack_due, handle_due, late_seconds, reason,
from_status, to_status, note, mode, actor, recipient_name, items (digest: list of {case_id, subject, link}), link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from services.notifier.channels.base import ChannelName
from services.notifier.subscriptions import EVENT_NAMES

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
#: what has built-in templates: every notifiable event but notification_failed (planner.py
#: says it in a line of its own), and the digest of held messages
EVENTS = (*(e for e in EVENT_NAMES if e != "notification_failed"), "digest")
ROBOTS = (ChannelName.wecom, ChannelName.dingtalk)

LEVEL_NAMES = {1: "市级", 2: "区级", 3: "街道", 4: "社区", 5: "网格"}
STATUS_NAMES = {
    "reported": "已上报",
    "registered": "已立案",
    "dispatched": "已派遣",
    "acknowledged": "已签收",
    "in_progress": "处置中",
    "resolved": "已处置",
    "closed": "已结案",
    "rejected": "已退回",
    "reopened": "核查未通过，已重新派遣",
    "suspended": "已挂起",
    "duplicate": "重复案件",
    "cancelled": "已作废",
}
MODE_NAMES = {"service": "服务", "management": "管理", "enforcement": "执法"}
DEADLINE_KINDS = {"acknowledge": "签收", "handle": "处置"}
_WEEKDAYS = "一二三四五六日"
_LOCAL_TIMES_KEPT = 4096  # deadlines formatted, kept (then forgotten all at once)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _duration(seconds: Any) -> str:
    """`5400` → `1小时30分`: how late, in words a liaison reads at a glance."""
    try:
        total = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    days, rest = divmod(max(total, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}天" if days else "", f"{hours}小时" if hours else "", f"{minutes}分" if minutes else ""]
    return "".join(parts) or "不到1分钟"


def _neutralise(value: Any) -> Any:
    """Event text (a citizen's description) must not @ people or restyle a robot message."""
    if isinstance(value, str):
        if "<" in value or ">" in value or "@" in value:
            value = value.replace("<", "＜").replace(">", "＞").replace("@", "＠")
        return " ".join(value.split())
    if isinstance(value, Mapping):
        return {k: _neutralise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_neutralise(v) for v in value]
    return value


class Renderer:
    def __init__(
        self,
        override_dir: Path | None = None,
        *,
        public_base_url: str | None = None,
        timezone: str | None = None,
    ) -> None:
        if public_base_url is None or timezone is None:
            from shared.config import get_settings

            settings = get_settings()
            public_base_url = settings.public_base_url if public_base_url is None else public_base_url
            timezone = settings.timezone if timezone is None else timezone
        self.public_base_url = public_base_url.rstrip("/")
        self.tz = ZoneInfo(timezone)
        self._local_times: dict[Any, str] = {}
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None and Path(override_dir).is_dir():
            loaders.append(jinja2.FileSystemLoader(str(override_dir)))
        loaders.append(jinja2.FileSystemLoader(str(BUILTIN_DIR)))
        # No HTML autoescape: the outputs are markdown and plain text, never HTML.
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            undefined=jinja2.ChainableUndefined,
            # templates are read once at start like the rest of the configuration; with
            # reloading on, every render stat()ed the template file
            auto_reload=False,
        )
        self.env.filters.update(
            local=self.local_time,
            duration=_duration,
            level_name=lambda v: LEVEL_NAMES.get(int(v), f"第{v}级") if str(v).isdigit() else "",
            status_name=lambda v: STATUS_NAMES.get(str(v), str(v or "")),
            mode_name=lambda v: MODE_NAMES.get(str(v), str(v or "")),
            deadline_kind=lambda v: DEADLINE_KINDS.get(str(v), "处置"),
        )

    def local_time(self, value: Any) -> str:
        """`2026-11-27 13:30（周五）` in the district's time zone. The texts are kept: a
        message shows its deadlines two or three times, and every message of an event the
        same ones (parsing and converting each was ~8 % of planning)."""
        try:
            return self._local_times[value]
        except (KeyError, TypeError):  # TypeError: not hashable, not kept
            pass
        text = self._local_time(value)
        if isinstance(value, (str, datetime)):
            if len(self._local_times) >= _LOCAL_TIMES_KEPT:
                self._local_times.clear()
            self._local_times[value] = text
        return text

    def _local_time(self, value: Any) -> str:
        when = _as_datetime(value)
        if when is None:
            return str(value or "")
        if when.tzinfo is not None:
            when = when.astimezone(self.tz)
        return f"{when:%Y-%m-%d %H:%M}（周{_WEEKDAYS[when.weekday()]}）"

    def render(self, event: str, channel: ChannelName, context: Mapping[str, Any]) -> tuple[str, str]:
        """(subject, text) for `event` on `channel`. Raises LookupError for an unknown pair."""
        channel = ChannelName(channel)
        name = f"{event}.{channel.value}.j2"
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            raise LookupError(f"no notification template {name}") from exc
        values: dict[str, Any] = dict(_neutralise(context) if channel in ROBOTS else context)
        values = self._with_link(values)
        if values.get("items"):
            values["items"] = [self._with_link(dict(item)) for item in values["items"]]
        values.update(event=event, channel=channel.value)
        rendered = template.render(values).strip()
        subject, _, body = rendered.partition("\n")
        # Optional sections leave blank runs behind; one blank line is the most markdown needs.
        return " ".join(subject.split()), re.sub(r"\n{3,}", "\n\n", body.strip("\n"))

    def _with_link(self, values: dict[str, Any]) -> dict[str, Any]:
        if values.get("case_id") and not values.get("link"):
            values["link"] = f"{self.public_base_url}/v1/cases/{values['case_id']}"
        return values

    def sms_params(self, context: Mapping[str, Any]) -> dict[str, str]:
        """The parameters our SMS templates are registered with; each ≤ 35 characters,
        the common provider limit for one variable."""
        place = context.get("community_name") or context.get("street_name") or context.get("address") or ""
        deadline = context.get("deadline") or context.get("handle_due") or context.get("ack_due")
        when = _as_datetime(deadline)
        params = {
            "case_id": str(context.get("case_id", "")),
            "category": str(context.get("category_name") or context.get("category") or ""),
            "place": str(place),
            "deadline": f"{when.astimezone(self.tz):%m-%d %H:%M}" if when and when.tzinfo else "",
        }
        return {k: v[:35] for k, v in params.items()}


def context_from_event(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one of our event bodies (shared.models) into the templates' context.

    Names (category, street, department) are the notifier's to add from the catalogs;
    without them the templates show codes.
    """
    context: dict[str, Any] = {k: v for k, v in payload.items() if not isinstance(v, (dict, list))}
    case = payload.get("case") or {}
    for key in ("category", "severity", "grid", "street", "address", "description", "filing_condition"):
        if key in case:
            context.setdefault(key, case[key])
    assignments = [a for a in payload.get("assignments") or [] if a.get("active", True)]
    if assignments:
        first = assignments[0]
        context.setdefault("dept", first.get("dept"))
        context.setdefault("level", first.get("level"))
        context.setdefault("mode", first.get("mode"))
        context.setdefault("ack_due", first.get("ack_due"))
        context.setdefault("handle_due", first.get("handle_due"))
        context.setdefault("route", first.get("route"))
        context["depts"] = [a.get("dept") for a in assignments]
    if "due_at" in payload:
        context.setdefault("deadline", payload["due_at"])
    if "message_id" in payload:
        context.setdefault("event_id", payload["message_id"])
    return context
