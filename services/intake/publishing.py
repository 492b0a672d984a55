"""Getting stored events out, and registering a report end to end — shared by every
entrypoint that takes reports (HTTP, AMQP, Open311)."""

from __future__ import annotations

import structlog

from services.intake.cases import Registered, Registrar
from services.intake.store import CaseStore
from shared import metrics
from shared.bus import Bus
from shared.models import Envelope, Report

log = structlog.get_logger("gridbus.intake")


def publish_stored(bus: Bus, store: CaseStore, events: list[Envelope]) -> None:
    """Publish events already in the outbox (one confirm round trip); if that fails
    they stay there for the relay."""
    if not events:
        return
    try:
        bus.publish_events(events)
    except Exception as exc:  # the relay retries; the case is safe in Redis
        log.warning("publish_deferred", case_id=events[0].case_id, events=len(events), error=str(exc))
        return
    store.outbox.done(e.message_id for e in events)


def relay_stored(bus: Bus, store: CaseStore, older_than_s: float) -> int:
    """The outbox relay: publish what was stored more than `older_than_s` ago and is still
    unconfirmed (its publisher died or the broker refused); returns how many it took."""
    events = store.outbox.take(older_than_s)
    if events:
        log.info("outbox_relay", count=len(events))
        publish_stored(bus, store, events)
    return len(events)


def register_report(
    bus: Bus,
    store: CaseStore,
    registrar: Registrar,
    report: Report,
    channel: str,
    idempotency_key: str | None = None,
    **log_fields: str,
) -> Registered:
    """Register (or recognise) a report, publish its events, count and log it.
    Raises InvalidInput for a report that cannot be accepted."""
    result = registrar.register(report, idempotency_key=idempotency_key)
    if result.created:
        publish_stored(bus, store, result.events)
        metrics.CASES_REGISTERED.labels(result.street, report.category[:2]).inc()
        log.info(
            "case_registered",
            case_id=result.case_id,
            category=report.category,
            status=result.status.value,
            duplicate_of=result.duplicate_of,
            channel=channel,
            **log_fields,
        )
        outcome = "duplicate" if result.duplicate_of else "registered"
    else:
        log.info("report_repeated", case_id=result.case_id, report_id=report.report_id, channel=channel)
        outcome = "repeated"
    metrics.REPORTS_RECEIVED.labels(channel, outcome).inc()
    return result
