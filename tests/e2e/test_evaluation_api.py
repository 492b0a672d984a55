"""Evaluation through the real services: a closed case rated dissatisfied by the grid app
within the window is reopened and sent back to the department that resolved it (a new
order on its queue); a satisfied rating only records; an open case cannot be rated."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from services.intake.auth import Role, create_key
from tests.e2e.conftest import get_from_queue
from tests.e2e.test_lifecycle import bearer, new_case, reply, wait_status

pytestmark = pytest.mark.e2e


def evaluate(stack: dict[str, Any], key: str, case_id: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{stack['base']}/v1/cases/{case_id}/evaluation", json=body, headers=bearer(key), timeout=5)


def test_dissatisfied_reporter_reopens_the_case(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    grid_app, _ = create_key(stack_redis, Role.grid_app)
    case_id = new_case(stack)
    assert get_from_queue(stack["channel"], "dept.lighting", case_id, timeout=10)
    wait_status(stack, case_id, "dispatched")
    r = evaluate(stack, grid_app, case_id, evaluation_id="e-0", rating="satisfied")
    assert r.status_code == 409 and r.json()["current"] == "dispatched"
    reply(stack, lighting, case_id, "resolve", mode="service", note="已修复")
    httpx.post(
        f"{stack['base']}/v1/cases/{case_id}/verification",
        headers=bearer(grid_app),
        timeout=5,
        json={"result": "pass", "verifier": "g-1"},
    )
    wait_status(stack, case_id, "closed")

    r = evaluate(
        stack, grid_app, case_id, evaluation_id="e-1", rating="dissatisfied", note="第二天又不亮了", evaluator="w-1024"
    )
    assert r.status_code == 200 and r.json()["status"] == "reopened", r.text
    order = get_from_queue(stack["channel"], "dept.lighting", case_id, timeout=10)
    assert order is not None and order["body"]["order_id"] == f"{case_id}/2/lighting"
    case = wait_status(stack, case_id, "dispatched")
    assert case["rework_count"] == 1
    assert [(e["rating"], e["reopened"]) for e in case["evaluations"]] == [("dissatisfied", True)]
    assert evaluate(stack, grid_app, case_id, evaluation_id="e-1", rating="dissatisfied").json()["applied"] is False
    assert evaluate(stack, lighting, case_id, evaluation_id="e-2", rating="satisfied").status_code == 403
    r = evaluate(stack, grid_app, case_id, evaluation_id="e-3", rating="great")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "rating"
