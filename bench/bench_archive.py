"""The archive at a district's year: bytes per case in Redis and PostgreSQL, and how fast
the reports over a month and a year answer from SQL with 365 k archived cases.

    python -m bench.bench_archive [--cases 365000] [--sample 200] [--keep]

1. A sample of cases goes through the real code: intake's Registrar and replies on the
   real Redis (under a throwaway key prefix), sla's Deadlines fed intake's events (some
   deadlines fire late: breaches, escalations, ledger), every event and record archived by
   the archiver's writer into a throwaway PostgreSQL database. Redis bytes per open case
   are measured here (MEMORY USAGE of every key of the prefix, divided by the cases).
2. The sample's rows are replicated in SQL, spread over the 365 days of 2026 with fresh
   ids, to `--cases` archived cases (the late quarter's breaches of copies older than
   30 days ended two hours after each breach; the roll-ups recomputed from the rows);
   then pg_total_relation_size per table, and each report timed before/after in the same
   run: the baseline is the query before the roll-ups (every indicator increment of the
   period summed — a table built for it, not part of the archive — and the ledger's
   entries summarised in Python), the new one services/reports.py on the roll-ups; the
   two answers are compared (`equal`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import psycopg
import redis
from psycopg.conninfo import make_conninfo

from services.archiver import db

TABLES = db.TABLES


def _one(conn: psycopg.Connection, query: str) -> tuple[Any, ...]:
    """The one row an aggregate query answers."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row


