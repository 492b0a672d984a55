"""Where a recipient is reached on a channel, and with which secret.

Deliveries in queues name their recipient (`liaison:gas:450305003`, `dept:gas`,
`commander:4:qx-l4-001001-liguodong`, `ops`, `reporter:w-1024`), never an address:
phone numbers, robot keys and secrets are looked up here at send time, so none of them
sits in a queue, a dead letter or a log line.

| recipient | webhook | wecom / dingtalk robot | sms | email |
|---|---|---|---|---|
| liaison | – | the department's robot (`dept:<code>`, `*`), @ the liaison | liaison's phone | liaison's e-mail |
| department | departments.yaml `webhook`, or WEBHOOK_URL_TEMPLATE | its robot | `contacts` sms | `contacts` email |
| commander | – | robot `commanders`, `*`, @ the commander | phone | – |
| ops | operations_centre.webhook | robot `ops`, `*` | operations_centre.sms | operations_centre.email |
| reporter | GRID_APP_WEBHOOK_URL | – | – | – |

Secrets: department webhooks `GRIDBUS_SECRET_<DEPT>` or WEBHOOK_SECRET, the grid app
`GRIDBUS_SECRET_GRIDAPP`, the operations centre `GRIDBUS_SECRET_OPS` (then WEBHOOK_SECRET).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.notifier.channels.base import ChannelName
from services.notifier.subscriptions import NotifyFile, expand_env
from shared.config import Settings
from shared.departments import Department
from shared.grid import Commander, GridRegistry


@dataclass(frozen=True)
class Address:
    to: str
    secret: str | None = None
    mentions: tuple[str, ...] = ()
    name: str = ""

    def __repr__(self) -> str:  # phones and keys stay out of tracebacks
        return f"Address(name={self.name!r})"


def commander_id(level: int, person: Commander) -> str:
    """Stable id of a commander: the WeCom user id, or a hash of the phone (no phone in queues)."""
    key = person.wecom_user or "p" + hashlib.sha256(person.phone.encode()).hexdigest()[:12]
    return f"commander:{level}:{key}"


class AddressBook:
    def __init__(
        self, departments: list[Department], grid: GridRegistry | None, notify: NotifyFile, settings: Settings
    ) -> None:
        self.departments = {d.code: d for d in departments}
        self.notify = notify
        self.settings = settings
        self.commanders: dict[str, Commander] = {}
        if grid is not None:
            for cell in grid.cells():
                for level, people in cell.commanders.items():
                    for person in people:
                        self.commanders.setdefault(commander_id(level, person), person)

    # -------------------------------------------------------------- names (for templates)

    def name_of(self, recipient: str) -> str:
        kind, _, rest = recipient.partition(":")
        if kind == "liaison":
            dept_code, _, street = rest.partition(":")
            dept = self.departments.get(dept_code)
            liaison = dept.liaison(street) if dept else None
            return f"{dept.name}联络员 {liaison.name}" if dept and liaison else rest
        if kind == "dept":
            dept = self.departments.get(rest)
            return dept.name if dept else rest
        if kind == "commander":
            person = self.commanders.get(recipient)
            return f"{person.role} {person.name}" if person else ""
        if kind == "ops":
            return self.notify.operations_centre.name
        return ""

    # -------------------------------------------------------------- addresses

    def robot(self, channel: ChannelName, scopes: list[str]) -> tuple[str, str | None] | None:
        robots = self.notify.robots.get(channel.value, [])  # type: ignore[call-overload]
        for scope in scopes:
            for robot in robots:
                if robot.scope == scope:
                    url = expand_env(robot.url)
                    if url:
                        return url, expand_env(robot.secret)
        return None

    def resolve(self, recipient: str, channel: ChannelName) -> Address | None:
        kind, _, rest = recipient.partition(":")
        channel = ChannelName(channel)
        if kind == "liaison":
            return self._liaison(rest, channel)
        if kind == "dept":
            return self._department(rest, channel)
        if kind == "commander":
            return self._commander(recipient, channel)
        if kind == "ops":
            return self._ops(channel)
        if kind == "reporter" and channel is ChannelName.webhook and self.settings.grid_app_webhook_url:
            secret = self.settings.webhook_secret_of("gridapp")
            return Address(self.settings.grid_app_webhook_url, secret, name="grid app")
        return None

    def _liaison(self, rest: str, channel: ChannelName) -> Address | None:
        dept_code, _, street = rest.partition(":")
        dept = self.departments.get(dept_code)
        liaison = dept.liaison(street) if dept else None
        if dept is None or liaison is None:
            return None
        name = f"{dept.name}联络员 {liaison.name}"
        if channel is ChannelName.sms:
            return Address(liaison.phone, name=name)
        if channel is ChannelName.email:
            return Address(liaison.email, name=name) if liaison.email else None
        if channel in (ChannelName.wecom, ChannelName.dingtalk):
            found = self.robot(channel, [f"dept:{dept_code}", "*"])
            if not found:
                return None
            # WeCom markdown @s by user id; DingTalk by mobile number.
            who = liaison.wecom_user if channel is ChannelName.wecom and liaison.wecom_user else liaison.phone
            return Address(found[0], found[1], (who,), name)
        return None

    def _department(self, code: str, channel: ChannelName) -> Address | None:
        dept = self.departments.get(code)
        if channel is ChannelName.webhook:
            template = self.settings.webhook_url_template
            url = template.format(dept=code) if template else (dept.webhook if dept else None)
            if not url:
                return None
            secret = self.settings.webhook_secret_of(code)
            return Address(url, secret, name=dept.name if dept else code)
        if dept is None:
            return None
        if channel in (ChannelName.wecom, ChannelName.dingtalk):
            found = self.robot(channel, [f"dept:{code}", "*"])
            return Address(found[0], found[1], name=dept.name) if found else None
        wanted = {ChannelName.sms: "sms", ChannelName.email: "email"}.get(channel)
        contact = next((c for c in dept.contacts if c.channel == wanted), None)
        return Address(contact.to, name=f"{dept.name}{contact.name}") if contact else None

    def _commander(self, recipient: str, channel: ChannelName) -> Address | None:
        person = self.commanders.get(recipient)
        if person is None:
            return None
        name = f"{person.role} {person.name}"
        if channel is ChannelName.sms:
            return Address(person.phone, name=name)
        if channel in (ChannelName.wecom, ChannelName.dingtalk):
            found = self.robot(channel, ["commanders", "*"])
            if not found:
                return None
            who = person.wecom_user if channel is ChannelName.wecom and person.wecom_user else person.phone
            return Address(found[0], found[1], (who,), name)
        return None

    def _ops(self, channel: ChannelName) -> Address | None:
        ops = self.notify.operations_centre
        if channel is ChannelName.webhook:
            url = expand_env(ops.webhook)
            secret = self.settings.webhook_secret_of("ops")
            return Address(url, secret, name=ops.name) if url else None
        if channel in (ChannelName.wecom, ChannelName.dingtalk):
            found = self.robot(channel, ["ops", "*"])
            return Address(found[0], found[1], name=ops.name) if found else None
        value = expand_env(ops.sms if channel is ChannelName.sms else ops.email)
        return Address(value, name=ops.name) if value else None
