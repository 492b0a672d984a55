"""The archiver's reader of the record: the `gridbus.audit` stream, written to PostgreSQL
in batches, each in one transaction together with the stream offset it reached.

- **Exactly-once effect.** A batch's rows and `stream_offsets.written_to` commit together
  (services/archiver/offsets.py); a (re)started reader consumes from written_to + 1. A kill
  at any point leaves either the whole batch and its offset or neither; the journal's
  message id makes any repeat (a message published twice) write nothing.
- **Batches** of up to ARCHIVER_BATCH_MESSAGES messages or whatever came within
  ARCHIVER_BATCH_MS of the first. The prefetch is twice the batch, so the next batch
  arrives while one is written; acks only return credit (a stream keeps every message).
- **One writer.** Every stream consumer gets every message, and RabbitMQ 3.10 has no
  single active consumer for streams over AMQP: the reader first takes a session
  advisory lock on its writing connection (`offsets.LOCK_ID`); the other replicas wait
  as standbys and take over when that connection ends. `advance` also refuses a batch
  that does not start where the stored offset stands.
- **Unarchivable messages** cannot be dead-lettered by a stream: `refuse` publishes each
  (confirmed, with its reason) to `gridbus.audit.dead` before the batch commits, and the
  offset moves past it. A crash between the two publishes that dead letter again on
  restart (the same message id; `gridbus dead replay` puts it back into the stream).
  A batch the database refuses (not an outage) is written again message by message, each
  in a savepoint, so that only the message it refuses is refused.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

import psycopg
import structlog

from services.archiver import db, offsets
from services.archiver.writer import Checked, Outcome, Unarchivable, check, write, write_many
from shared import metrics
from shared.amqpclient import body_bytes, channel, close_quietly, connect, stream_offset
from shared.bus import Bus
from shared.nameko_ext import dead_letter
from shared.resilience import backoff_delay, transient_dependency
from shared.topology import Q_AUDIT

log = structlog.get_logger("gridbus.archiver")

#: a standby looks for the writer's lock this often
LOCK_POLL_S = 2.0
#: an idle reader checks its PostgreSQL session (and so its lock) this often
IDLE_PING_S = 5.0
#: AMQP heartbeat of the reader's connection (a silently dropped broker is noticed)
HEARTBEAT_S = 30
#: after attaching, a reader with credit has had everything after its offset delivered by then
ATTACH_SETTLE_S = 2.0
#: a dead letter's offset in the stream it was refused from
OFFSET_HEADER = "x-gridbus-stream-offset"


@dataclass(frozen=True)
class Taken:
    """One message the stream delivered."""

    offset: int
    tag: int
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)


Refuse = Callable[[Taken, str], None]


def refuser(bus: Bus, stream: str = Q_AUDIT) -> Refuse:
    """Unarchivable messages to `<stream>.dead` with their reason, confirmed (`gridbus dead`
    lists them; `gridbus dead replay gridbus.audit` appends them to the stream again)."""

    def refuse(taken: Taken, reason: str) -> None:
        props = taken.properties
        dead_letter(
            bus,
            stream,
            taken.body,
            props.get("content_type"),
            f"cannot be archived: {reason}",
            "unarchivable",
            headers={**(props.get("application_headers") or {}), OFFSET_HEADER: taken.offset},
            message_id=props.get("message_id"),
        )

    return refuse


def write_batch(
    conn: psycopg.Connection,
    stream: str,
    before: int | None,
    batch: Sequence[Taken],
    tz: ZoneInfo,
    refuse: Refuse,
) -> tuple[list[Outcome], list[tuple[Taken, str]]]:
    """Write `batch` and move the stored offset from `before` to its last message's, in one
    transaction. Messages at or below `before` are skipped (already written). Returns what
    was written and what was refused (each passed to `refuse` before the commit; if that
    raises, nothing is committed). Outages propagate; so does `offsets.Moved`."""
    todo = [t for t in batch if before is None or t.offset > before]
    if not todo:  # all of it written before (a repeat delivery): the offset stays
        return [], []
    try:
        return _write(conn, stream, before, batch[-1].offset, todo, tz, refuse, careful=False)
    except psycopg.Error as exc:
        if transient_dependency(exc) is not None:
            raise
        log.warning("archive_batch_refused", messages=len(todo), error=f"{type(exc).__name__}: {exc}"[:300])
        return _write(conn, stream, before, batch[-1].offset, todo, tz, refuse, careful=True)


def _write(
    conn: psycopg.Connection,
    stream: str,
    before: int | None,
    to: int,
    todo: Sequence[Taken],
    tz: ZoneInfo,
    refuse: Refuse,
    careful: bool,
) -> tuple[list[Outcome], list[tuple[Taken, str]]]:
    written: list[Outcome] = []
    refused: list[tuple[Taken, str]] = []
    with conn.transaction():
        if careful:
            for taken in todo:
                try:
                    written.append(_one(conn, check(taken.body), tz))
                except Unarchivable as exc:
                    refused.append((taken, str(exc)))
        else:
            ok: list[Checked] = []
            for taken in todo:
                try:
                    ok.append(check(taken.body))
                except Unarchivable as exc:
                    refused.append((taken, str(exc)))
            written = write_many(conn, ok, tz)
        for taken, reason in refused:
            refuse(taken, reason)
        newest = max((o.occurred_at for o in written if o.new), default=None)
        offsets.advance(conn, stream, before, to, newest)
    return written, refused


def _one(conn: psycopg.Connection, checked: Checked, tz: ZoneInfo) -> Outcome:
    """One message in a savepoint: one the database refuses takes nothing else with it."""
    try:
        with conn.transaction():
            return write(conn, checked, tz)
    except psycopg.Error as exc:
        if transient_dependency(exc) is not None:
            raise
        raise Unarchivable(f"refused by the database: {type(exc).__name__}: {exc}") from None


def count(written: Sequence[Outcome]) -> None:
    for out in written:
        metrics.ARCHIVED.labels(out.kind, "new" if out.new else "repeat").inc()


def taken_of(msg: Any) -> Taken:
    return Taken(stream_offset(msg), msg.delivery_tag, body_bytes(msg), dict(msg.properties))


def lag(backlog: int, newest: datetime | None, started: float, now: float | None = None) -> float:
    """0 with nothing left to write; else how old the newest message written is, or —
    nothing written yet — how long the archive has been unable to write."""
    if backlog <= 0:
        return 0.0
    now = time.time() if now is None else now
    return max(0.0, now - (newest.timestamp() if newest is not None else started))


class StreamReader:
    """Reads the stream into the archive until `stop()`; runs in one (green) thread.

    `state` says what it is doing, for /healthz: `starting`, `standby` (another archiver
    holds the writer's lock), `consuming`, `waiting` (a dependency is down: `dependency`),
    `failed` (anything else; tried again after a back-off)."""

    def __init__(
        self,
        amqp_uri: str,
        dsn: str,
        tz: ZoneInfo,
        stream: str,
        refuse: Refuse,
        batch_messages: int = 500,
        batch_s: float = 0.2,
        retry_cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.amqp_uri, self.dsn, self.tz, self.stream, self.refuse = amqp_uri, dsn, tz, stream, refuse
        self.batch_messages, self.batch_s, self.retry_cap = batch_messages, batch_s, retry_cap
        self.clock = clock
        self.stopping = False
        self.state, self.dependency, self.detail = "starting", "", ""
        self.since = self.beat_at = clock()
        self.written_to: int | None = None
        self.seen_to: int | None = None  # the highest offset the stream delivered to this reader
        self.outstanding = 0  # delivered, not yet acked (credit used)

    # -- what /healthz reads

    def _set(self, state: str, detail: str = "", dependency: str = "") -> None:
        if state != self.state or dependency != self.dependency:
            self.since = self.clock()
        self.state, self.detail, self.dependency = state, detail, dependency

    def beat(self) -> None:
        self.beat_at = self.clock()

    def attached(self, stale_after: float) -> tuple[bool, str]:
        """The reader runs and is attached to the stream (or a standby, or waiting only for
        PostgreSQL, which `writing` reports): the `consumers` check."""
        age = self.clock() - self.beat_at
        if age > stale_after:
            return False, f"the stream reader has not run for {age:.0f} s ({self.state})"
        if self.state in ("consuming", "standby") or (self.state == "waiting" and self.dependency == "postgres"):
            return True, f"{self.state} {self.stream}" + (f": {self.detail}" if self.detail else "")
        return False, f"{self.state} for {self.clock() - self.since:.0f} s: {self.detail or 'not attached yet'}"

    def writing(self) -> tuple[bool, str]:
        """The record is being written (or this replica is a standby): the `archive` check."""
        if self.state in ("consuming", "standby"):
            at = "" if self.written_to is None else f" (written to offset {self.written_to})"
            return True, f"{self.state}{at}"
        return False, f"{self.state} for {self.clock() - self.since:.0f} s: {self.dependency or ''} {self.detail}"

    def stream_end(self) -> int | None:
        """The stream's last offset as this reader knows it, when it knows it: consuming with
        credit left, the broker has delivered everything up to the stream's end (else None:
        ask the stream, `amqpclient.stream_end`)."""
        settled = self.clock() - self.since >= ATTACH_SETTLE_S  # what was there at attach has come
        if self.state == "consuming" and settled and self.outstanding < 2 * self.batch_messages:
            known = [o for o in (self.seen_to, self.written_to) if o is not None]
            return max(known) if known else None
        return None

    # -- the loop

    def stop(self) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        end = self.clock() + seconds
        while not self.stopping and (left := end - self.clock()) > 0:
            time.sleep(min(0.5, left))
            self.beat()

    def run(self) -> None:
        attempt = 0
        while not self.stopping:
            try:
                self._session()
                attempt = 0
            except Exception as exc:  # every failure ends the session; a new one starts from the stored offset
                dependency = transient_dependency(exc) or ""
                error = f"{type(exc).__name__}: {exc}"[:300]
                self._set("waiting" if dependency else "failed", error, dependency)
                log.warning("record_reader_interrupted", dependency=dependency or None, error=error)
                attempt += 1
                self._sleep(backoff_delay(attempt, cap=self.retry_cap))

    def _session(self) -> None:
        pg = db.connect(self.dsn)
        amqp_conn = None
        try:
            while not offsets.try_lock(pg):
                self._set("standby", "another archiver writes the record")
                self._sleep(LOCK_POLL_S)
                if self.stopping:
                    return
            done, start = offsets.start_at(pg, self.stream)
            pg.commit()
            self.written_to, self.seen_to, self.outstanding = done, None, 0
            amqp_conn = connect(self.amqp_uri, heartbeat=HEARTBEAT_S)
            ch = channel(amqp_conn)
            ch.basic_qos(0, 2 * self.batch_messages, False)
            arrived: list[Any] = []
            ch.basic_consume(self.stream, callback=arrived.append, arguments={"x-stream-offset": start})
            self._set("consuming")
            log.info("record_reader_attached", stream=self.stream, start=str(start))
            self._consume(pg, amqp_conn, ch, arrived)
        finally:
            close_quietly(amqp_conn)  # what was delivered and not written is delivered again
            pg.close()

    def _consume(self, pg: psycopg.Connection, amqp_conn: Any, ch: Any, arrived: list[Any]) -> None:
        batch: list[Taken] = []
        first_at = pinged = self.clock()
        gap_checked = False
        while not self.stopping:
            wait = 1.0 if not batch else first_at + self.batch_s - self.clock()
            if wait > 0:
                try:
                    amqp_conn.drain_events(timeout=wait)
                except socket.timeout:
                    pass
            amqp_conn.heartbeat_tick()
            self.beat()
            if arrived:
                if not batch:
                    first_at = self.clock()
                batch.extend(taken_of(m) for m in arrived)
                arrived.clear()
                self.seen_to, self.outstanding = batch[-1].offset, len(batch)
                if not gap_checked:
                    gap_checked = True
                    if self.written_to is not None and batch[0].offset > self.written_to + 1:
                        log.error(  # the stream's retention dropped what the archive never wrote
                            "record_gap",
                            stream=self.stream,
                            written_to=self.written_to,
                            first_available=batch[0].offset,
                        )
            if batch and (len(batch) >= self.batch_messages or self.clock() - first_at >= self.batch_s):
                written, refused = write_batch(pg, self.stream, self.written_to, batch, self.tz, self.refuse)
                ch.basic_ack(batch[-1].tag, multiple=True)  # credit for the next ones
                self.written_to = max(batch[-1].offset, self.written_to if self.written_to is not None else -1)
                count(written)
                for taken, reason in refused:
                    log.warning("record_unarchivable", offset=taken.offset, reason=reason[:300])
                batch = []
                self.outstanding = 0
                pinged = self.clock()
            elif not batch and self.clock() - pinged >= IDLE_PING_S:
                pg.execute("SELECT 1")  # PostgreSQL (and this session's lock) still there
                pg.commit()
                pinged = self.clock()


def catch_up(
    conn: psycopg.Connection,
    amqp_uri: str,
    tz: ZoneInfo,
    stream: str,
    refuse: Refuse,
    batch_messages: int = 500,
    idle_timeout: float = 2.0,
    progress: Callable[[Iterator[Any]], Iterator[Any]] = lambda it: it,
) -> int:
    """`gridbus rebuild`'s first step: write what the stream holds after the stored offset,
    as the archiver would (its lock, its batches, its offset), until the stream is idle.
    With an archiver holding the lock (running), it is the one catching up: wait until it
    has written what the stream held when this started. Returns the messages newly written."""
    from shared.amqpclient import connection, consume, stream_end

    with connection(amqp_uri) as amqp_conn:
        if not offsets.try_lock(conn):
            end = stream_end(amqp_conn, stream)
            while end is not None and (offsets.written_to(conn, stream) or -1) < end:
                conn.commit()
                time.sleep(LOCK_POLL_S)
            conn.commit()
            return 0
        try:
            done, start = offsets.start_at(conn, stream)
            conn.commit()
            new = 0
            batch: list[Taken] = []
            tail = consume(amqp_conn, stream, idle_timeout=idle_timeout, arguments={"x-stream-offset": start})
            for msg in progress(tail):
                batch.append(taken_of(msg))
                if len(batch) >= batch_messages:
                    written, _refused = write_batch(conn, stream, done, batch, tz, refuse)
                    new += sum(o.new for o in written)
                    done, batch = max(batch[-1].offset, done if done is not None else -1), []
            if batch:
                written, _refused = write_batch(conn, stream, done, batch, tz, refuse)
                new += sum(o.new for o in written)
            return new
        finally:
            offsets.unlock(conn)
