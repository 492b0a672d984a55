"""Period reports read the PostgreSQL archive too: a case that has left Redis still
counts in `gridbus report reporters` and the meeting agenda (real Redis, real PostgreSQL
in a database of this session's own)."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis

from services.archiver.writer import archive
from services.intake.reports.cases import cases_between
from services.intake.reports.reporters import figures
from services.intake.store import CaseStore
from shared.archive import ArchiveReader
from shared.models import CaseRecorded
from tests.integration.test_case_store import register

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Shanghai")


def test_reports_read_cases_only_the_archive_still_has(redis_client: redis.Redis, pg_dsn: str) -> None:
    store = CaseStore(redis_client, "450305", ArchiveReader(pg_dsn))
    hot_id, _ = register(store, "r-hot")
    cold_id, _ = register(store, "r-cold")
    hot, cold = store.get(hot_id), store.get(cold_id)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for case in (hot, cold):  # both archived, as the archiver does
            archive(
                conn,
                CaseRecorded(
                    case_id=case.case_id, correlation_id=case.correlation_id, version=case.version, case=case
                ).model_dump(mode="json"),
                TZ,
            )
    redis_client.delete(*redis_client.keys(f"*{cold_id}*"))  # evicted from Redis: the archive only

    start, end = cold.registered_at - timedelta(days=1), cold.registered_at + timedelta(days=1)
    found = list(cases_between(store, start, end))
    assert sorted(c.case_id for c in found) == sorted([hot_id, cold_id])  # each once
    without_archive = list(cases_between(CaseStore(redis_client, "450305"), start, end))
    assert [c.case_id for c in without_archive] == [hot_id]
    rows = figures(found)
    assert sum(r.accepted for r in rows) == 2


def test_an_unreachable_archive_leaves_the_hot_cases(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305", ArchiveReader("postgresql://nobody@127.0.0.1:1/none"))
    case_id, _ = register(store, "r-only-hot")
    case = store.get(case_id)
    found = list(cases_between(store, case.registered_at - timedelta(days=1), case.registered_at + timedelta(days=1)))
    assert [c.case_id for c in found] == [case_id]
