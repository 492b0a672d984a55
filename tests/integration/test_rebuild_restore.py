"""`restore` (gridbus rebuild) on the real PostgreSQL and Redis: what the e2e test cannot
see without a bridge or a station's own traffic — the bridge's city identity of a case,
a station key's street, a key's last use — comes back from the archive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import redis

from services.archiver import db, keyuse
from services.archiver.writer import archive
from services.intake.auth import Role, authenticate_key, create_key
from services.intake.store import record_of
from services.rebuild import restore
from shared import redis_keys as keys
from shared.config import get_settings
from shared.models import CaseStatus, ExternalSource
from tests.integration.test_archiver import case_versions

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")


def test_bridge_identity_station_street_and_key_use_come_back(redis_client: redis.Redis, pg_dsn: str) -> None:
    city, closed = case_versions("450305-20261127-000001"), case_versions("450305-20261127-000002")
    local = case_versions("450305-20261127-000003")
    for v in city:
        v.source = ExternalSource(system="12345", external_id="T-0001")
    last = closed[-1].model_copy(deep=True)
    last.version, last.status = last.version + 1, CaseStatus.closed
    closed.append(last)
    station, _ = create_key(redis_client, Role.station, name="穿山街道", street="450305003")
    authenticate_key(station, redis_client)  # used once: last_used_at in Redis
    key_id = station[4:16]
    record = redis_client.hgetall(keys.api_key(key_id))
    outbox = {m: b for m, b in redis_client.hgetall(keys.outbox()).items() if m.startswith("apikey:")}
    assert outbox  # intake's record of the key, as its relay would publish it

    with db.connect(pg_dsn) as conn:
        for t in ("journal", "cases", "api_keys"):
            conn.execute(f"TRUNCATE {t} CASCADE")
        conn.commit()
        for versions in (city, closed, local):
            for v in versions:
                archive(conn, record_of(v, None).model_dump(mode="json"), TZ)
        for body in outbox.values():
            archive(conn, body, TZ)
        assert keyuse.sync(conn, redis_client) == 1  # the archiver's copy of the last use
        assert keyuse.sync(conn, redis_client) == 0  # nothing newer

        prefix = get_settings().redis_key_prefix
        redis_client.delete(*redis_client.scan_iter(f"{prefix}:*", count=1000))  # Redis lost everything
        now = (datetime(2026, 11, 28, tzinfo=timezone.utc) + timedelta(days=1)).timestamp()
        report = restore(conn, redis_client, 30, TZ, now=now)
        for t in ("journal", "cases", "api_keys"):  # the session's database is shared by the tests after
            conn.execute(f"TRUNCATE {t} CASCADE")
        conn.commit()

    assert report.bridge == 2  # the city's case and the open one; not the closed local case
    assert redis_client.hgetall(keys.bridge_external(city[0].case_id)) == {
        "grid": city[0].grid,
        "system": "12345",
        "external_id": "T-0001",
    }
    assert redis_client.hgetall(keys.bridge_external(local[0].case_id)) == {"grid": local[0].grid}
    assert not redis_client.exists(keys.bridge_external(closed[0].case_id))
    assert 0 < redis_client.ttl(keys.bridge_external(city[0].case_id))
    assert redis_client.hgetall(keys.api_key(key_id)) == record  # street, last use, hash: as they were
    assert authenticate_key(station, redis_client).street == "450305003"  # still bound to its street
