"""Writing the complete record into PostgreSQL: `check` a message, then `write` it inside a
transaction (the stream reader's batch, services/archiver/stream.py, or `archive`'s own).

A message is first claimed in `journal` by its message id (INSERT … ON CONFLICT DO
NOTHING): a repeat finds its id there and changes nothing, so the same messages twice
give the same rows. The derived tables are then written in the same transaction:

- `case_recorded` → `cases` (only if its version is newer than the row's: records may
  arrive out of order, and several archivers may write the same case at once — the row
  lock of the upsert serialises them), its `case_timeline` and `case_assignments`;
- `clocks_recorded` → `clocks` (the commit with the highest sequence wins), `ledger`,
  `ledger_ended` and their roll-ups, the counter increments into `indicator_months`
  (services/archiver/rollup.py);
- `case_registered` → the street's `registered` count (sla counts it in Redis the same way);
- `dispatch_order` (gridbus.dispatch) → `orders`; `notification_sent` → `notifications`;
  `apikey_recorded` → `api_keys`; every other event lives in the journal only.

The stream reader moves its stored offset past a message only in the transaction that
wrote it (services/archiver/offsets.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from services.archiver import journal, rollup
from shared.indicators import period_of
from shared.lifecycle import FINAL_STATES
from shared.models import (
    ApiKeyRecorded,
    Case,
    CaseRecorded,
    CaseRegistered,
    ClocksRecorded,
    NotificationSent,
    parse_event,
)


class Unarchivable(ValueError):
    """The message can never be archived (no message id, not JSON, unknown shape)."""


@dataclass(frozen=True)
class Outcome:
    message_id: str
    kind: str
    occurred_at: datetime
    new: bool  # False: a repeat, nothing written


def _when(body: dict[str, Any]) -> datetime:
    raw = body.get("occurred_at")
    try:
        value = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    return value if value and value.tzinfo else datetime.now(timezone.utc)


@dataclass(frozen=True)
class Checked:
    """A message that can be written: its id, kind, time, body and parsed event (or the
    values of its dispatch order). Checking needs no database, so a batch learns what it
    must refuse before its transaction starts."""

    message_id: str
    kind: str
    occurred_at: datetime
    body: dict[str, Any]
    parsed: Any = None
    order: tuple[Any, ...] | None = None


def check(body: Any) -> Checked:
    """Raises Unarchivable for a message that can never be written."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise Unarchivable(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("message_id"), str) or not body["message_id"]:
        raise Unarchivable("no message_id")
    kind = body.get("event") or body.get("kind")
    if not isinstance(kind, str):
        raise Unarchivable("neither `event` nor `kind`")
    parsed: Any = None
    if "event" in body:
        try:
            parsed = parse_event(body)
        except ValueError as exc:
            raise Unarchivable(f"invalid {kind}: {exc}") from None
    message_id, when = body["message_id"], _when(body)
    order = _order_values(message_id, body, when) if parsed is None and kind == "dispatch_order" else None
    return Checked(message_id, kind, when, body, parsed, order)


def archive(conn: psycopg.Connection, body: Any, tz: ZoneInfo) -> Outcome:
    """Write one message of the record (its own transaction). Raises Unarchivable for a
    message that can never be written; database errors propagate (retry later)."""
    checked = check(body)
    with conn.transaction():
        return write(conn, checked, tz)


_CLAIM = (
    "INSERT INTO journal (message_id, kind, case_id, occurred_at, body) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING 1"
)


def _claim_row(msg: Checked) -> tuple[Any, ...]:
    body = msg.body
    return (
        msg.message_id,
        msg.kind,
        body.get("case_id") or None,
        msg.occurred_at,
        Jsonb(journal.compact(msg.kind, body, msg.parsed)),
    )


def write(conn: psycopg.Connection, msg: Checked, tz: ZoneInfo) -> Outcome:
    """Write a checked message inside the caller's transaction (`archive`'s, or a batch's
    savepoint when the database refused the batch)."""
    if conn.execute(_CLAIM, _claim_row(msg)).fetchone() is None:
        return Outcome(msg.message_id, msg.kind, msg.occurred_at, False)
    _derived(conn, msg, tz)
    return Outcome(msg.message_id, msg.kind, msg.occurred_at, True)


