"""A street's `registered` count is raised by intake's registering script (not by sla
consuming every case_registered): once per new case, in the local month of its
registration; not for the same report again, not for a near-duplicate, not for a case
handled on site (sla counts those with their resolution)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis

from services.intake.cases import Registrar
from shared import redis_keys as keys
from shared.models import Mode721, OnSiteHandling
from tests.integration.test_duplicates import LAT, report

pytestmark = pytest.mark.integration

FIELD = "street|450305001|registered"
# 00:30 on 1 December in Guilin is still 30 November in UTC: the local month counts
AT = datetime(2026, 11, 30, 16, 30, tzinfo=timezone.utc)
ON_SITE = OnSiteHandling(note="当场修复", mode=Mode721.service)


def count(client: redis.Redis, period: str) -> int:
    return int(client.hget(keys.sla_indicators(period), FIELD) or 0)


def test_a_new_case_counts_once_in_its_local_month(redis_client: redis.Redis, registrar: Registrar) -> None:
    first = registrar.register(report("c-1"), now=AT)
    assert first.created and count(redis_client, "2026-12") == 1 and count(redis_client, "2026-11") == 0
    again = registrar.register(report("c-1"), now=AT + timedelta(seconds=5))  # the app sent it twice
    assert not again.created and count(redis_client, "2026-12") == 1
    near = registrar.register(report("c-2", LAT + 0.0001), now=AT + timedelta(minutes=1))  # ~11 m away
    assert near.duplicate_of == first.case_id and count(redis_client, "2026-12") == 1
    on_site = registrar.register(
        report("c-3", LAT + 0.01).model_copy(update={"handled_on_site": ON_SITE}), now=AT + timedelta(minutes=2)
    )
    assert on_site.created and count(redis_client, "2026-12") == 1  # sla counts it when it sees it resolved
    other = registrar.register(report("c-4", LAT + 0.02), now=AT + timedelta(minutes=3))
    assert other.created and other.duplicate_of is None and count(redis_client, "2026-12") == 2
