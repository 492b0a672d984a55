"""notifier's domain: one delivery (event × recipient × channel), what to do after an
attempt, and the sender that makes each delivery happen once.

An event fans out into `Delivery`s (see planner.py), each attempted on its own — first in
the process that planned it (plans.py), then, if it must wait, as a message retried
through the delay queues `notifier.retry.{10,60,300,1800}s` (TTL, then dead-lettered back
to `notifier.deliveries`) — and dead-lettered to
`notifier.deliveries.dead` after a permanent failure or the last try. Deliveries name
their recipient, not its address or secret (see addresses.py).

Delivery guarantees — the resend policy
---------------------------------------
* **Delivery id.** `sha256(event message id | recipient | channel)`: the same for every
  attempt, every retry and every repeat of the event. It travels with the message
  (webhook `X-Gridbus-Delivery`, robot text `投递编号 …`, SMS `out_id`, e-mail
  `Message-ID` / `X-Gridbus-Delivery`) so a receiver can recognise a repeat.
* **Done marker.** When a delivery is finished — delivered, dead-lettered, or handed to a
  digest — `notify:sent:<delivery id>` is written (30 days). A delivery whose marker
  exists is dropped, so an event that arrives twice gives one message per recipient and
  channel.
* **Lease.** Before sending, a replica takes `notify:lease:<id>` (SET NX, expiring after
  NOTIFIER_SEND_LEASE_SECONDS). A copy of the same delivery that finds the lease taken
  (the event arrived twice at the same moment) is parked in the 10 s delay queue with
  the same attempt number; when it comes back the done marker is usually there.
* **Crash between send and record.** Each attempt counts its sends in
  `notify:state:<id>` *before* sending. If the process dies after sending but before
  writing the outcome, RabbitMQ redelivers the unacked message (the delivery, or the
  event whose recorded plan holds it); the count is then 1, so the message is sent
  **once more, with the same delivery id** (the receiver may have got
  it: it de-duplicates on the id). If that resend also dies unrecorded, the count is 2 and
  the delivery is **not sent a third time**: it is dead-lettered with reason
  `outcome unknown` and a `notification_failed` event tells the operations centre to check.
  So a crash costs at most one resend, always recognisable by its delivery id.
* **Retries.** A transient failure (timeout, 5xx, 408/425/429, robot busy, SMTP 4xx) goes
  to the delay queue of the attempt (10 s, 1 min, 5 min, 30 min), or a longer one when
  the answer's Retry-After asks for more. After the fifth attempt, or on a permanent
  failure, the delivery is dead-lettered; if the subscription names a fallback channel
  (e.g. wecom → sms) the next channel gets a fresh delivery, otherwise a
  `notification_failed` event goes out (never for a failed `notification_failed`
  message itself, which would loop).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from pydantic import BaseModel, Field

from services.notifier.channels.base import ChannelName, DeliveryOutcome, OutgoingMessage
from shared.leases import KeyLeases
from shared.models import utcnow
from shared.notification_log import notifications_of
from shared.scripts import Lua
from shared.topology import NOTIFIER_RETRY_DELAYS_S

SENT_TTL_S = 30 * 86400  # how long a finished delivery is remembered for dedup
DETAIL_KEPT = 300  # characters of what became of a delivery, in its case's log and its record
MAX_SENDS_PER_ATTEMPT = 2  # the first send and at most one resend after a crash


class Delivery(BaseModel):
    delivery_id: str
    event: str
    case_id: str
    correlation_id: str
    recipient: str = Field(
        description="`liaison:<dept>:<street>`, `dept:<code>`, `commander:<level>:<id>`, "
        "`ops`, `reporter:<id>`: resolved to an address at send time"
    )
    channel: ChannelName
    subject: str
    text: str
    payload: dict[str, Any]
    attempt: int = 1
    first_attempt_at: datetime = Field(default_factory=utcnow)
    fallbacks: list[ChannelName] = Field(default_factory=list, description="Next channels if this one fails for good")
    urgent: bool = Field(False, description="Never held for quiet hours or the rate limit")
    sms_template: str | None = None
    sms_params: dict[str, str] = Field(default_factory=dict)
    event_message_id: str = ""
    context: dict[str, Any] = Field(default_factory=dict, description="Template context (to render a fallback)")
    items: list[dict[str, Any]] = Field(default_factory=list, description="digest: the messages it folds")


def delivery_id(message_id: str, recipient: str, channel: ChannelName) -> str:
    """Stable across redeliveries of the same event: the receiver's dedup key too."""
    return hashlib.sha256(f"{message_id}|{recipient}|{ChannelName(channel).value}".encode()).hexdigest()[:32]


def outgoing(delivery: Delivery, to: str, secret: str | None, mentions: tuple[str, ...] = ()) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=delivery.delivery_id,
        channel=delivery.channel,
        to=to,
        subject=delivery.subject,
        text=delivery.text,
        payload=delivery.payload,
        mentions=mentions,
        secret=secret,
        sms_template=delivery.sms_template,
        sms_params=delivery.sms_params,
    )


