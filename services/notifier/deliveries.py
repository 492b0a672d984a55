"""notifier's domain: which deliveries an event makes, and what to do after an attempt.

An event fans out into `Delivery` messages (one per recipient × channel) on the
`notifier.deliveries` queue; each is attempted on its own, retried through the delay
queues, and dead-lettered after the last try. Deliveries name their recipient
(`dept:gas`), not its address or secret: those are looked up at send time so that no
robot key or phone number sits in a queue.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.notifier.channels.base import ChannelName, DeliveryOutcome, OutgoingMessage
from shared.config import Settings
from shared.departments import Department
from shared.models import DeadlineEvent, Envelope, utcnow
from shared.topology import NOTIFIER_RETRY_DELAYS_S

#: events that reach the department they concern (issue 6 widens this with notify.yaml)
DEPARTMENT_EVENTS = {"case_dispatched", "deadline_warning", "deadline_breached"}


class Delivery(BaseModel):
    delivery_id: str
    event: str
    case_id: str
    correlation_id: str
    recipient: str = Field(description="`dept:<code>`: resolved to an address at send time")
    channel: ChannelName
    subject: str
    text: str
    payload: dict[str, Any]
    attempt: int = 1
    first_attempt_at: datetime = Field(default_factory=utcnow)


def delivery_id(message_id: str, recipient: str, channel: ChannelName) -> str:
    """Stable across redeliveries of the same event: the receiver's dedup key too."""
    return hashlib.sha256(f"{message_id}|{recipient}|{channel.value}".encode()).hexdigest()[:32]


def _departments_of(event: Envelope) -> list[str]:
    if isinstance(event, DeadlineEvent):
        return [event.dept]
    assignments = getattr(event, "assignments", None) or []
    return sorted({a.dept for a in assignments if a.active})


def plan_deliveries(event: Envelope) -> list[Delivery]:
    name = getattr(event, "event", "")
    if name not in DEPARTMENT_EVENTS:
        return []
    payload = event.model_dump(mode="json")
    out = []
    for dept in _departments_of(event):
        recipient = f"dept:{dept}"
        channel = ChannelName.webhook
        out.append(Delivery(
            delivery_id=delivery_id(event.message_id, recipient, channel), event=name,
            case_id=event.case_id, correlation_id=event.correlation_id, recipient=recipient,
            channel=channel, subject=f"[gridbus] {name} {event.case_id}",
            text=f"{name}: {event.case_id}", payload=payload,
        ))
    return out


@dataclass(frozen=True)
class Address:
    to: str
    secret: str | None


class AddressBook:
    """Where a recipient is reached, and with which secret."""

    def __init__(self, departments: list[Department], settings: Settings) -> None:
        self.departments = {d.code: d for d in departments}
        self.settings = settings

    def resolve(self, recipient: str, channel: ChannelName) -> Address | None:
        kind, _, code = recipient.partition(":")
        if kind != "dept" or channel is not ChannelName.webhook:
            return None
        dept = self.departments.get(code)
        url = self.settings.webhook_url_template.format(dept=code) if self.settings.webhook_url_template else (
            dept.webhook if dept else None)
        if not url:
            return None
        secret = os.environ.get(f"GRIDBUS_SECRET_{code.upper()}") or self.settings.webhook_secret
        return Address(url, secret)


def outgoing(delivery: Delivery, address: Address) -> OutgoingMessage:
    return OutgoingMessage(delivery_id=delivery.delivery_id, channel=delivery.channel, to=address.to,
                           subject=delivery.subject, text=delivery.text, payload=delivery.payload,
                           secret=address.secret)


@dataclass(frozen=True)
class NextStep:
    """After an attempt: done, retry after `delay_s` (a delay queue), or dead-letter."""

    action: str  # delivered | retry | dead
    delay_s: int | None = None
    reason: str = ""


def next_step(delivery: Delivery, outcome: DeliveryOutcome) -> NextStep:
    if outcome.ok:
        return NextStep("delivered")
    if not outcome.transient:
        return NextStep("dead", reason=f"permanent failure: {outcome.detail}")
    if delivery.attempt > len(NOTIFIER_RETRY_DELAYS_S):
        return NextStep("dead", reason=f"gave up after {delivery.attempt} attempts: {outcome.detail}")
    delay = NOTIFIER_RETRY_DELAYS_S[delivery.attempt - 1]
    if outcome.retry_after:
        # honour Retry-After: the first delay queue at least that long
        delay = next((d for d in NOTIFIER_RETRY_DELAYS_S if d >= outcome.retry_after), NOTIFIER_RETRY_DELAYS_S[-1])
    return NextStep("retry", delay_s=delay, reason=outcome.detail)
