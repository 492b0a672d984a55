"""`gridbus rebuild`: Redis restored from the archive after it lost everything.

Steps (each idempotent: run it twice, or on a Redis that kept part of its data, and
nothing newer is overwritten):

1. **Catch up**: the tail of the `gridbus.audit` stream that the archive has not seen yet
   (after the stream offset the archive stored with its rows) is archived first, through
   the same batches as the archiver — so what was published but not yet written is not
   missed. With an archiver running (it holds the writer's lock) it waits for that one.
2. **Cases**: every open case, and every finished one updated within CASE_HOT_DAYS, gets
   its document back (only where Redis has no newer version), with the open-case set and
   the duplicate geo index; every archived case keeps its place in the listing index and
   its idempotency key (a repeated report still finds its case, also once evicted).
3. **Case numbers**: each day's counter is raised to the highest serial archived for that
   day, so no case id is ever handed out twice.
4. **SLA**: every clock document (running and paused clocks as timer sources, finished
   ones for `gridbus sla explain`) with its history, the accountability ledger, the
   indicator counters and the count-once markers; then the timers are armed from the
   documents (as sla does at start). A deadline that passed meanwhile fires at once,
   once, and its escalation says how late it fired.
5. **Notifier**: the done-markers of finished deliveries (so nothing is sent again) and
   each case's notification log (the console's case page);
6. **API keys** (hashes only), a station key's street, and when each was last used (as of
   the archiver's last copy, at most a minute old: services/archiver/keyuse.py);
7. **Bridge**: what the city platform knows a case as (its task's system and id, the
   grid), for the city's cases and every open one.

Not restored, on purpose: console log-in sessions (12-hour shift records; the console
asks to log in again), reconciler leases (they expire in seconds) and its repair
counts (a lost count only allows a case a few more repair attempts). Not in the archive
at all: the notifier's in-flight state (send leases, messages held for a digest).

What Redis held but never reached the broker (its last second of writes on a crash with
`appendfsync everysec`) cannot be restored by anything; see README.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import redis

from services.bridge.forward import KEEP_S as BRIDGE_KEEP_S
from services.intake.store import CASE_SEQUENCE_TTL_S
from services.notifier.deliveries import SENT_TTL_S
from services.sla.store import KEEP_CLOSED_S, live_hash
from shared import redis_keys as keys
from shared.indicators import counter_field
from shared.lifecycle import FINAL_STATES, OPEN_STATES
from shared.models import CaseStatus
from shared.scripts import Lua
from shared.topology import Q_AUDIT

BATCH = 500

_PUT_CASE = Lua("services", "put_case")
_RAISE = Lua("services", "raise_counter")


Progress = Callable[[Iterable[Any], str, int | None], Iterable[Any]]


def _plain(items: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
    return items


@dataclass
class RebuildReport:
    tail: int = 0
    cases: int = 0
    documents: int = 0
    open: int = 0
    geo: int = 0
    counters: int = 0
    clocks: int = 0
    live_clocks: int = 0
    ledger: int = 0
    indicators: int = 0
    notifications: int = 0
    api_keys: int = 0
    bridge: int = 0
    timers: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{name}: {value}" for name, value in vars(self).items() if name != "notes"] + self.notes


def catch_up(conn: psycopg.Connection, amqp_uri: str, tz: ZoneInfo, progress: Progress = _plain) -> int:
    """Archive what the stream holds after the offset the archive stored, as the archiver
    does (services/archiver/stream.py `catch_up`); what cannot be archived is dead-lettered."""
    from services.archiver import stream
    from shared.bus import Bus

    def each(items: Iterator[Any]) -> Iterator[Any]:
        return iter(progress(items, "stream tail", None))

    bus = Bus(amqp_uri, service="rebuild")
    return stream.catch_up(conn, amqp_uri, tz, Q_AUDIT, stream.refuser(bus), progress=each)


def _rows(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=f"rebuild_{abs(hash(query))}") as cur:  # server side: a year does not fit in RAM
        cur.itersize = 2000
        cur.execute(query, params)
        yield from cur


def _count(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(f"SELECT count(*) FROM ({query}) q", params).fetchone()
    assert row is not None  # count(*) always answers one row
    return int(row[0])


def restore(
    conn: psycopg.Connection,
    client: redis.Redis,
    hot_days: int,
    tz: ZoneInfo,
    progress: Progress = _plain,
    now: float | None = None,
) -> RebuildReport:
    """Steps 2–6 (the caller arms the timers afterwards: `arm_timers`)."""
    now = time.time() if now is None else now
    report = RebuildReport()
    put_case = _PUT_CASE.on(client)
    raise_counter = _RAISE.on(client)
    hot_since = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=hot_days)

    # -- cases
    q = (
        "SELECT case_id, version, report_id, idempotency_key, status, category, registered_at, updated_at, "
        "duplicate_of, doc::text, (doc->'location'->>'lat')::float, (doc->'location'->>'lon')::float, "
        "grid, doc->'source' FROM cases ORDER BY registered_at, case_id"
    )
    pipe = client.pipeline(transaction=False)
    for (
        case_id,
        version,
        report_id,
        idem,
        status,
        category,
        registered_at,
        updated_at,
        duplicate_of,
        doc,
        lat,
        lon,
        grid,
        source,
    ) in progress(_rows(conn, q), "cases", _count(conn, "SELECT 1 FROM cases")):
        report.cases += 1
        st = CaseStatus(status)
        pipe.zadd(keys.cases_by_time(), {case_id: registered_at.timestamp()})
        pipe.set(keys.report_index(idem or report_id), case_id, nx=True)
        if st not in FINAL_STATES or updated_at >= hot_since:
            put_case(keys=[keys.case(case_id)], args=[doc, version], client=pipe)
            report.documents += 1
        if st not in FINAL_STATES:
            pipe.zadd(keys.open_cases(), {case_id: registered_at.timestamp()})
            report.open += 1
        if st in OPEN_STATES and duplicate_of is None:
            geo = keys.open_cases_geo(category, keys.geo_day(registered_at.timestamp()))
            pipe.geoadd(geo, (lon, lat, case_id))
            pipe.expire(geo, keys.GEO_DAY_TTL_S)
            report.geo += 1
        if source or st not in FINAL_STATES:  # what the bridge knows a case as (services/bridge/forward.py)
            known = keys.bridge_external(case_id)
            pipe.hsetnx(known, "grid", grid)
            if source:
                pipe.hsetnx(known, "system", source["system"])
                pipe.hsetnx(known, "external_id", source["external_id"])
            pipe.expire(known, BRIDGE_KEEP_S - int(now - registered_at.timestamp()))
            report.bridge += 1
        if len(pipe) >= BATCH:
            pipe.execute()
    pipe.execute()
    conn.execute(
        "UPDATE cases SET evicted_at = NULL WHERE final AND updated_at >= %s AND evicted_at IS NOT NULL", (hot_since,)
    )  # their documents are back in Redis

    # -- case numbers: `<district>-<yyyymmdd>-<serial>`, counters of the last days only (they expire)
    first_day = (datetime.fromtimestamp(now, tz) - timedelta(seconds=CASE_SEQUENCE_TTL_S)).strftime("%Y%m%d")
    for district, day, serial in conn.execute(
        "SELECT split_part(case_id, '-', 1), split_part(case_id, '-', 2), "
        "max(split_part(case_id, '-', 3)::int) FROM cases WHERE split_part(case_id, '-', 2) >= %s "
        "GROUP BY 1, 2",
        (first_day,),
    ):
        raise_counter(keys=[keys.case_sequence(district, day)], args=[serial, CASE_SEQUENCE_TTL_S])
        report.counters += 1

    # -- sla: clock documents and histories
    keep_since = now - KEEP_CLOSED_S
    pipe = client.pipeline(transaction=False)
    q = "SELECT case_id, live, doc, history, committed_at FROM clocks WHERE live OR committed_at >= %s"
    for case_id, live, doc, history, _at in progress(
        _rows(conn, q, (keep_since,)), "clocks", _count(conn, q, (keep_since,))
    ):
        report.clocks += 1
        if live:
            pipe.hsetnx(live_hash(case_id), case_id, bytes(doc))
            report.live_clocks += 1
        else:
            pipe.set(keys.sla_case(case_id), bytes(doc), nx=True, ex=KEEP_CLOSED_S)
        if history is not None:
            pipe.set(keys.sla_history(case_id), bytes(history), nx=True)
        if len(pipe) >= BATCH:
            pipe.execute()
    pipe.execute()

    # -- the accountability ledger and the indicator counters
    pipe = client.pipeline(transaction=False)
    for breach_id, body, breached_at, done in progress(
        _rows(
            conn,
            "SELECT l.breach_id, l.body::text, l.breached_at, e.done_at FROM ledger l "
            "LEFT JOIN ledger_ended e USING (breach_id)",
        ),
        "ledger",
        None,
    ):
        pipe.hsetnx(keys.sla_ledger(), breach_id, body)
        pipe.zadd(keys.sla_ledger_by_time(), {breach_id: breached_at})
        if done is not None:
            pipe.hsetnx(keys.sla_ledger_ended(), breach_id, repr(float(done)))
        report.ledger += 1
        if len(pipe) >= BATCH:
            pipe.execute()
    for period, scope, key, counter, n in conn.execute("SELECT period, scope, key, counter, n FROM indicator_months"):
        pipe.hset(keys.sla_indicators(period), counter_field(scope, key, counter), int(n))
        report.indicators += 1
    pipe.execute()

    # -- notifier done-markers (what was finished stays finished: no storm of re-sent messages)
    # and each case's notification log (the console's case page), which lives as long as
    # the marker of its case's last delivery
    pipe = client.pipeline(transaction=False)
    sent_since = datetime.fromtimestamp(now - SENT_TTL_S, timezone.utc)
    last_of: dict[str, int] = {}
    for delivery_id, case_id, event, channel, recipient, outcome, finished_at, subject, detail, attempt in progress(
        _rows(
            conn,
            "SELECT delivery_id, case_id, event, channel, recipient, outcome, finished_at, subject, detail, attempt "
            "FROM notifications WHERE finished_at >= %s",
            (sent_since,),
        ),
        "notifications",
        None,
    ):
        at = int(finished_at.timestamp())
        left = int(SENT_TTL_S - (now - at))
        if left > 0:
            pipe.set(keys.delivery_sent(delivery_id), f"{outcome}:{at}", nx=True, ex=left)
            report.notifications += 1
            if case_id:
                entry = {
                    "event": event,
                    "recipient": recipient,
                    "channel": channel,
                    "subject": subject,
                    "outcome": outcome,
                    "detail": detail,
                    "attempt": attempt,
                    "at": at,
                }
                pipe.hsetnx(keys.notify_case_log(case_id), delivery_id, json.dumps(entry, ensure_ascii=False))
                last_of[case_id] = max(last_of.get(case_id, 0), at)
        if len(pipe) >= BATCH:
            pipe.execute()
    for case_id, at in last_of.items():
        pipe.expire(keys.notify_case_log(case_id), max(1, int(SENT_TTL_S - (now - at))))
        if len(pipe) >= BATCH:
            pipe.execute()
    pipe.execute()

    # -- API keys (the hash of the secret; revoked keys stay revoked; a station's street;
    # when last used, as of the archiver's last copy: services/archiver/keyuse.py)
    def iso(at: datetime) -> str:
        return at.astimezone(timezone.utc).isoformat()  # as intake writes them (services/intake/auth.py)

    for key_id, role, dept, name, sha, created_at, revoked_at, street, last_used_at in conn.execute(
        "SELECT key_id, role, dept, name, secret_sha256, created_at, revoked_at, street, last_used_at FROM api_keys"
    ):
        if client.exists(keys.api_key(key_id)):
            continue
        fields: dict[Any, Any] = {
            "role": role,
            "dept": dept or "",
            "name": name,
            "created_at": iso(created_at),
            "street": street or "",
        }
        if last_used_at is not None:
            fields["last_used_at"] = iso(last_used_at)
        if revoked_at is not None:
            fields["revoked_at"] = iso(revoked_at)
        elif sha:
            fields["secret_sha256"] = sha
        client.hset(keys.api_key(key_id), mapping=fields)
        client.sadd(keys.api_keys(), key_id)
        report.api_keys += 1
    return report
