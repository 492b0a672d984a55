"""就地处置 through the real services: a report its grid officer already solved is
registered resolved, never dispatched, counted in the 721 shares of its street,
community and patch, closed by verification or by not being drawn for it, and in the
reporter's figures."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from click.testing import CliRunner

from services.intake.auth import Role, create_key
from services.intake.cases import drawn_for_verification
from services.intake.reports.commands import reporters
from shared.indicators import load
from tests.e2e.conftest import get_from_queue, report, spread_location, wait_for
from tests.e2e.test_lifecycle import bearer, case_of

pytestmark = pytest.mark.e2e

PATCH = "450305001002001"  # 七星社区 (no other e2e test reports there)


def shares(client: redis.Redis) -> dict[tuple[str, str], dict[str, int]]:
    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    return {(r.scope, r.key): r.counts for r in load(client, month)}


def test_handled_on_site_is_never_dispatched_and_counts_in_721(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    grid_app, _ = create_key(stack_redis, Role.grid_app)
    officer = f"w-onsite-{uuid.uuid4().hex[:6]}"
    before = shares(stack_redis)
    onsite = {
        "note": "劝导店主将占道货物搬回店内",
        "mode": "service",
        "evidence_urls": ["https://img.example/after-1.jpg"],
    }
    body = report(
        category="06010",
        description="店外占道堆放杂物",
        filing_condition=None,
        location=spread_location(PATCH),
        handled_on_site=onsite,
        reporter={"id": officer, "role": "grid_officer", "name": "王", "phone": "13800000001"},
    )
    r = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert r.status_code == 202 and r.json()["status"] == "resolved", r.text
    case_id = r.json()["case_id"]
    again = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert again.status_code == 200 and again.json() == r.json()
    # a second report of the same officer, dispatched as usual, for the figures
    plain = report(
        category="06010",
        description="垃圾桶满溢",
        filing_condition=None,
        location=spread_location(PATCH),
        reporter={"id": officer, "role": "grid_officer", "name": "王", "phone": "13800000001"},
    )
    assert httpx.post(f"{stack['base']}/v1/reports", json=plain, headers=stack["auth"], timeout=5).status_code == 202

    def counted() -> dict[tuple[str, str], dict[str, int]] | None:
        now = shares(stack_redis)

        def delta(scope: str, key: str, counter: str) -> int:
            return now.get((scope, key), {}).get(counter, 0) - before.get((scope, key), {}).get(counter, 0)

        ok = all(
            delta(s, k, "mode_service") == 1 and delta(s, k, "on_site") == 1
            for s, k in (("street", PATCH[:9]), ("community", PATCH[:12]), ("patch", PATCH))
        )
        return now if ok else None

    assert wait_for(counted, 10), shares(stack_redis)
    case = case_of(stack, case_id)
    assert case["assignments"] == [] and case["handled_on_site"]["mode"] == "service"
    assert case["resolution"]["by"] == f"reporter:{officer}"
    drawn = drawn_for_verification(case_id, stack["settings"].onsite_verify_sample_rate)
    if drawn:
        assert case["status"] == "resolved"
        v = httpx.post(
            f"{stack['base']}/v1/cases/{case_id}/verification",
            headers=bearer(grid_app),
            timeout=5,
            json={"result": "pass", "note": "抽查属实", "verifier": "g-0001"},
        )
        assert v.json()["status"] == "closed"
    else:
        assert case["status"] == "closed" and case["timeline"][-1]["actor"] == "intake:sampling"
    # never dispatched: no order on the queue the tree would have chosen, nor at the station
    # (a negative: the router had the closed case's registration long before this point;
    # a short wait lets a stray order land before we look)
    time.sleep(0.5)
    assert get_from_queue(stack["channel"], "dept.sanitation", case_id, timeout=0.5) is None
    assert get_from_queue(stack["channel"], "dept.station", case_id, timeout=0.5) is None
    case = case_of(stack, case_id)
    assert [t["action"] for t in case["timeline"]][:3] == ["report", "register", "resolve_on_site"]
    assert case["assignments"] == [] and "dispatch" not in [t["action"] for t in case["timeline"]]
    closed = wait_for(
        lambda: (
            shares(stack_redis).get(("street", PATCH[:9]), {}).get("closed", 0)
            > before.get(("street", PATCH[:9]), {}).get("closed", 0)
        ),
        10,
    )
    assert closed

    month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    out = CliRunner().invoke(reporters, ["--month", month, "--csv"])
    assert out.exit_code == 0, out.output
    row = next(line.split(",") for line in out.output.splitlines() if line.startswith(officer))
    # reporter_id, role, accepted, handled_on_site, svc, mgmt, enf, duplicates, closed, cancelled
    assert row[1:] == ["grid_officer", "2", "1", "1", "0", "0", "0", "1", "0"]
