"""Getting stored events out, and registering a report end to end — shared by every
entrypoint that takes reports (HTTP, AMQP, Open311)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import eventlet
import structlog

from services.intake.cases import Registered, Registrar
from services.intake.store import CaseStore
from shared import metrics
from shared.bus import Bus
from shared.models import Envelope, Report
from shared.outbox import Outbox

log = structlog.get_logger("gridbus.intake")
RETRY_S = 1.0  # a failed batched `done` is tried again after this


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
    store.confirmed([e.message_id for e in events])


class OutboxCompletions:
    """Confirmed events leave intake's outbox in batches, off the request path: the
    confirmed ids of every request within `interval_s` go in one round trip (the outbox
    `done`, a MULTI), instead of one per request and per applied event.

    The outbox stays correct: its relay takes only entries older than
    OUTBOX_RELAY_AFTER_SECONDS (5 s, well above `interval_s`), so an entry waiting here is
    not published again; if the process dies before a flush, the relay publishes those
    entries once more, which every consumer recognises by message id (as after a crash
    between a confirm and `done` before). A flush that fails (Redis away) keeps its ids
    for the next one. `stop` flushes what is left."""

    def __init__(self, outbox: Outbox, interval_s: float = 0.05, max_batch: int = 500) -> None:
        self.outbox = outbox
        self.interval_s = interval_s
        self.max_batch = max_batch
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._timer: eventlet.greenthread.GreenThread | None = None

    def add(self, message_ids: Iterable[str], after_s: float | None = None) -> None:
        with self._lock:
            self._pending.extend(message_ids)
            full = len(self._pending) >= self.max_batch and after_s is None
            if not full and self._timer is None and self._pending:
                self._timer = eventlet.spawn_after(self.interval_s if after_s is None else after_s, self._flush_later)
        if full:
            self.flush()

    def _flush_later(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self) -> int:
        """Remove what is pending from the outbox now; returns how many."""
        with self._lock:
            ids, self._pending = self._pending, []
        if not ids:
            return 0
        try:
            self.outbox.done(ids)
        except Exception as exc:  # Redis away: kept, tried again in a second (the relay waits 5 s anyway)
            log.warning("outbox_done_deferred", events=len(ids), error=str(exc))
            self.add(ids, after_s=RETRY_S)
            return 0
        return len(ids)

    def pending(self) -> int:
        return len(self._pending)

    def stop(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()


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