def _sample(r: redis.Redis, conn: psycopg.Connection, n: int) -> dict[str, float]:
    """n cases through the real code; returns Redis bytes per open case (by part)."""
    from services.archiver.writer import archive
    from services.intake.cases import Registrar, apply_event
    from services.intake.replies import Verification, apply_reply, apply_verification
    from services.intake.store import CaseStore
    from services.sla.deadlines import Deadlines
    from shared import redis_keys as keys
    from shared.catalog import load_catalog
    from shared.config import get_settings
    from shared.departments import load_departments
    from shared.grid import load_grid
    from shared.models import (
        Assignment,
        CaseDispatched,
        NotificationSent,
        Reply,
        Report,
        summary_of,
    )
    from shared.policies import load_policies
    from shared.worktime import load_calendar

    settings = get_settings()
    tz = ZoneInfo(settings.timezone)
    store = CaseStore(r, settings.district_code)
    registrar = Registrar(store, load_catalog(), load_grid(), settings.timezone)
    published: list[Any] = []
    sla = Deadlines(
        r, load_policies(), load_calendar(), published.append, grid=load_grid(), departments=load_departments()
    )
    sla.publish_many = published.extend
    cells = [("450305001001001", 25.2800, 110.3120), ("450305003002001", 25.2590, 110.3330)]
    ids: list[str] = []
    out: list[Any] = []

    def take(events: list[Any]) -> None:
        out.extend(events)
        for e in events:
            if e.event in ("case_registered", "case_dispatched", "case_updated"):
                sla.handle(e)

    for i in range(n):
        grid, lat, lon = cells[i % 2]
        report = Report.model_validate(
            {
                "report_id": f"bench-{uuid.uuid4().hex[:12]}",
                "category": "01037",
                "severity": "normal",
                "description": "穿山路连续三盏路灯不亮，夜间行人通行不便",
                "filing_condition": "连续3盏以上不亮",
                "location": {
                    "lat": lat + ((i // 2) % 20) * 0.0006,
                    "lon": lon + ((i // 40) % 20) * 0.0006,
                    "address": "七星区穿山路12号",
                    "grid": grid,
                },
                "media_urls": ["https://img.example/before-1.jpg", "https://img.example/before-2.jpg"],
                "reporter": {"id": f"g-{i % 50:04d}", "role": "grid_officer", "name": "网格员", "phone": "13900000007"},
                "observed_at": datetime.now(timezone.utc).isoformat(),
            }
        )
        reg = registrar.register(report)
        take(reg.events)
        case = store.get(reg.case_id)
        now = datetime.now(timezone.utc)
        a = Assignment(
            dept="lighting",
            street=case.street,
            level=5,
            route="lighting-by-street",
            sla_policy="default",
            order_id=f"{case.case_id}/1/lighting",
            dispatched_at=now,
            reason="01037 路灯 → lighting (street liaison)",
        )
        dispatched = CaseDispatched(
            case_id=case.case_id, correlation_id=case.correlation_id, case=summary_of(case), assignments=[a]
        )
        out.append(
            {
                "kind": "dispatch_order",
                "message_id": f"order:{a.order_id}",
                "case_id": case.case_id,
                "order_id": a.order_id,
                "dept": a.dept,
                "street": a.street,
                "level": a.level,
                "occurred_at": now.isoformat(),
            }
        )
        sla.handle(dispatched)
        out.append(dispatched)
        _, events, _ = apply_event(store, dispatched)
        take(events)
        ids.append(case.case_id)

    # Redis bytes of n open (dispatched) cases, the outbox aside (drained once published)
    prefix = settings.redis_key_prefix
    r.delete(keys.outbox(), keys.outbox_times(), keys.sla_outbox(), keys.sla_outbox_times())
    parts: dict[str, int] = {}
    for key in r.scan_iter(f"{prefix}:*", count=1000):
        part = key.decode().split(":")[1] if isinstance(key, bytes) else key.split(":")[1]
        parts[part] = parts.get(part, 0) + int(r.memory_usage(key, samples=0) or 0)
    per_case = {f"redis_{k}": v / n for k, v in sorted(parts.items())}
    per_case["redis_total"] = sum(parts.values()) / n

    for k, cid in enumerate(ids):  # then most are worked through; a quarter stay open and run late
        if k % 4 == 3:
            continue
        _, ev, _ = apply_reply(
            store, cid, "lighting", Reply(reply_id=f"a-{cid}", action="acknowledge", note="已派人赶往现场")
        )
        take(ev)
        _, ev, _ = apply_reply(
            store,
            cid,
            "lighting",
            Reply(
                reply_id=f"r-{cid}",
                action="resolve",
                mode=("service", "management", "enforcement")[k % 3],
                note="已更换灯泡，恢复照明",
                evidence_urls=["https://img.example/after.jpg"],
            ),
        )
        take(ev)
        _, ev, _ = apply_verification(
            store,
            cid,
            Verification(result="pass", note="核查通过", verifier="g-0007"),
            f"verify:{cid}",
            "grid_app:g-0007",
        )
        take(ev)
    for step in range(1, 25):  # the open quarter breaches and escalates over the next days
        sla.fire_due(now=time.time() + step * 4 * 3600)
    for e in out + published:
        body = e if isinstance(e, dict) else e.model_dump(mode="json")
        archive(conn, body, tz)
    for cid in ids:
        for ch in ("webhook", "wecom", "sms"):
            archive(
                conn,
                NotificationSent(
                    message_id=f"sent:{cid}:{ch}",
                    case_id=cid,
                    correlation_id=cid,
                    delivery_id=uuid.uuid4().hex,
                    source_event="case_dispatched",
                    channel=ch,
                    recipient="liaison:lighting:450305001",
                    outcome="delivered",
                ).model_dump(mode="json"),
                tz,
            )
    return per_case


def _replicate(conn: psycopg.Connection, sample: int, total: int) -> None:
    """Copies of the sample, spread over 2026: copy k lives on day k·365/copies, ids fresh
    (serials from 500001, apart from the sample's own, which go at the end)."""
    copies = max(1, total // sample)
    conn.execute(
        "CREATE TEMP TABLE k AS SELECT g AS k, (timestamptz '2026-01-01 00:00+08' + "
        "((g - 1) * 365.0 / %s) * interval '1 day') AS day FROM generate_series(1, %s) g",
        (copies, copies),
    )
    conn.execute("""CREATE TEMP TABLE idmap AS SELECT c.case_id AS old, k.k, k.day,
        extract(epoch FROM k.day - date_trunc('day', c.registered_at))::float8 AS shift,
        '450305-' || to_char(k.day AT TIME ZONE 'Asia/Shanghai', 'YYYYMMDD') || '-' ||
          lpad((500000 + row_number() OVER (PARTITION BY (k.day AT TIME ZONE 'Asia/Shanghai')::date
                                            ORDER BY k.k, c.case_id))::text, 6, '0') AS new
        FROM cases c CROSS JOIN k""")
    conn.execute("CREATE INDEX ON idmap (old, k)")
    s = "m.shift * interval '1 second'"
    steps = [
        f"""INSERT INTO cases SELECT m.new, version, report_id || ':' || m.k, idempotency_key || ':' || m.k, status,
            category, severity, grid, street, registered_at + {s}, updated_at + {s}, final, resolution_mode,
            resolved_at + {s}, duplicate_of, doc || jsonb_build_object('case_id', m.new), evicted_at
            FROM cases c JOIN idmap m ON m.old = c.case_id""",
        f"""INSERT INTO case_timeline SELECT m.new, seq, at + {s}, actor, action, from_status, to_status, note,
            evidence_urls, message_id FROM case_timeline t JOIN idmap m ON m.old = t.case_id""",
        f"""INSERT INTO case_assignments SELECT m.new, seq, order_id || ':' || m.k, dept, street, level, route,
            sla_policy, mode, dispatched_at + {s}, ack_due + {s}, handle_due + {s}, active, acknowledged_at + {s},
            resolved_at + {s}, rejected_reason FROM case_assignments t JOIN idmap m ON m.old = t.case_id""",
        f"""INSERT INTO journal SELECT message_id || ':' || m.k, kind, m.new, occurred_at + {s}, archived_at, body
            FROM journal j JOIN idmap m ON m.old = j.case_id""",
        f"""INSERT INTO orders SELECT message_id || ':' || m.k, order_id || ':' || m.k, m.new, dept, street, level,
            ack_due + {s}, handle_due + {s}, occurred_at + {s} FROM orders o JOIN idmap m ON m.old = o.case_id""",
        """INSERT INTO clocks SELECT m.new, committed_at + m.shift, live, doc, history
            FROM clocks c JOIN idmap m ON m.old = c.case_id""",
        """INSERT INTO ledger SELECT breach_id || ':' || m.k, m.new, dept, street, breached_at + m.shift,
            body || jsonb_build_object('id', breach_id || ':' || m.k, 'case_id', m.new,
                                       'due', (body->>'due')::float8 + m.shift,
                                       'breached_at', (body->>'breached_at')::float8 + m.shift)
            FROM ledger l JOIN idmap m ON m.old = l.case_id""",
        """INSERT INTO ledger_ended SELECT e.breach_id || ':' || m.k, e.done_at + m.shift
            FROM ledger_ended e JOIN ledger l USING (breach_id) JOIN idmap m ON m.old = l.case_id""",
        """INSERT INTO notifications SELECT delivery_id || ':' || m.k, m.new, event, channel, recipient, outcome,
            finished_at + m.shift * interval '1 second' FROM notifications n JOIN idmap m ON m.old = n.case_id""",
    ]
    originals = [r[0] for r in conn.execute("SELECT case_id FROM cases")]
    for sql in steps:
        conn.execute(sql)
    # the sample itself goes: what stays is `copies` spread copies
    for t in ("case_timeline", "case_assignments", "orders", "clocks", "notifications"):
        conn.execute(f"DELETE FROM {t} WHERE case_id = ANY(%s)", (originals,))
    conn.execute(
        "DELETE FROM ledger_ended WHERE breach_id IN (SELECT breach_id FROM ledger WHERE case_id = ANY(%s))",
        (originals,),
    )
    for t in ("ledger", "journal"):
        conn.execute(f"DELETE FROM {t} WHERE case_id = ANY(%s)", (originals,))
    conn.execute("DELETE FROM cases WHERE case_id = ANY(%s)", (originals,))
    conn.execute("TRUNCATE indicator_months")
    # The increments one row each, as the archive kept them before the roll-up (the
    # baseline's table, not part of the archive): sla's counts of each clocks record and
    # the street's registration, in the local month of the (shifted) message.
    conn.execute("""CREATE TABLE indicator_counts AS
        SELECT j.message_id, (c.i - 1)::int AS idx,
               to_char(j.occurred_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM') AS period,
               c.v->>1 AS scope, c.v->>2 AS key, c.v->>3 AS counter, (c.v->>4)::int AS n
        FROM journal j, jsonb_array_elements(j.body->'counts') WITH ORDINALITY c(v, i)
        WHERE j.kind = 'clocks_recorded'
        UNION ALL
        SELECT j.message_id, 0, to_char(j.occurred_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM'), 'street', cs.street,
               'registered', 1
        FROM journal j JOIN cases cs USING (case_id) WHERE j.kind = 'case_registered'""")
    conn.execute("CREATE INDEX indicator_counts_period ON indicator_counts (period)")
    conn.execute(
        "INSERT INTO indicator_months SELECT period, scope, key, counter, sum(n) FROM indicator_counts "
        "GROUP BY 1, 2, 3, 4"
    )
    # A year's late cases do not all stay open: the copies older than 30 days (before the
    # sample's day) had their breaches ended two hours after each breach.
    conn.execute("""INSERT INTO ledger_ended SELECT l.breach_id, l.breached_at + 7200 FROM ledger l
        WHERE l.breached_at < extract(epoch FROM now()) - 30 * 86400
        ON CONFLICT DO NOTHING""")
    from services.archiver import rollup

    rollup.refresh(conn, ZoneInfo("Asia/Shanghai"))
    conn.commit()
    conn.autocommit = True
    for t in (*TABLES, "indicator_counts"):
        # FULL for the ledger: refresh() rewrote every row of it (the writer never does)
        conn.execute(f"VACUUM ({'FULL, ' if t == 'ledger' else ''}ANALYZE) {t}")
    conn.autocommit = False


def _time(fn: Callable[[], Any], runs: int = 3) -> tuple[float, float, Any]:
    """Median wall ms, this process's median CPU ms (the SQL runs in the server's), and
    what the report answered."""
    took, cpu = [], []
    out = None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        took.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(took) * 1000, statistics.median(cpu) * 1000, out


def _comparable(value: Any) -> Any:
    """Reports as plain values (Indicators compare by their figures)."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=365_000)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = ap.parse_args()
    prefix = f"bencharch{uuid.uuid4().hex[:6]}"
    os.environ["REDIS_KEY_PREFIX"] = prefix
    from services import reports
    from shared import ledger
    from shared.config import get_settings, reset_settings
    from shared.indicators import Indicators
    from shared.logs import configure_logging

    reset_settings()
    settings = get_settings()
    configure_logging("console", "WARNING", service="bench")
    dsn = make_conninfo(settings.database_url, dbname=f"gridbus_bench_{uuid.uuid4().hex[:8]}")
    db.prepare(dsn)
    r = redis.Redis.from_url(settings.redis_url)
    try:
        with db.connect(dsn) as conn:
            t = time.perf_counter()
            redis_bytes = _sample(r, conn, args.sample)
            conn.commit()
            print(f"sample: {args.sample} cases through intake, sla and the writer in {time.perf_counter() - t:.1f} s")
            for k, v in redis_bytes.items():
                print(f"  {k:<24} {v:8.0f} bytes per open case")
            t = time.perf_counter()
            _replicate(conn, args.sample, args.cases)
            n = _one(conn, "SELECT count(*) FROM cases")[0]
            print(f"replicated to {n} cases over 2026 in {time.perf_counter() - t:.1f} s")
            total = 0
            for table in TABLES:
                size, rows = _one(conn, f"SELECT pg_total_relation_size('{table}'), count(*) FROM {table}")
                total += size
                print(f"  {table:<18} {rows:>10} rows {size / 2**20:9.1f} MiB {size / n:8.0f} bytes per case")
            print(f"  {'all':<18} {'':>10}      {total / 2**20:9.1f} MiB {total / n:8.0f} bytes per case")
            tz = ZoneInfo(settings.timezone)
            month = ledger.Period.month("2026-06", tz)
            year = ledger.Period(month.start - 151 * 86400, month.end + 184 * 86400)
            now = time.time()

            def old_indicators(first: str, last: str, scope: str | None = None) -> list[Any]:
                """The query before the roll-up: every increment of the period summed."""
                q = (
                    "SELECT scope, key, counter, sum(n)::bigint FROM indicator_counts WHERE period BETWEEN %s AND %s"
                    + (" AND scope = %s" if scope else "")
                    + " GROUP BY 1, 2, 3"
                )
                by: dict[tuple[str, str], dict[str, int]] = {}
                for sc, key, counter, v in conn.execute(q, (first, last, scope) if scope else (first, last)):
                    by.setdefault((sc, key), {})[counter] = int(v)
                return [Indicators(sc, key, counts) for (sc, key), counts in sorted(by.items())]

            def year_grades(fn: Callable[..., list[Any]]) -> list[Any]:
                return [(i.grade, i.shares(), i.on_time_rate) for i in fn(conn, "2026-01", "2026-12", scope="dept")]

            pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
                "indicators, a month (every dept and street)": (
                    lambda: old_indicators("2026-06", "2026-06"),
                    lambda: reports.indicators(conn, "2026-06", "2026-06"),
                ),
                "indicators, the year": (
                    lambda: old_indicators("2026-01", "2026-12"),
                    lambda: reports.indicators(conn, "2026-01", "2026-12"),
                ),
                "grades + 721 shares + on-time, the year, departments": (
                    lambda: year_grades(lambda _c, a, b, scope: old_indicators(a, b, scope)),
                    lambda: year_grades(reports.indicators),
                ),
                "accountability summary, a month": (
                    lambda: ledger.summary(reports.ledger_entries(conn, month, now=now)),
                    lambda: reports.ledger_summary(conn, month, tz, now=now),
                ),
                "accountability summary, the year": (
                    lambda: ledger.summary(reports.ledger_entries(conn, year, now=now)),
                    lambda: reports.ledger_summary(conn, year, tz, now=now),
                ),
                "one department's accountability, the year": (
                    lambda: ledger.summary(reports.ledger_entries(conn, year, dept="lighting", now=now)),
                    lambda: reports.ledger_summary(conn, year, tz, dept="lighting", now=now),
                ),
            }
            print(f"  load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
            print(f"  {'report':<54} {'before ms':>10} {'cpu':>6} {'after ms':>9} {'cpu':>6} {'ratio':>7} equal")
            for name, (before, after) in pairs.items():
                # the slowest baselines once (each takes minutes on a loaded machine)
                b_ms, b_cpu, b_out = _time(before, runs=1 if "year" in name and "accountability" in name else 3)
                a_ms, a_cpu, a_out = _time(after)
                same = _comparable(b_out) == _comparable(a_out)
                print(f"  {name:<54} {b_ms:10.1f} {b_cpu:6.1f} {a_ms:9.1f} {a_cpu:6.1f} {b_ms / a_ms:6.1f}x {same}")
            ind = {i.key: i for i in reports.indicators(conn, "2026-01", "2026-12", scope="dept")}
            if "lighting" in ind:
                i = ind["lighting"]
                print(
                    f"  lighting 2026: registered {i.c('registered')}, resolved {i.c('resolved')}, on time "
                    f"{reports_pct(i.on_time_rate)}, grade {i.grade}, 721 {i.shares()}"
                )
    finally:
        keys = list(r.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
        if not args.keep:
            db.drop_database(dsn)
        else:
            print(f"kept {dsn}")


def reports_pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


if __name__ == "__main__":
    main()
