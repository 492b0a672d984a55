"""The notifier's work, without nameko: plan an event, send a delivery, flush digests.

`Notifier.on_event` fans an event out into deliveries and sends them (plans.py);
`Notifier.deliver` makes one delivery happen at most once per id (see deliveries.py for
the resend policy) — for the event's own deliveries and for those that come back from
notifier.deliveries (retries, parked copies);
`Notifier.flush` turns held messages into digests. The nameko service (service.py) only
calls these from its entrypoints and timers.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import redis
import structlog

from services.notifier import deliveries
from services.notifier import digest as digests
from services.notifier.addresses import AddressBook
from services.notifier.channels.base import ChannelName, ChannelSettings, DeliveryOutcome, send
from services.notifier.deliveries import (
    MAX_SENDS_PER_ATTEMPT,
    Delivery,
    Lease,
    SendState,
    delivery_id,
    next_step,
    outgoing,
)
from services.notifier.planner import CaseFacts, Planner
from services.notifier.plans import IN_PROCESS_BUDGET_S, Plans
from services.notifier.subscriptions import NotifyFile
from shared import metrics, topology
from shared import redis_keys as keys
from shared.bus import Bus, Outgoing
from shared.models import Case, Envelope, NotificationFailed, NotificationSent
from shared.nameko_ext import dead_letter
from shared.resilience import transient_dependency

log = structlog.get_logger("gridbus.notifier")


def load_case(client: redis.Redis, case_id: str) -> Case | None:
    """The case as intake stored it (read only), or None."""
    doc = client.hget(keys.case(case_id), "doc")
    if not doc:
        return None
    try:
        return Case.model_validate_json(doc)
    except ValueError:
        return None


class Notifier:
    def __init__(
        self,
        client: redis.Redis,
        bus: Bus,
        planner: Planner,
        addresses: AddressBook,
        notify: NotifyFile,
        channel_settings: ChannelSettings,
        *,
        tz: str = "Asia/Shanghai",
        lease_s: float = 30.0,
    ) -> None:
        self.r = client
        self.bus = bus
        self.planner = planner
        self.addresses = addresses
        self.notify = notify
        self.channel_settings = channel_settings
        self.tz = ZoneInfo(tz)
        self.lease_s = lease_s
        self.state = SendState(client, keys)
        self.holds = digests.HoldStore(client)
        self.plans = Plans(client)
        self.disabled = channel_settings.disabled()

    # ------------------------------------------------------------------ events

    def case_facts(self, case_id: str) -> CaseFacts:
        case = load_case(self.r, case_id)
        facts = CaseFacts(case=case)
        if case is not None:
            for dup in case.duplicates[:50]:
                other = load_case(self.r, dup)
                if other is not None:
                    facts.duplicate_reporters.setdefault(other.reporter_id, other.case_id)
        return facts

    def on_event(self, event: Envelope) -> list[Delivery]:
        """Plan the event's deliveries and send them here and now (plans.py says why that is
        as safe as a hop through notifier.deliveries); returns them. The caller acks the
        event after this returns: by then each is finished or durably handed on."""
        planned = self.plan(event)
        self.deliver_planned(event, planned)
        return planned

    def plan(self, event: Envelope) -> list[Delivery]:
        """The event's deliveries, recorded before any is sent: an earlier try's (a notifier
        that died sending them) when there is one, else planned now."""
        return self.plans.keep(event.message_id, self.planner.plan(event, self.case_facts(event.case_id)))

    def deliver_planned(self, event: Envelope, planned: list[Delivery], budget_s: float = IN_PROCESS_BUDGET_S) -> None:
        """Send the deliveries one after the other; once `budget_s` is spent (slow receivers:
        each may take the channel's timeout, and its fallbacks too) the rest go to
        notifier.deliveries in one confirm round, so that the event's handler stays well
        within CONSUMER_STUCK_SECONDS however wide the fan-out."""
        started = time.monotonic()
        for i, delivery in enumerate(planned):
            if time.monotonic() - started >= budget_s:
                rest = planned[i:]
                self.bus.publish_batch(
                    [
                        Outgoing(
                            topology.EX_NOTIFY, topology.RK_DELIVERY, d, d.delivery_id, d.correlation_id, "delivery"
                        )
                        for d in rest
                    ]
                )
                log.info("deliveries_handed_to_queue", case_id=event.case_id, deliveries=len(rest), budget_s=budget_s)
                break
            self.deliver_here(delivery)
        if planned:
            self.plans.forget(event.message_id)

    def deliver_here(self, delivery: Delivery) -> str:
        """`deliver`, in the process that planned the delivery (or fell back to it). A bug
        hands the delivery to notifier.deliveries (its own tries there, then its dead letter
        with the reason) instead of holding up the others; a dependency that is down raises:
        the caller's message is held and handled again whole, and the done markers drop
        what got through."""
        try:
            return self.deliver(delivery)
        except Exception as exc:
            if transient_dependency(exc) is not None:
                raise
            log.exception(
                "delivery_handed_to_queue",
                case_id=delivery.case_id,
                delivery_id=delivery.delivery_id,
                channel=delivery.channel.value,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            self.publish(delivery)
            return "queued"

    def publish(self, delivery: Delivery, routing_key: str = topology.RK_DELIVERY) -> None:
        # the batch confirm channel: less CPU than Bus.publish
        kind = "delivery" if routing_key == topology.RK_DELIVERY else "retry"
        self.bus.publish_batch(
            [Outgoing(topology.EX_NOTIFY, routing_key, delivery, delivery.delivery_id, delivery.correlation_id, kind)]
        )

    # ------------------------------------------------------------------ one delivery

    def deliver(self, delivery: Delivery, now: float | None = None) -> str:
        """Do what this delivery message asks; returns what happened (for logs and tests).

        Raises only for infrastructure trouble (Redis, broker): the message is then
        requeued by the consumer and the steps below are safe to repeat.
        """
        now = time.time() if now is None else now
        did, channel = delivery.delivery_id, delivery.channel.value
        log_ctx = {
            "case_id": delivery.case_id,
            "delivery_id": did,
            "channel": channel,
            "recipient": delivery.recipient,
            "attempt": delivery.attempt,
        }
        if self.holdable(delivery):
            # a delivery about to be held must not be finished already: look first
            sent, attempted = self.state.looked_up(did, delivery.attempt)
            if sent:
                return self._duplicate(log_ctx)
            if attempted:
                return "duplicate"  # this attempt's retry was already published: a redelivered copy
            held = self.maybe_hold(delivery, now)
            if held:
                return held
        claim = self.state.claim(did, delivery.attempt, self.lease_s)
        if claim.what == "sent":
            return self._duplicate(log_ctx)
        if claim.what == "attempted":
            return "duplicate"
        if claim.lease is None:
            # another copy is being sent right now (the event came twice): look again later
            self.publish(delivery, topology.retry_routing_key(topology.NOTIFIER_RETRY_DELAYS_S[0]))
            log.info("delivery_busy_elsewhere", **log_ctx)
            return "parked"
        try:
            return self._attempt(delivery, log_ctx, claim.sends, claim.lease)
        finally:
            self.state.release(did, claim.lease)

    def _duplicate(self, log_ctx: dict[str, Any]) -> str:
        metrics.NOTIFICATION_DELIVERIES.labels(log_ctx["channel"], "duplicate").inc()
        log.info("delivery_duplicate", **log_ctx)
        return "duplicate"

    def holdable(self, delivery: Delivery) -> bool:
        """Whether quiet hours or the rate limit may hold this delivery (digests.hold_until's
        exemptions, without a Redis call)."""
        if delivery.urgent or delivery.event == "digest" or delivery.attempt > 1:
            return False
        if delivery.channel is ChannelName.webhook:
            return False
        quiet = self.notify.quiet_hours.for_recipient(delivery.recipient)
        return self.notify.rate_limit is not None or quiet is not None

    def maybe_hold(self, delivery: Delivery, now: float) -> str | None:
        quiet = self.notify.quiet_hours.for_recipient(delivery.recipient)
        rate = self.notify.rate_limit
        if quiet is None and rate is None:
            return None
        local_now = datetime.fromtimestamp(now, self.tz)
        decision = digests.hold_until(delivery, local_now, quiet, rate, self.holds)
        if decision is None:
            return None
        reason, release_at = decision
        self.holds.hold(delivery, release_at)
        metrics.NOTIFICATION_DELIVERIES.labels(delivery.channel.value, "held").inc()
        log.info(
            "delivery_held",
            case_id=delivery.case_id,
            delivery_id=delivery.delivery_id,
            recipient=delivery.recipient,
            channel=delivery.channel.value,
            reason=reason,
            release_at=datetime.fromtimestamp(release_at, timezone.utc).isoformat(),
        )
        return f"held:{reason}"

    def _attempt(self, delivery: Delivery, log_ctx: dict[str, Any], sends: int, lease: Lease) -> str:
        did, channel = delivery.delivery_id, delivery.channel.value
        if sends > MAX_SENDS_PER_ATTEMPT:
            reason = (
                f"outcome unknown: sending was interrupted {sends - 1} times before the result was "
                f"recorded; not resending (at most one resend per attempt)"
            )
            return self._dead(delivery, reason, "unknown_outcome", log_ctx, lease)
        if sends == MAX_SENDS_PER_ATTEMPT:
            log.warning("delivery_resend_after_crash", **log_ctx)
        disabled = delivery.channel in self.disabled  # reported once at start-up, not per message
        address = None if disabled else self.addresses.resolve(delivery.recipient, delivery.channel)
        if address is None or not address.to:
            metrics.NOTIFICATION_DELIVERIES.labels(channel, "no_address").inc()
            metrics.NOTIFICATIONS.labels(channel, "no_address").inc()
            why = (
                f"{channel} disabled ({self.disabled[delivery.channel]} not set)"
                if disabled
                else f"no {channel} address for {delivery.recipient}"
            )
            if delivery.fallbacks:
                self._fallback(delivery, why)
                self._finish(delivery, "no_address", "fallback", lease)
                return "fallback"
            if disabled:
                log.debug("delivery_channel_disabled", **log_ctx)
            else:
                log.warning("delivery_no_address", **log_ctx)
            self._finish(delivery, "no_address", lease=lease)
            return "no_address"
        started = time.perf_counter()
        outcome: DeliveryOutcome = send(
            outgoing(delivery, address.to, address.secret, address.mentions), self.channel_settings
        )
        metrics.NOTIFICATION_LATENCY.labels(channel).observe(time.perf_counter() - started)
        metrics.NOTIFICATIONS.labels(channel, outcome.kind).inc()
        step = next_step(delivery, outcome)
        if step.action == "delivered":
            self._finish(delivery, "delivered", lease=lease)
            metrics.NOTIFICATION_DELIVERIES.labels(channel, "delivered").inc()
            metrics.NOTIFICATION_DELIVERY_LATENCY.labels(channel).observe(
                max(0.0, time.time() - delivery.first_attempt_at.timestamp())
            )
            log.info("delivered", **log_ctx)
            return "delivered"
        if step.action == "retry":
            assert step.delay_s is not None
            retry = delivery.model_copy(update={"attempt": delivery.attempt + 1})
            self.publish(retry, topology.retry_routing_key(step.delay_s))
            self.state.mark_attempt(did, delivery.attempt, f"retry:{step.delay_s}")
            log.info("delivery_retry", delay_s=step.delay_s, reason=step.reason, **log_ctx)
            return f"retry:{step.delay_s}"
        return self._dead(delivery, step.reason, step.kind, log_ctx, lease)

    def _finish(self, delivery: Delivery, how: str, detail: str = "", lease: Lease | None = None) -> None:
        """The done marker, after the archive's record of it is confirmed by the broker (a
        failed publish leaves the delivery unfinished: redelivered, at most one resend).
        The record carries what the case's log shows, at the same second (gridbus rebuild
        restores the log from it)."""
        now = int(time.time())
        self.bus.publish_event(
            NotificationSent(
                message_id=f"sent:{delivery.delivery_id}",
                case_id=delivery.case_id,
                correlation_id=delivery.correlation_id,
                delivery_id=delivery.delivery_id,
                source_event=delivery.event,
                channel=delivery.channel.value,
                recipient=delivery.recipient,
                outcome=how,
                subject=delivery.subject,
                detail=detail[: deliveries.DETAIL_KEPT],
                attempt=delivery.attempt,
                occurred_at=datetime.fromtimestamp(now, timezone.utc),
            )
        )
        self.state.finish(delivery.delivery_id, how, delivery, detail, lease, at=now)

    def _dead(
        self, delivery: Delivery, reason: str, kind: str, log_ctx: dict[str, Any], lease: Lease | None = None
    ) -> str:
        did, channel = delivery.delivery_id, delivery.channel.value
        note = f" (falling back to {delivery.fallbacks[0].value})" if delivery.fallbacks else ""
        dead_letter(
            self.bus,
            topology.Q_NOTIFIER_DELIVERIES,
            delivery.model_dump_json().encode(),
            "application/json",
            reason + note,
            "delivery_failed",
            message_id=did,
        )
        metrics.NOTIFICATION_DEAD.labels(channel, kind).inc()
        if delivery.fallbacks:
            self._fallback(delivery, reason)
            metrics.NOTIFICATION_DELIVERIES.labels(channel, "fallback").inc()
        else:
            metrics.NOTIFICATION_DELIVERIES.labels(channel, "dead").inc()
            if delivery.event != "notification_failed":  # a failure to report a failure must not loop
                self.failed(delivery, reason)
        self._finish(delivery, "dead", reason + note, lease)
        log.warning("delivery_dead", reason=reason, kind=kind, fallback=bool(delivery.fallbacks), **log_ctx)
        return f"dead:{kind}"

    def _fallback(self, delivery: Delivery, reason: str) -> None:
        channel = delivery.fallbacks[0]
        base_id = delivery.event_message_id or delivery.delivery_id
        if delivery.event == "digest":
            items = [Delivery.model_validate(i) for i in delivery.items]
            nxt = self.digest_for(delivery.recipient, channel, items, fallbacks=delivery.fallbacks[1:])
        else:
            subject, text, sms_template, sms_params = self.planner.render(
                delivery.event, channel, delivery.recipient, delivery.context
            )
            nxt = delivery.model_copy(
                update={
                    "delivery_id": delivery_id(base_id, delivery.recipient, channel),
                    "channel": channel,
                    "subject": subject,
                    "text": text,
                    "sms_template": sms_template,
                    "sms_params": sms_params,
                    "attempt": 1,
                    "fallbacks": delivery.fallbacks[1:],
                }
            )
        log.info(
            "delivery_fallback",
            case_id=delivery.case_id,
            delivery_id=delivery.delivery_id,
            next_delivery_id=nxt.delivery_id,
            channel=channel.value,
            reason=reason,
        )
        # here and now, before this delivery is marked done: a crash in between leaves it
        # unfinished, so its redelivery (or its event's) falls back again, and the next
        # channel's own done marker and send count keep that to one message
        self.deliver_here(nxt)

    def failed(self, delivery: Delivery, reason: str) -> None:
        """notification_failed on the bus (the operations centre's dashboards, the audit
        stream) and straight into this notifier's own subscriptions for it."""
        event = NotificationFailed(
            message_id=f"failed:{delivery.delivery_id}",
            case_id=delivery.case_id,
            correlation_id=delivery.correlation_id,
            channel=delivery.channel.value,
            recipient=delivery.recipient,
            reason=reason[:500],
            attempts=delivery.attempt,
        )
        self.bus.publish_event(event)
        for out in self.planner.plan(event, CaseFacts(case=load_case(self.r, delivery.case_id))):
            self.publish(out)

    # ------------------------------------------------------------------ digests

    def digest_for(
        self, recipient: str, channel: ChannelName, items: list[Delivery], fallbacks: list[ChannelName] | None = None
    ) -> Delivery:
        bucket = digests.digest_bucket(recipient, channel.value)
        first = items[0]
        entries = [{"case_id": d.case_id, "subject": d.subject} for d in items]
        ctx = {"items": entries, "recipient_name": self.addresses.name_of(recipient)}
        subject, text = self.planner.renderer.render("digest", channel, ctx)
        sms_template, sms_params = None, {}
        if channel is ChannelName.sms:
            sms_template = self.notify.sms_templates.get("digest")
            params_ctx = {**first.context, "case_id": f"{first.case_id}等{len(items)}件"}
            sms_params = self.planner.renderer.sms_params(params_ctx)
        return Delivery(
            delivery_id=digests.digest_id(bucket, items),
            event="digest",
            case_id=first.case_id,
            correlation_id=first.correlation_id,
            recipient=recipient,
            channel=channel,
            subject=subject,
            text=text,
            urgent=True,
            sms_template=sms_template,
            sms_params=sms_params,
            fallbacks=list(first.fallbacks if fallbacks is None else fallbacks),
            first_attempt_at=min(d.first_attempt_at for d in items),
            payload={
                "event": "digest",
                "case_id": first.case_id,
                "case_ids": [d.case_id for d in items],
                "delivery_ids": [d.delivery_id for d in items],
                "messages": [{"event": d.event, "case_id": d.case_id, "subject": d.subject} for d in items],
            },
            items=[d.model_dump(mode="json") for d in items],
        )

    def flush(self, now: float | None = None, lease_s: float = 60.0) -> list[Delivery]:
        """Publish a digest for every bucket whose release time has come."""
        now = time.time() if now is None else now
        out = []
        for claimed in self.holds.claim(now, lease_s):
            if claimed.items:
                recipient, _, channel = claimed.bucket.rpartition("|")
                dig = self.digest_for(recipient, ChannelName(channel), claimed.items)
                self.publish(dig)
                for item in claimed.items:
                    self._finish(item, f"digest:{dig.delivery_id}")
                metrics.NOTIFICATION_DELIVERIES.labels(channel, "digested").inc(len(claimed.items))
                log.info(
                    "digest_published",
                    recipient=recipient,
                    channel=channel,
                    items=len(claimed.items),
                    delivery_id=dig.delivery_id,
                )
                out.append(dig)
            self.holds.done(claimed.bucket, now)
        return out
