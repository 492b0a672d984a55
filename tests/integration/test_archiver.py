"""The archiver's writer on the real PostgreSQL: the same messages twice (or in another
order, or from several replicas at once) give the same rows."""

from __future__ import annotations

import base64
import json
import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import psycopg
import pytest

from services.archiver import db
from services.archiver.writer import Unarchivable, archive
from services.intake.store import record_of
from shared.models import (
    ApiKeyRecorded,
    Assignment,
    Case,
    CaseRegistered,
    CaseStatus,
    ClocksRecorded,
    Location,
    NotificationSent,
    Resolution,
    TimelineEntry,
    summary_of,
)

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
TABLES = db.TABLES


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every archive table, without the time it was archived."""
    out = {}
    for t in TABLES:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> "
                "'archived_at' ORDER BY ordinal_position",
                (t,),
            )
        ]
        order = ", ".join(str(i + 1) for i in range(len(cols)))  # every column: the roll-ups share their first two
        out[t] = conn.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY {order}").fetchall()
    return out


@pytest.fixture()
def conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with db.connect(pg_dsn) as c:
        for t in TABLES:
            c.execute(f"TRUNCATE {t} CASCADE")
        c.commit()
        yield c


def case_versions(case_id: str) -> list[Case]:
    """A case through registration, dispatch, acknowledgement and resolution: each version as stored."""
    base = Case(
        case_id=case_id,
        report_id=f"r-{case_id}",
        correlation_id=f"r-{case_id}",
        status=CaseStatus.registered,
        version=1,
        category="01037",
        severity="normal",
        description="路灯不亮",
        location=Location(lat=25.27, lon=110.32, grid="450305001001001"),
        grid="450305001001001",
        street="450305001",
        reporter_id="w-1",
        reporter_role="grid_officer",
        observed_at=T0,
        registered_at=T0,
        updated_at=T0,
        timeline=[TimelineEntry(at=T0, actor="intake", action="register", to_status=CaseStatus.registered)],
    )
    out = [base]
    steps = [
        ("dispatch", CaseStatus.dispatched),
        ("acknowledge", CaseStatus.acknowledged),
        ("resolve", CaseStatus.resolved),
    ]
    for i, (action, status) in enumerate(steps, start=1):
        c = out[-1].model_copy(deep=True)
        at = T0 + timedelta(minutes=10 * i)
        c.version, c.status, c.updated_at = c.version + 1, status, at
        if action == "dispatch":
            c.assignments.append(
                Assignment(
                    dept="lighting",
                    street="450305001",
                    level=5,
                    order_id=f"{case_id}/1/l",
                    dispatched_at=at,
                    handle_due=at + timedelta(hours=4),
                )
            )
        if action == "resolve":
            c.resolution = Resolution(mode="management", by="lighting", at=at, evidence_urls=["https://x/after.jpg"])
        c.timeline.append(
            TimelineEntry(
                at=at,
                actor="lighting",
                action=action,
                to_status=status,
                evidence_urls=["https://x/after.jpg"] if action == "resolve" else [],
            )
        )
        out.append(c)
    return out


def messages() -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    for n in range(3):
        cid = f"450305-20261127-00000{n}"
        versions = case_versions(cid)
        msgs += [record_of(v, f"r-{cid}" if v.version == 1 else None).model_dump(mode="json") for v in versions]
        msgs.append(
            CaseRegistered(case_id=cid, correlation_id="r", occurred_at=T0, case=summary_of(versions[0])).model_dump(
                mode="json"
            )
        )
        for k in range(2):
            msgs.append(
                ClocksRecorded(
                    case_id=cid,
                    correlation_id="r",
                    committed_at=1000.0 + k,
                    live=k == 0,
                    doc=base64.b64encode(f"doc{k}".encode()).decode(),
                    history=None,
                    ledger=[
                        {
                            "id": f"{cid}:b{k}",
                            "case_id": cid,
                            "dept": "lighting",
                            "street": "450305001",
                            "breached_at": 1000.0 + k,
                            "clock": "acknowledge",
                        }
                    ],
                    ledger_ended=[(f"{cid}:b0", 1500.0)] if k else [],
                    counts=[("2026-11", "dept", "lighting", "resolved", 1)],
                ).model_dump(mode="json")
            )
        msgs.append(
            {
                "kind": "dispatch_order",
                "message_id": f"order:{cid}",
                "case_id": cid,
                "order_id": f"{cid}/1/l",
                "dept": "lighting",
                "street": "450305001",
                "level": 5,
                "occurred_at": T0.isoformat(),
            }
        )
        msgs.append(
            NotificationSent(
                message_id=f"sent:{cid}",
                case_id=cid,
                correlation_id="r",
                delivery_id=f"d{n}",
                source_event="case_dispatched",
                channel="webhook",
                recipient="dept:lighting",
                outcome="delivered",
            ).model_dump(mode="json")
        )
    msgs.append(
        ApiKeyRecorded(
            message_id="apikey:k1:created",
            case_id="",
            correlation_id="k1",
            key_id="k1",
            role="ops",
            secret_sha256="ab" * 32,
            created_at=T0,
        ).model_dump(mode="json")
    )
    msgs.append(
        ApiKeyRecorded(
            message_id="apikey:k1:revoked",
            case_id="",
            correlation_id="k1",
            key_id="k1",
            role="ops",
            created_at=T0,
            revoked_at=T0 + timedelta(days=1),
        ).model_dump(mode="json")
    )
    return msgs


def test_same_messages_twice_and_in_any_order_give_the_same_rows(conn: psycopg.Connection) -> None:
    msgs = messages()
    outcomes = [archive(conn, m, TZ) for m in msgs]
    assert all(o.new for o in outcomes)
    first = snapshot(conn)
    assert [archive(conn, m, TZ).new for m in msgs] == [False] * len(msgs)  # a repeat writes nothing
    assert snapshot(conn) == first

    for t in TABLES:
        conn.execute(f"TRUNCATE {t} CASCADE")
    conn.commit()
    shuffled = msgs[:]
    random.Random(7).shuffle(shuffled)
    for m in shuffled:
        archive(conn, m, TZ)
    assert snapshot(conn) == first

    ((version, status, mode, doc),) = conn.execute(
        "SELECT version, status, resolution_mode, doc FROM cases WHERE case_id = '450305-20261127-000000'"
    )
    assert (version, status, mode) == (4, "resolved", "management")  # the newest version won, whatever the order
    assert Case.model_validate(doc).timeline[-1].evidence_urls == ["https://x/after.jpg"]
    assert conn.execute("SELECT idempotency_key FROM cases WHERE case_id = '450305-20261127-000000'").fetchone() == (
        "r-450305-20261127-000000",
    )
    assert conn.execute("SELECT count(*) FROM case_timeline").fetchone() == (12,)
    assert conn.execute("SELECT live, doc FROM clocks ORDER BY case_id LIMIT 1").fetchone() == (False, b"doc1")
    assert conn.execute("SELECT revoked_at IS NOT NULL, secret_sha256 FROM api_keys").fetchone() == (True, None)
    # the three registrations in their street's month (the increments are no longer one row each)
    assert conn.execute("SELECT count(*), sum(n) FROM indicator_months WHERE counter = 'registered'").fetchone() == (
        1,
        3,
    )


def test_several_archivers_at_once_give_the_same_rows(pg_dsn: str, conn: psycopg.Connection) -> None:
    msgs = messages()
    for m in msgs:
        archive(conn, m, TZ)
    expected = snapshot(conn)
    for t in TABLES:
        conn.execute(f"TRUNCATE {t} CASCADE")
    conn.commit()
    errors: list[BaseException] = []

    def replica(seed: int) -> None:
        mine = msgs[:]
        random.Random(seed).shuffle(mine)
        try:
            with db.connect(pg_dsn) as c:
                for m in mine:
                    archive(c, m, TZ)
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert snapshot(conn) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        {"event": "case_updated"},
        {"message_id": "x"},
        {"message_id": "x", "event": "case_updated", "case_id": "c"},
        {"message_id": "y", "kind": "dispatch_order", "case_id": "c"},
    ],
)
def test_what_can_never_be_archived_is_refused_and_leaves_nothing(conn: psycopg.Connection, body: Any) -> None:
    with pytest.raises(Unarchivable):
        archive(conn, body, TZ)
    assert conn.execute("SELECT count(*) FROM journal").fetchone() == (0,)


def test_clock_records_are_ordered_by_their_commit_sequence_not_the_wall_clock(conn: psycopg.Connection) -> None:
    """sla's replicas' clocks disagree: the commit with the highest sequence wins, and the
    history is the one of the highest commit that carried one — in every order, twice."""
    import itertools

    cid = "450305-20261127-000009"

    def rec(seq: int, at: float, history: bool) -> dict[str, Any]:
        return ClocksRecorded(
            message_id=f"clocks:{seq}",
            case_id=cid,
            correlation_id="r",
            committed_at=at,
            seq=seq,
            live=seq < 3,
            doc=base64.b64encode(f"doc{seq}".encode()).decode(),
            history=base64.b64encode(f"hist{seq}".encode()).decode() if history else None,
        ).model_dump(mode="json")

    msgs = [rec(1, 3000.0, True), rec(2, 2000.0, True), rec(3, 1000.0, False)]  # later commits, earlier clocks
    results = set()
    for order in itertools.permutations(msgs):
        conn.execute("TRUNCATE journal, clocks")
        conn.commit()
        for m in [*order, *order]:
            archive(conn, m, TZ)
        results.add(conn.execute("SELECT seq, live, doc, history FROM clocks").fetchone())
    assert results == {(3, False, b"doc3", b"hist2")}


def test_the_journal_keeps_each_fact_once_and_gives_the_message_back(conn: psycopg.Connection) -> None:
    from services.archiver.journal import expand
    from shared.models import CaseUpdated, parse_event

    upd = CaseUpdated(
        case_id="c1",
        correlation_id="r-c1",
        from_status=CaseStatus.acknowledged,
        to_status=CaseStatus.resolved,
        action="resolve",
        actor="lighting",
        dept="lighting",
        note="已更换灯泡",
        evidence_urls=["https://x/after.jpg"],
    )
    msgs = messages()
    key = next(m for m in msgs if m.get("event") == "apikey_recorded")
    for m in (upd.model_dump(mode="json"), key, *msgs):
        archive(conn, m, TZ)
    for original in (upd.model_dump(mode="json"), key):
        kind, cid, at, body = conn.execute(
            "SELECT kind, case_id, occurred_at, body FROM journal WHERE message_id = %s", (original["message_id"],)
        ).fetchone()
        assert "message_id" not in body and "schema_version" not in body
        assert parse_event(expand(kind, original["message_id"], cid, at, body)) == parse_event(original)
    # what another table holds is not copied into the journal
    for kind, body in conn.execute("SELECT kind, body FROM journal"):
        assert "ledger" not in body and "doc" not in body and "case" not in body, kind
        if kind in ("notification_sent", "dispatch_order"):
            assert body == {}
        if kind == "case_recorded":
            assert set(body) <= {"version", "idempotency_key"}


def test_a_batch_gives_the_rows_of_its_messages_one_by_one(conn: psycopg.Connection) -> None:
    """The stream reader's batches (one journal executemany, the rest pipelined): the same
    rows as `archive` one message at a time, with a message twice in one batch and a batch
    that repeats what an earlier one wrote."""
    from services.archiver.stream import Taken, write_batch

    msgs = messages()
    for m in msgs:
        archive(conn, m, TZ)
    expected = {t: rows for t, rows in snapshot(conn).items() if t != "stream_offsets"}
    for t in TABLES:
        conn.execute(f"TRUNCATE {t} CASCADE")
    conn.commit()
    shuffled = msgs[:]
    random.Random(3).shuffle(shuffled)
    bodies = [*shuffled[:10], shuffled[4], *shuffled[10:], *shuffled[:5]]  # twice in a batch, and across
    taken = [Taken(i, i + 1, json.dumps(b).encode()) for i, b in enumerate(bodies)]
    before = None
    new = 0
    for i in range(0, len(taken), 7):
        written, refused = write_batch(conn, "s", before, taken[i : i + 7], TZ, lambda t, r: None)
        assert not refused
        new += sum(o.new for o in written)
        before = taken[i : i + 7][-1].offset
    assert new == len(msgs)
    got = snapshot(conn)
    assert got.pop("stream_offsets")[0][:2] == ("s", len(bodies) - 1)
    assert got == expected
