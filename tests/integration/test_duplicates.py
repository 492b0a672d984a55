"""Near-duplicate detection on the real Redis (services/intake/duplicates.py): an open case
of the same category nearby within the window is found in its registration day's geo set;
cases of days before the window are not searched; the set kept before the day sets is
still searched (and emptied of what closed) until it is gone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis

from services.intake.cases import Registrar
from services.intake.duplicates import find_original
from shared import redis_keys as keys
from shared.models import Report

pytestmark = pytest.mark.integration

LAT, LON = 25.2800, 110.3120  # 辰山社区第一片区


def report(rid: str, lat: float = LAT, lon: float = LON) -> Report:
    return Report.model_validate(
        {
            "report_id": rid,
            "category": "01037",
            "severity": "normal",
            "description": "路灯不亮",
            "filing_condition": "连续3盏以上不亮",
            "location": {"lat": lat, "lon": lon, "address": "七星区穿山路12号"},
            "reporter": {"id": "g-1", "role": "grid_officer", "name": "网格员", "phone": "13900000007"},
            "observed_at": datetime.now(timezone.utc).isoformat(),
        }
    )


def test_an_open_case_nearby_is_found_in_its_days_set(redis_client: redis.Redis, registrar: Registrar) -> None:
    now = datetime.now(timezone.utc)
    first = registrar.register(report("d-1"), now=now - timedelta(hours=20))
    day = keys.open_cases_geo("01037", keys.geo_day((now - timedelta(hours=20)).timestamp()))
    assert redis_client.geopos(day, first.case_id)[0] is not None
    assert 0 < redis_client.ttl(day) <= keys.GEO_DAY_TTL_S
    second = registrar.register(report("d-2", LAT + 0.0001), now=now)  # ~11 m away
    assert second.duplicate_of == first.case_id and second.status.value == "duplicate"


def test_days_before_the_window_are_not_searched(redis_client: redis.Redis, registrar: Registrar) -> None:
    now = datetime.now(timezone.utc)
    old = registrar.register(report("o-1"), now=now - timedelta(days=3))  # still open, but out of the window
    assert find_original(redis_client, registrar.duplicates, "01037", LAT, LON, now) is None
    # its day's set is not even met, so nothing was removed from it either
    day = keys.open_cases_geo("01037", keys.geo_day((now - timedelta(days=3)).timestamp()))
    assert redis_client.geopos(day, old.case_id)[0] is not None


def test_the_set_kept_before_is_still_searched(redis_client: redis.Redis, registrar: Registrar) -> None:
    now = datetime.now(timezone.utc)
    first = registrar.register(report("l-1"), now=now - timedelta(hours=1))
    day = keys.open_cases_geo("01037", keys.geo_day((now - timedelta(hours=1)).timestamp()))
    legacy = keys.open_cases_geo("01037")
    redis_client.delete(day)
    redis_client.geoadd(legacy, (LON, LAT, first.case_id))  # as it was indexed before the day sets
    redis_client.geoadd(legacy, (LON, LAT + 0.00005, "450305-20200101-000001"))  # gone from Redis long ago
    assert find_original(redis_client, registrar.duplicates, "01037", LAT + 0.00005, LON, now) == first.case_id
    assert redis_client.zscore(legacy, "450305-20200101-000001") is None  # met and removed
