"""Who gets what: `config/notify.yaml`, validated, and the targets an event selects.

The file (errors name file, line and field, like every gridbus config file):

    operations_centre:                 # the district command centre (指挥中心)
      name: 七星区城市管理指挥中心
      webhook: ${GRIDBUS_OPS_WEBHOOK_URL}  # `${VAR}`: read from the environment at send time
      email: ops@example.gov.cn
      sms: "19907739999"
    robots:                            # group robots, chosen by scope (first match wins):
      wecom:                           #   liaison / department: `dept:<code>`, then `*`
        - {scope: "*", url: ${GRIDBUS_WECOM_ROBOT_URL}}   # commanders: `commanders`, then `*`
      dingtalk:                        #   operations centre: `ops`, then `*`
        - {scope: "*", url: ${GRIDBUS_DINGTALK_ROBOT_URL}, secret: ${GRIDBUS_DINGTALK_ROBOT_SECRET}}
    sms_templates: {case_dispatched: SMS_465320001, digest: SMS_465320009, …}
    quiet_hours:                       # per recipient kind, then per recipient id
      defaults: {liaison: {start: "22:00", end: "07:30"}, commanders: {start: "22:00", end: "07:30"}}
      recipients: {"liaison:gas:450305003": null}      # null: never quiet
    rate_limit: {max: 5, per_minutes: 10}              # per recipient and channel (people only)
    subscriptions:
      - event: case_dispatched
        when: {severity: [urgent]}                     # optional filters, all must hold
        notify:
          - {to: liaison, channels: [wecom, sms]}      # sms is the fallback when wecom fails for good
          - {to: department, channels: [webhook]}
          - {to: commanders, level: 4, channels: [wecom, sms]}

Recipients (`to`): `liaison` (the department's liaison for the case's street,
departments.yaml), `department` (its webhook, duty SMS / mailbox from `contacts`, its
group robot), `commanders` (grid commanders of `level` 1–5, or `event` = the level the
event names, for the case's grid cell, grid.yaml), `operations_centre`, `reporter`
(the grid app user, through the grid app's webhook; reporters of linked duplicates get
the original's updates too). `dept: <code>` on a target names the department instead of
the event's (e.g. `station`, the street's grid station, for unroutable cases).

`channels` is an ordered list: the first is used, each next one only when the one before
failed permanently (or ran out of retries), has no address for the recipient, or is
disabled (not configured: `ChannelSettings.disabled`). To reach someone on two channels at once,
write two targets. Filters (`when`): `dept`, `severity`, `deadline` (acknowledge |
handle), `level`, `to_status` (case_updated: required, only resolved / closed /
reopened), `reporter_role`.

Quiet hours and the rate limit never hold breaches, escalations, failures or urgent
cases (`URGENT_EVENTS`, severity `urgent`), and never machines (webhooks).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.notifier.channels.base import ChannelName
from shared import lifecycle
from shared.configfiles import ConfigError, error_at, load_yaml_model, read_yaml
from shared.models import CaseStatus

EVENT_NAMES = (
    "case_dispatched",
    "deadline_warning",
    "deadline_breached",
    "case_escalated",
    "case_updated",
    "case_unroutable",
    "dispatch_withdrawn",
    "notification_failed",
)
#: never held for quiet hours or a rate limit
URGENT_EVENTS = frozenset({"deadline_breached", "case_escalated", "notification_failed"})
#: the statuses a case_updated subscription may name: the notifier's queue is bound to these
#: alone (shared/topology.py), so a subscription to another one would never be told
NOTIFIED_STATUSES = tuple(s.value for s in CaseStatus if s in lifecycle.NOTIFIED_STATUSES)

RecipientKind = Literal["liaison", "department", "commanders", "operations_centre", "reporter"]
#: channels each kind of recipient can be reached on
KIND_CHANNELS: dict[str, frozenset[str]] = {
    "liaison": frozenset({"wecom", "dingtalk", "sms", "email"}),
    "department": frozenset({"webhook", "wecom", "dingtalk", "sms", "email"}),
    "commanders": frozenset({"wecom", "dingtalk", "sms"}),
    "operations_centre": frozenset({"webhook", "wecom", "dingtalk", "sms", "email"}),
    "reporter": frozenset({"webhook"}),
}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str | None) -> str | None:
    """`${VAR}` from the environment; None when a variable is unset (the address is absent)."""
    if value is None:
        return None
    missing = False

    def sub(match: re.Match[str]) -> str:
        nonlocal missing
        found = os.environ.get(match.group(1))
        if not found:
            missing = True
            return ""
        return found

    out = _ENV.sub(sub, value)
    return None if missing or not out else out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _clock(value: str) -> time:
    if not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", value):
        raise ValueError(f"{value!r} is not HH:MM or HH:MM:SS")
    return time.fromisoformat(value)


class QuietHours(_Strict):
    """Local time of day; `start` after `end` spans midnight (22:00–07:30)."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _valid(cls, value: str) -> str:
        _clock(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if _clock(self.start) == _clock(self.end):
            raise ValueError("start and end are equal: an empty (or 24 h) quiet period")
        return self

    def release_at(self, now: datetime) -> datetime | None:
        """When the quiet period containing local `now` ends; None when `now` is not quiet."""
        start, end, t = _clock(self.start), _clock(self.end), now.time().replace(tzinfo=None)
        if start < end:
            quiet = start <= t < end
        else:
            quiet = t >= start or t < end
        if not quiet:
            return None
        release = now.replace(hour=end.hour, minute=end.minute, second=end.second, microsecond=0)
        if release <= now:
            release += timedelta(days=1)
        return release


class QuietHoursConfig(_Strict):
    defaults: dict[RecipientKind, QuietHours | None] = Field(default_factory=dict)
    recipients: dict[str, QuietHours | None] = Field(
        default_factory=dict, description="Recipient id (liaison:<dept>:<street>, commander:<level>:<id>, …)"
    )

    def for_recipient(self, recipient: str) -> QuietHours | None:
        if recipient in self.recipients:
            return self.recipients[recipient]
        return self.defaults.get(recipient_kind(recipient))  # type: ignore[call-overload]


class RateLimit(_Strict):
    max: int = Field(ge=1, description="Messages let through per window; the rest go out as one digest")
    per_minutes: float = Field(gt=0)

    @property
    def window_s(self) -> int:
        return max(1, int(self.per_minutes * 60))


class Robot(_Strict):
    scope: str = Field(pattern=r"^(\*|ops|commanders|dept:[a-z][a-z0-9]{1,19}|street:\d{9})$")
    url: str = Field(min_length=1)
    secret: str | None = None


class OperationsCentre(_Strict):
    name: str = "运行指挥中心"
    webhook: str | None = None
    email: str | None = None
    sms: str | None = None


class When(_Strict):
    dept: list[str] | None = None
    severity: list[Literal["normal", "urgent"]] | None = None
    deadline: list[Literal["acknowledge", "handle"]] | None = None
    level: list[int] | None = None
    to_status: list[str] | None = None
    reporter_role: list[Literal["grid_officer", "part_time", "citizen"]] | None = None


class Target(_Strict):
    to: RecipientKind
    channels: list[ChannelName] = Field(min_length=1)
    level: int | Literal["event"] | None = Field(None, description="commanders: grid level 1–5 or `event`")
    dept: str | None = Field(None, description="liaison/department: this department instead of the event's")
    include_duplicates: bool = Field(True, description="reporter: also the reporters of linked duplicates")

    @model_validator(mode="after")
    def _fits(self) -> Target:
        allowed = KIND_CHANNELS[self.to]
        bad = [c.value for c in self.channels if c.value not in allowed]
        if bad:
            raise ValueError(f"{self.to} cannot be reached on {', '.join(bad)} (only {', '.join(sorted(allowed))})")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("a channel is listed twice")
        if self.to == "commanders":
            if self.level is None:
                raise ValueError("commanders need `level` (1–5 or `event`)")
            if isinstance(self.level, int) and not 1 <= self.level <= 5:
                raise ValueError("level must be 1–5 (1 city … 5 patch) or `event`")
        elif self.level is not None:
            raise ValueError("`level` is only for commanders")
        return self


class Subscription(_Strict):
    event: Literal[EVENT_NAMES]  # type: ignore[valid-type]
    when: When = Field(default_factory=When)
    notify: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _statuses(self) -> Subscription:
        if self.event == "case_updated":
            if not self.when.to_status:
                raise ValueError("case_updated needs when.to_status (resolved, closed and/or reopened)")
            bad = sorted(set(self.when.to_status) - set(NOTIFIED_STATUSES))
            if bad:
                raise ValueError(f"case_updated is only told for {'/'.join(NOTIFIED_STATUSES)}, not {', '.join(bad)}")
        elif self.when.to_status:
            raise ValueError("when.to_status is only for case_updated")
        return self


class NotifyFile(_Strict):
    operations_centre: OperationsCentre = Field(default_factory=OperationsCentre)
    robots: dict[Literal["wecom", "dingtalk"], list[Robot]] = Field(default_factory=dict)
    sms_templates: dict[str, str] = Field(default_factory=dict)
    quiet_hours: QuietHoursConfig = Field(default_factory=QuietHoursConfig)
    rate_limit: RateLimit | None = None
    subscriptions: list[Subscription] = Field(min_length=1)

    @field_validator("sms_templates")
    @classmethod
    def _sms_events(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(value) - set(EVENT_NAMES) - {"digest"})
        if bad:
            raise ValueError(f"unknown event(s) {', '.join(bad)}")
        return value


def recipient_kind(recipient: str) -> str:
    return {
        "liaison": "liaison",
        "dept": "department",
        "commander": "commanders",
        "ops": "operations_centre",
        "reporter": "reporter",
    }.get(recipient.partition(":")[0], "")


def _check(spec: NotifyFile, path: Path, node: Any, departments: set[str] | None) -> None:
    """Cross-file checks: departments exist, SMS has a template for every event that uses it."""
    for i, sub in enumerate(spec.subscriptions):
        if departments is not None:
            for dept in sub.when.dept or []:
                if dept not in departments:
                    raise error_at(path, node, ("subscriptions", i, "when", "dept"), f"unknown department {dept!r}")
        for j, target in enumerate(sub.notify):
            if departments is not None and target.dept and target.dept not in departments:
                raise error_at(
                    path, node, ("subscriptions", i, "notify", j, "dept"), f"unknown department {target.dept!r}"
                )
            if ChannelName.sms in target.channels and sub.event not in spec.sms_templates:
                raise error_at(
                    path,
                    node,
                    ("subscriptions", i, "notify", j, "channels"),
                    f"sms used for {sub.event} but sms_templates has no {sub.event}",
                )
    uses_sms = any(ChannelName.sms in t.channels for s in spec.subscriptions for t in s.notify)
    if (
        uses_sms
        and (spec.rate_limit or spec.quiet_hours.defaults or spec.quiet_hours.recipients)
        and "digest" not in spec.sms_templates
    ):
        raise error_at(path, node, ("sms_templates",), "messages held for a digest may go by sms: add `digest`")


def load_notify(path: Path | str | None = None, departments: set[str] | None = None) -> NotifyFile:
    """Load and validate notify.yaml; ConfigError names file, line and field."""
    if path is None:
        from shared.config import get_settings

        path = get_settings().config_dir / "notify.yaml"
    path = Path(path)
    spec = load_yaml_model(path, NotifyFile)
    _, node = read_yaml(path)
    _check(spec, path, node, departments)
    return spec


@dataclass(frozen=True)
class Facts:
    """What the filters look at, taken from the event (and the case when the event lacks it)."""

    event: str
    depts: tuple[str, ...]
    severity: str | None
    deadline: str | None
    level: int | None
    to_status: str | None
    reporter_role: str | None


def matches(when: When, facts: Facts, dept: str | None) -> bool:
    if when.dept is not None and (dept or "") not in when.dept:
        return False
    if when.severity is not None and facts.severity not in when.severity:
        return False
    if when.deadline is not None and facts.deadline not in when.deadline:
        return False
    if when.level is not None and facts.level not in when.level:
        return False
    if when.to_status is not None and facts.to_status not in when.to_status:
        return False
    if when.reporter_role is not None and facts.reporter_role not in when.reporter_role:
        return False
    return True


__all__ = [
    "ConfigError",
    "EVENT_NAMES",
    "Facts",
    "NotifyFile",
    "QuietHours",
    "RateLimit",
    "Subscription",
    "Target",
    "URGENT_EVENTS",
    "expand_env",
    "load_notify",
    "matches",
    "recipient_kind",
]