@dataclass(frozen=True)
class NextStep:
    """After an attempt: done, retry after `delay_s` (a delay queue), or dead-letter."""

    action: str  # delivered | retry | dead
    delay_s: int | None = None
    reason: str = ""
    kind: str = ""  # dead: permanent | exhausted


def next_step(
    delivery: Delivery, outcome: DeliveryOutcome, delays: tuple[int, ...] = NOTIFIER_RETRY_DELAYS_S
) -> NextStep:
    """Attempt n (1-based) that failed transiently waits delays[n-1]; a Retry-After longer than
    that picks the first delay queue at least as long (the longest if none is)."""
    if outcome.ok:
        return NextStep("delivered")
    if not outcome.transient:
        return NextStep("dead", reason=f"permanent failure: {outcome.detail}", kind="permanent")
    if delivery.attempt > len(delays):
        return NextStep("dead", reason=f"gave up after {delivery.attempt} attempts: {outcome.detail}", kind="exhausted")
    delay = delays[delivery.attempt - 1]
    if outcome.retry_after and outcome.retry_after > delay:
        delay = next((d for d in delays if d >= outcome.retry_after), delays[-1])
    return NextStep("retry", delay_s=delay, reason=outcome.detail)


# --------------------------------------------------------------------------- sender state


_CLAIM = Lua("services.notifier", "claim_delivery")

_FINISH = Lua("services.notifier", "finish_delivery")


@dataclass
class Lease:
    """A delivery's send lease while it is held (`released` once given back)."""

    token: str
    released: bool = False


@dataclass(frozen=True)
class Claim:
    """What `SendState.claim` found: `what` is sent | attempted | busy | go; with go the
    lease is held and `sends` counts this attempt's sends including this one."""

    what: str
    sends: int = 0
    lease: Lease | None = None


class SendState:
    """The Redis records behind the guarantees above."""

    def __init__(self, client: Any, keys: Any) -> None:
        self.r = client
        self.keys = keys
        self.leases = KeyLeases(client)
        self._claim = _CLAIM.on(client)
        self._finish = _FINISH.on(client)

    def finished(self, did: str) -> str | None:
        return self.r.get(self.keys.delivery_sent(did))

    def looked_up(self, did: str, attempt: int) -> tuple[bool, bool]:
        """(finished, this attempt already handed on), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(self.keys.delivery_sent(did))
        pipe.hexists(self.keys.delivery_state(did), f"a{attempt}:done")
        sent, attempted = pipe.execute()
        return bool(sent), bool(attempted)

    def claim(self, did: str, attempt: int, lease_s: float) -> Claim:
        """Check, lease and count the send atomically (see `_CLAIM`)."""
        token = uuid.uuid4().hex
        what, sends = self._claim(
            keys=[self.keys.delivery_sent(did), self.keys.delivery_state(did), self.keys.delivery_lease(did)],
            args=[attempt, token, max(1, int(lease_s * 1000)), SENT_TTL_S],
        )
        what = what.decode() if isinstance(what, bytes) else str(what)
        return Claim(what, int(sends), Lease(token) if what == "go" else None)

    def finish(
        self,
        did: str,
        how: str,
        delivery: "Delivery | None" = None,
        detail: str = "",
        lease: Lease | None = None,
        at: int | None = None,
    ) -> None:
        """Mark the delivery done (`at`: when, unix seconds); with `delivery`, also note it in
        its case's log (the console's case page lists every notification of a case from
        there); with `lease`, give it back in the same round trip."""
        now = int(time.time()) if at is None else at
        entry = ""
        case_id = delivery.case_id if delivery is not None else ""
        if delivery is not None and delivery.case_id:
            entry = json.dumps(
                {
                    "event": delivery.event,
                    "recipient": delivery.recipient,
                    "channel": delivery.channel.value,
                    "subject": delivery.subject,
                    "outcome": how,
                    "detail": detail[:DETAIL_KEPT],
                    "attempt": delivery.attempt,
                    "at": now,
                },
                ensure_ascii=False,
            )
        token = lease.token if lease is not None and not lease.released else ""
        self._finish(
            keys=[self.keys.delivery_sent(did), self.keys.notify_case_log(case_id), self.keys.delivery_lease(did)],
            args=[f"{how}:{now}", SENT_TTL_S, did, entry, token],
        )
        if lease is not None:
            lease.released = True

    def case_log(self, case_id: str) -> list[dict[str, Any]]:
        """Every finished notification of a case, oldest first (shared.notification_log reads it)."""
        return notifications_of(self.r, case_id)

    def release(self, did: str, lease: Lease) -> None:
        if not lease.released:
            self.leases.release(self.keys.delivery_lease(did), lease.token)
            lease.released = True

    def mark_attempt(self, did: str, attempt: int, what: str) -> None:
        self.r.hset(self.keys.delivery_state(did), f"a{attempt}:done", what)


Clock = Callable[[], float]