def write_many(conn: psycopg.Connection, msgs: Sequence[Checked], tz: ZoneInfo) -> list[Outcome]:
    """Write checked messages inside the caller's transaction, as `write` does one by one,
    in fewer round trips: the journal claims of the whole batch in one pipelined
    executemany (the same id twice in a batch: the second finds the first's row), then
    the derived rows of the new ones in pipeline mode (psycopg sends without waiting for
    each statement's answer; only a case's version check waits)."""
    if not msgs:
        return []
    claimed: list[bool] = []
    with conn.cursor() as cur:
        cur.executemany(_CLAIM, [_claim_row(m) for m in msgs], returning=True)
        while True:
            claimed.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
    with conn.pipeline():
        for msg, new in zip(msgs, claimed, strict=True):
            if new:
                _derived(conn, msg, tz)
    return [Outcome(m.message_id, m.kind, m.occurred_at, new) for m, new in zip(msgs, claimed, strict=True)]


def _derived(conn: psycopg.Connection, msg: Checked, tz: ZoneInfo) -> None:
    """The rows besides the journal's of a message just claimed."""
    parsed = msg.parsed
    if isinstance(parsed, CaseRecorded):
        _case(conn, parsed)
    elif isinstance(parsed, ClocksRecorded):
        _clocks(conn, parsed, tz)
    elif isinstance(parsed, CaseRegistered):
        period = period_of(parsed.occurred_at, tz)
        rollup.add_counts(conn, [(period, "street", parsed.case.street, "registered", 1)])
    elif isinstance(parsed, NotificationSent):
        conn.execute(
            "INSERT INTO notifications (delivery_id, case_id, event, channel, recipient, outcome, finished_at, "
            "subject, detail, attempt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                parsed.delivery_id,
                parsed.case_id,
                parsed.source_event,
                parsed.channel,
                parsed.recipient,
                parsed.outcome,
                parsed.occurred_at,
                parsed.subject,
                parsed.detail,
                parsed.attempt,
            ),
        )
    elif isinstance(parsed, ApiKeyRecorded):
        _api_key(conn, parsed)
    elif msg.order is not None:
        conn.execute("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", msg.order)


def _case(conn: psycopg.Connection, rec: CaseRecorded) -> None:
    c: Case = rec.case
    res = c.resolution
    won = conn.execute(
        """INSERT INTO cases (case_id, version, report_id, idempotency_key, status, category, severity, grid,
                              street, registered_at, updated_at, final, resolution_mode, resolved_at,
                              duplicate_of, doc)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (case_id) DO UPDATE SET
             version = EXCLUDED.version, status = EXCLUDED.status, grid = EXCLUDED.grid,
             street = EXCLUDED.street, updated_at = EXCLUDED.updated_at, final = EXCLUDED.final,
             resolution_mode = EXCLUDED.resolution_mode, resolved_at = EXCLUDED.resolved_at,
             duplicate_of = EXCLUDED.duplicate_of, doc = EXCLUDED.doc,
             idempotency_key = COALESCE(cases.idempotency_key, EXCLUDED.idempotency_key)
           WHERE EXCLUDED.version > cases.version
           RETURNING 1""",
        (
            c.case_id,
            c.version,
            c.report_id,
            rec.idempotency_key,
            c.status.value,
            c.category,
            c.severity.value,
            c.grid,
            c.street,
            c.registered_at,
            c.updated_at,
            c.status in FINAL_STATES,
            res.mode.value if res else None,
            res.at if res else None,
            c.duplicate_of,
            Jsonb(c.model_dump(mode="json")),
        ),
    ).fetchone()
    if won is None:
        if rec.idempotency_key:  # an older record (registration) arriving late still names the key
            conn.execute(
                "UPDATE cases SET idempotency_key = %s WHERE case_id = %s AND idempotency_key IS NULL",
                (rec.idempotency_key, c.case_id),
            )
        return
    conn.execute("DELETE FROM case_timeline WHERE case_id = %s", (c.case_id,))
    conn.execute("DELETE FROM case_assignments WHERE case_id = %s", (c.case_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO case_timeline VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    c.case_id,
                    i,
                    t.at,
                    t.actor,
                    t.action,
                    t.from_status.value if t.from_status else None,
                    t.to_status.value if t.to_status else None,
                    t.note,
                    Jsonb(t.evidence_urls),
                    t.message_id,
                )
                for i, t in enumerate(c.timeline)
            ],
        )
        cur.executemany(
            "INSERT INTO case_assignments VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    c.case_id,
                    i,
                    a.order_id,
                    a.dept,
                    a.street,
                    a.level,
                    a.route,
                    a.sla_policy,
                    a.mode.value,
                    a.dispatched_at,
                    a.ack_due,
                    a.handle_due,
                    a.active,
                    a.acknowledged_at,
                    a.resolved_at,
                    a.rejected_reason,
                )
                for i, a in enumerate(c.assignments)
            ],
        )


