"""Escalation through the whole stack: a report nobody acknowledges climbs the five grid
levels (patch → community → street → district → city), each step recorded on the case,
in the accountability ledger, and notified."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from services.intake.auth import Role, create_key
from tests.e2e.conftest import report, wait_for

pytestmark = pytest.mark.e2e


def test_unacknowledged_case_climbs_to_the_city(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    ops, _ = create_key(stack_redis, Role.ops)
    body = report(category="06010", description="辰山路口暴露垃圾无人处理", filing_condition=None)
    r = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]

    def at_city() -> dict[str, Any] | None:
        case = httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=stack["auth"], timeout=5).json()
        active = [a for a in case.get("assignments", []) if a["active"]]
        return case if active and active[0]["level"] == 1 else None

    # ack 3 s, then four 2 s steps: about 11 s to the city commander
    case = wait_for(at_city, timeout=30, interval=0.25)
    assert case is not None, httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=stack["auth"], timeout=5).json()[
        "timeline"
    ]
    assert case["status"] == "dispatched" and case["assignments"][0]["dept"] == "sanitation"
    steps = [t["note"] for t in case["timeline"] if t["actor"] == "sla"]
    assert [n.split(" (")[0] for n in steps[:4]] == [
        "escalated L5 → L4",
        "escalated L4 → L3",
        "escalated L3 → L2",
        "escalated L2 → L1",
    ]
    assert "督办" in steps[0]

    ledger = httpx.get(
        f"{stack['base']}/v1/accountability",
        params={"dept": "sanitation"},
        headers={"Authorization": f"Bearer {ops}"},
        timeout=5,
    ).json()
    mine = [e for e in ledger["entries"] if e["case_id"] == case_id]
    assert len(mine) >= 4
    assert {e["level"] for e in mine} >= {5, 4, 3, 2}

    def escalation_hooks() -> list[dict[str, Any]]:
        return [
            h
            for h in stack["sink"].received
            if h["body"]["event"].get("case_id") == case_id and h["body"]["event"].get("event") == "case_escalated"
        ]

    hooks = wait_for(escalation_hooks, timeout=10)
    assert hooks and all(h["valid"] for h in hooks)
