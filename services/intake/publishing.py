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
from shared.models import CaseRecorded, Envelope, Report
from shared.outbox import Outbox

log = structlog.get_logger("gridbus.intake")
RETRY_S = 1.0  # a failed batched `done` is tried again after this


def publish_stored(bus: Bus, store: CaseStore, events: list[Envelope]) -> None:
    """Publish events already in the outbox (one confirm round trip); if that fails
    they stay there for the relay. A store with batches (`CaseStore.publish_later`, the
    service's) leaves the archive's records (`case_recorded`) to the next batch: no
    consumer of a request's own events waits for them."""
    if not events:
        return
    if store.publish_later is not None:
        later: list[Envelope] = [e for e in events if isinstance(e, CaseRecorded)]
        if later:
            store.publish_later(bus, later)
            events = [e for e in events if not isinstance(e, CaseRecorded)]
            if not events:
                return
    try:
        bus.publish_events(events)
    except Exception as exc:  # the relay retries; the case is safe in Redis
        log.warning("publish_deferred", case_id=events[0].case_id, events=len(events), error=str(exc))
        return
    store.confirmed([e.message_id for e in events])


class OutboxCompletions:
    """The outbox's work in batches, off the request path: every `interval_s`, the
    archive's records stored meanwhile are published with one confirm round trip
    (`publish_later`; the case's record is for the archive and the audit stream alone,
    which take records in any order), and the ids of every event confirmed meanwhile leave
    the outbox in one round trip (`add`; the outbox `done`, a MULTI), instead of a confirm
    and a `done` per request and per applied event.

    The outbox stays correct: everything here is stored in the outbox already, and its
    relay takes only entries older than OUTBOX_RELAY_AFTER_SECONDS (5 s, well above
    `interval_s`), so an entry waiting here is not published twice; if the process dies
    before a flush, or a batch's publish fails, the relay publishes those entries (again),
    which every consumer recognises by message id (as after a crash between a confirm and
    `done` before). A `done` that fails (Redis away) keeps its ids for the next flush.
    `stop` flushes what is left."""

    def __init__(self, outbox: Outbox, interval_s: float = 0.05, max_batch: int = 500) -> None:
        self.outbox = outbox
        self.interval_s = interval_s
        self.max_batch = max_batch
        self._pending: list[str] = []
        self._unpublished: list[tuple[Bus, list[Envelope]]] = []
        self._lock = threading.Lock()
        self._timer: eventlet.greenthread.GreenThread | None = None

    def add(self, message_ids: Iterable[str], after_s: float | None = None) -> None:
        """These were confirmed: out of the outbox with the next batch."""
        with self._lock:
            self._pending.extend(message_ids)
            full = self._full() and after_s is None
            self._schedule(after_s)
        if full:
            self.flush()

    def publish_later(self, bus: Bus, events: list[Envelope]) -> None:
        """Publish these (stored in the outbox) with the next batch."""
        with self._lock:
            self._unpublished.append((bus, events))
            full = self._full()
            self._schedule(None)
        if full:
            self.flush()

    def _full(self) -> bool:
        return len(self._pending) + sum(len(e) for _, e in self._unpublished) >= self.max_batch

    def _schedule(self, after_s: float | None) -> None:
        if self._timer is None and (self._pending or self._unpublished):
            self._timer = eventlet.spawn_after(self.interval_s if after_s is None else after_s, self._flush_later)

    def _flush_later(self) -> None:
        with self._lock:
            self._timer = None
        self.flush()

    def flush(self) -> int:
        """Publish what waits for it, then remove what is confirmed from the outbox;
        returns how many left the outbox."""
        with self._lock:
            ids, self._pending = self._pending, []
            unpublished, self._unpublished = self._unpublished, []
        by_bus: dict[int, tuple[Bus, list[Envelope]]] = {}
        for bus, events in unpublished:
            by_bus.setdefault(id(bus), (bus, []))[1].extend(events)
        for bus, events in by_bus.values():
            try:
                bus.publish_events(events)
            except Exception as exc:  # the relay publishes them (they are in the outbox)
                log.warning("publish_deferred", case_id=events[0].case_id, events=len(events), error=str(exc))
                continue
            ids.extend(e.message_id for e in events)
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
        """Events waiting here: to be published or to leave the outbox."""
        return len(self._pending) + sum(len(e) for _, e in self._unpublished)

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