_DOC_COLUMNS = ("committed_at", "live", "doc", "seq")
_HISTORY_COLUMNS = ("history", "history_seq", "history_at")


def _clocks(conn: psycopg.Connection, rec: ClocksRecorded, tz: ZoneInfo) -> None:
    doc = base64.b64decode(rec.doc)
    hist = base64.b64decode(rec.history) if rec.history is not None else None
    # the commit's own sequence orders the records (then, for records without one, the
    # wall clock): replays and late arrivals leave the newest commit's document
    newer = "(EXCLUDED.seq, EXCLUDED.committed_at) > (clocks.seq, clocks.committed_at)"
    newer_history = (
        "EXCLUDED.history IS NOT NULL AND (clocks.history IS NULL OR "
        "(EXCLUDED.history_seq, EXCLUDED.history_at) > (clocks.history_seq, clocks.history_at))"
    )
    sets = [f"{col} = CASE WHEN {newer} THEN EXCLUDED.{col} ELSE clocks.{col} END" for col in _DOC_COLUMNS]
    sets += [f"{col} = CASE WHEN {newer_history} THEN EXCLUDED.{col} ELSE clocks.{col} END" for col in _HISTORY_COLUMNS]
    conn.execute(
        "INSERT INTO clocks (case_id, committed_at, live, doc, history, seq, history_seq, history_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (case_id) DO UPDATE SET " + ", ".join(sets),
        (
            rec.case_id,
            rec.committed_at,
            rec.live,
            doc,
            hist,
            rec.seq,
            *((rec.seq, rec.committed_at) if hist else (0, 0.0)),
        ),
    )
    rollup.ledger(conn, rec.case_id, rec.ledger, [(lid, at) for lid, at in rec.ledger_ended], tz)
    rollup.add_counts(conn, rec.counts)


def _api_key(conn: psycopg.Connection, rec: ApiKeyRecorded) -> None:
    conn.execute(
        """INSERT INTO api_keys (key_id, role, dept, name, secret_sha256, created_at, revoked_at, street)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (key_id) DO UPDATE SET
             street = COALESCE(api_keys.street, EXCLUDED.street),
             revoked_at = COALESCE(api_keys.revoked_at, EXCLUDED.revoked_at),
             secret_sha256 = CASE WHEN COALESCE(api_keys.revoked_at, EXCLUDED.revoked_at) IS NULL
                                  THEN COALESCE(api_keys.secret_sha256, EXCLUDED.secret_sha256) END""",
        (
            rec.key_id,
            rec.role,
            rec.dept,
            rec.name,
            None if rec.revoked_at else rec.secret_sha256,
            rec.created_at,
            rec.revoked_at,
            rec.street,
        ),
    )


def _order_values(message_id: str, body: dict[str, Any], when: datetime) -> tuple[Any, ...]:
    try:
        return (
            message_id,
            str(body["order_id"]),
            str(body["case_id"]),
            str(body["dept"]),
            str(body["street"]),
            int(body["level"]),
            body.get("ack_due"),
            body.get("handle_due"),
            when,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise Unarchivable(f"dispatch order without {exc}") from None
