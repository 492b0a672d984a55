"""GET /v1/reports/meeting on the running intake: the fixture month's agenda for ops and
the street's own station, in JSON, Markdown and CSV; another street's station is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from services.intake.auth import Role, create_key
from services.intake.store import CaseStore
from tests.e2e.test_lifecycle import bearer
from tests.meeting_month import HOT_CATEGORY, HOT_PATCH, STREET, build_month, remove_month

pytestmark = pytest.mark.e2e


def test_meeting_agenda_over_http(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    store = CaseStore(stack_redis, "450305")
    planted = build_month(store)
    try:
        ops, _ = create_key(stack_redis, Role.ops)
        station = create_key(stack_redis, Role.station, street=STREET)[0]
        other = create_key(stack_redis, Role.station, street="450305003")[0]
        url = f"{stack['base']}/v1/reports/meeting"
        period = {"from": "2026-11-01", "to": "2026-11-30"}
        r = httpx.get(url, params={"street": STREET, **period}, headers=bearer(ops), timeout=10)
        assert r.status_code == 200, r.text
        top = r.json()["hot_spots"][0]
        assert (top["grid"], top["category"], top["cases"]) == (HOT_PATCH, HOT_CATEGORY, planted.hot_spot)
        md = httpx.get(url, params={**period, "format": "markdown"}, headers=bearer(station), timeout=10)
        assert md.status_code == 200 and md.headers["Content-Type"].startswith("text/markdown")
        assert "暴露垃圾 (06010) | 5 | 2 |" in md.text  # a station's own street by default
        csv = httpx.get(url, params={"street": STREET, **period, "format": "csv"}, headers=bearer(ops), timeout=10)
        assert csv.text.splitlines()[1].startswith(f"hot_spot,{HOT_PATCH}/{HOT_CATEGORY}")
        r = httpx.get(url, params={"street": STREET, **period}, headers=bearer(other), timeout=10)
        assert r.status_code == 403
        r = httpx.get(url, params={"street": STREET, "from": "2026-11-01"}, headers=bearer(ops), timeout=10)
        assert r.status_code == 422 and r.json()["errors"] == [{"field": "to", "message": "required"}]
        r = httpx.get(url, params={"street": "450305999", **period}, headers=bearer(ops), timeout=10)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "street"
        assert httpx.get(url, params={"street": STREET, **period}, timeout=10).status_code == 401
    finally:
        remove_month(store, planted)
