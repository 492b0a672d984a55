"""Reports from SQL equal sla's Redis figures on the same data: the same events drive
sla (real Redis) and, through the records sla publishes, the archive (real PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis

from services import reports
from services.archiver import db
from services.archiver.writer import archive
from shared import indicators, ledger
from shared import redis_keys as keys
from shared.indicators import counter_field, period_of
from shared.models import CaseRegistered, CaseStatus, CaseUpdated, Envelope, Mode721
from tests.integration.test_sla_store import SLA, T0, dispatched, make, run

pytestmark = pytest.mark.integration

CST = ZoneInfo("Asia/Shanghai")
TABLES = ("journal", "cases", "clocks", "ledger", "ledger_ended", "indicator_months", "ledger_rollup", "ledger_firsts")


def updated(
    case_id: str,
    frm: CaseStatus,
    to: CaseStatus,
    action: str,
    dept: str | None = "sanitation",
    mode: Mode721 | None = None,
    n: int = 1,
) -> CaseUpdated:
    return CaseUpdated(
        message_id=f"{case_id}:{action}:{n}",
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        from_status=frm,
        to_status=to,
        action=action,
        actor="t",
        dept=dept,
        mode=mode,
        order_id=f"{case_id}/1/{dept}" if dept else None,
    )


def scenario(redis_client: redis.Redis, tmp_path: Path) -> list[Envelope]:
    """Cases over two months through sla on real Redis: in time, late (breaches,
    escalations, resolved late, reworked) and left to breach. Returns every record."""
    (tmp_path / "sla.yaml").write_text(SLA, encoding="utf-8")
    sink: list[Envelope] = []
    d = make(redis_client, tmp_path / "sla.yaml", sink)
    records: list[Envelope] = []
    d.publish_many = lambda events: records.extend(events)  # every event and record sla publishes

    months = [T0, T0 + 5 * 86400]  # 2026-11-28 and 2026-12-03 (local)
    n = 0
    for base in months:
        for i in range(6):
            n += 1
            cid, at = f"R{n}", base + i * 60
            reg = CaseRegistered(
                message_id=f"reg:{cid}",
                case_id=cid,
                correlation_id=f"r-{cid}",
                occurred_at=datetime.fromtimestamp(at, CST),
                case=dispatched(cid, at).case,
            )
            # intake's registering script counts it (tests/integration/test_registration_counts.py)
            redis_client.hincrby(
                keys.sla_indicators(period_of(reg.occurred_at, CST)),
                counter_field("street", reg.case.street, "registered"),
            )
            records.append(reg)  # intake publishes it
            d.handle(dispatched(cid, at, dept="gas" if i % 2 else "sanitation"), now=at)
            dept = "gas" if i % 2 else "sanitation"
            if i % 3 == 0:  # acknowledged in time, resolved, closed
                d.handle(updated(cid, CaseStatus.dispatched, CaseStatus.acknowledged, "acknowledge", dept), now=at + 60)
                d.handle(
                    updated(
                        cid,
                        CaseStatus.acknowledged,
                        CaseStatus.resolved,
                        "resolve",
                        dept,
                        Mode721.service if i else Mode721.management,
                    ),
                    now=at + 600,
                )
                d.handle(updated(cid, CaseStatus.resolved, CaseStatus.closed, "verify_pass", None), now=at + 700)
            elif i % 3 == 1:  # late: breaches and escalations, then resolved by enforcement, reworked
                run(d, at, at + 3000, step=300)
                d.handle(
                    updated(cid, CaseStatus.dispatched, CaseStatus.acknowledged, "acknowledge", dept), now=at + 3100
                )
                d.handle(
                    updated(cid, CaseStatus.acknowledged, CaseStatus.resolved, "resolve", dept, Mode721.enforcement),
                    now=at + 3200,
                )
                d.handle(updated(cid, CaseStatus.resolved, CaseStatus.reopened, "verify_fail", None), now=at + 3300)
        run(d, base, base + 4 * 3600, step=600)  # the rest breach and escalate

    return records


def test_indicators_and_ledger_from_sql_equal_redis(redis_client: redis.Redis, tmp_path: Path, pg_dsn: str) -> None:
    records = scenario(redis_client, tmp_path)
    with db.connect(pg_dsn) as conn:
        for t in TABLES:
            conn.execute(f"TRUNCATE {t} CASCADE")
        conn.commit()
        tz = ZoneInfo("Asia/Shanghai")
        for e in records:
            archive(conn, e.model_dump(mode="json"), tz)
        for e in records[:10]:  # redelivered: counted once
            archive(conn, e.model_dump(mode="json"), tz)

        for month in ("2026-11", "2026-12"):
            from_redis = [i.as_dict() for i in indicators.load(redis_client, month)]
            from_sql = [i.as_dict() for i in reports.indicators(conn, month, month)]
            for a, b in zip(from_redis, from_sql, strict=True):
                diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
                assert not diff, (month, a["scope"], a["key"], diff)
            assert from_redis and from_sql == from_redis, month
            period = ledger.Period.month(month, tz)
            now = T0 + 30 * 86400
            red = ledger.entries(redis_client, period, now=now)
            sql = reports.ledger_entries(conn, period, now=now)
            key = lambda e: e["id"]  # noqa: E731
            assert red and sorted(sql, key=key) == sorted(red, key=key), month
            assert ledger.summary(sql) == ledger.summary(red)
            assert ledger.summary(reports.ledger_entries(conn, period, dept="gas", now=now)) == ledger.summary(
                ledger.entries(redis_client, period, dept="gas", now=now)
            )

        # a year is the sum of its months (Redis: add up the monthly hashes)
        year: dict[tuple[str, str], dict[str, int]] = {}
        for month in ("2026-11", "2026-12"):
            for i in indicators.load(redis_client, month):
                counts = year.setdefault((i.scope, i.key), {})
                for c, v in i.counts.items():
                    counts[c] = counts.get(c, 0) + v
        summed = [indicators.Indicators(s, k, c).as_dict() for (s, k), c in sorted(year.items())]
        assert [i.as_dict() for i in reports.indicators(conn, *reports.months("2026", "2026"))] == summed
        gas = next(i for i in reports.indicators(conn, "2026-01", "2026-12", scope="dept") if i.key == "gas")
        assert gas.c("breaches") > 0 and gas.on_time_rate is not None and gas.grade in "ABCDE"
        assert all("liaison_phone" not in reports.public(e) for e in sql)

    # the same from the command line, without phone numbers in the export
    import json

    from click.testing import CliRunner

    from services.archiver.commands import db_group
    from shared.config import reset_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("DATABASE_URL", pg_dsn)
    reset_settings()
    try:
        out = CliRunner().invoke(db_group, ["grades", "--from", "2026", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output) == summed
        out = CliRunner().invoke(db_group, ["accountability", "--from", "2026-11-01", "--to", "2026-11-30", "--json"])
        assert out.exit_code == 0, out.output
        body = json.loads(out.output)
        assert body["entries"] and "liaison_phone" not in out.output
        counts = ("dept", "breaches", "cases", "acknowledge", "handle", "escalation", "still_open", "referral")
        assert [{k: d[k] for k in counts} for d in body["departments"]] == [
            {k: d[k] for k in counts} for d in ledger.summary(red)["departments"]
        ]  # how late: measured now
    finally:
        mp.undo()
        reset_settings()


ROLLUPS = ("indicator_months", "ledger_rollup", "ledger_firsts")


def test_rollup_summary_equals_redis_after_shuffled_repeats_retention_and_rebuild(
    redis_client: redis.Redis, tmp_path: Path, pg_dsn: str
) -> None:
    """The accountability summary from the roll-ups (months, days, open entries one by
    one) equals shared/ledger.summary of sla's Redis entries — for a month, a run of days
    across two months, a year and one department — with the records archived in any
    order and twice, recomputed from the rows, after retention and after a rebuild."""
    import random

    from services.archiver import rollup
    from services.archiver.retention import evict
    from services.rebuild import restore

    records = scenario(redis_client, tmp_path)
    now = T0 + 30 * 86400
    periods = [
        ledger.Period.month("2026-11", CST),
        ledger.Period.month("2026-12", CST),
        ledger.Period.parse("2026-11-28", "2026-12-03", CST),
        ledger.Period.parse("2026-01-01", "2026-12-31", CST),
    ]

    def check(conn: psycopg.Connection) -> None:
        assert reports.rollup_state(conn) == CST.key
        for p in periods:
            assert reports._days(p, CST) is not None  # the roll-ups answer, not the entries
            for dept in (None, "gas"):
                red = ledger.summary(ledger.entries(redis_client, p, dept=dept, now=now))
                assert red["departments"] and reports.ledger_summary(conn, p, CST, dept=dept, now=now) == red, (p, dept)
        for month in ("2026-11", "2026-12"):  # the monthly roll-up of the counters, against sla's hashes
            from_redis = [i.as_dict() for i in indicators.load(redis_client, month)]
            assert from_redis and [i.as_dict() for i in reports.indicators(conn, month, month)] == from_redis

    def rows(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
        return {t: conn.execute(f"SELECT * FROM {t} AS r ORDER BY r").fetchall() for t in ROLLUPS}

    with db.connect(pg_dsn) as conn:
        for t in TABLES:
            conn.execute(f"TRUNCATE {t} CASCADE")
        conn.commit()
        bodies = [e.model_dump(mode="json") for e in records]
        shuffled = bodies + bodies[: len(bodies) // 3]
        random.Random(12).shuffle(shuffled)  # ends before their breaches, later commits first
        for b in shuffled:
            archive(conn, b, CST)
        check(conn)
        incremental = rows(conn)
        rollup.refresh(conn, CST)  # recomputed from the rows: the same roll-ups
        assert rows(conn) == incremental

        evict(conn, redis_client, 0, now=now + 90 * 86400)  # retention
        check(conn)

        from shared.config import get_settings

        mine = list(redis_client.scan_iter(f"{get_settings().redis_key_prefix}:*", count=1000))
        assert mine
        redis_client.delete(*mine)  # Redis lost everything
        assert ledger.entries(redis_client, periods[0], now=now) == []
        restore(conn, redis_client, 30, CST, now=now)
        check(conn)
