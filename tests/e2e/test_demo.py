"""The demo twice in a row on the same stack: both runs dispatch every demo case (the
second withdraws the first run's open cases through the cancellation endpoint instead of
having its reports linked to them as duplicates)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from services.demo import DEMO_REPORTS, run_demo

pytestmark = pytest.mark.e2e


def test_demo_dispatches_every_case_on_each_run(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    out: list[str] = []
    first = run_demo(stack["settings"], echo=out.append)
    second = run_demo(stack["settings"], echo=out.append)
    for run in (first, second):
        assert len(run) == len(DEMO_REPORTS)
        assert all(item["case"]["status"] == "dispatched" and not item["case"].get("duplicate_of") for item in run), [
            (i["case_id"], i["case"].get("status")) for i in run
        ]
    assert f"(withdrew {len(DEMO_REPORTS)} open case(s) of the previous demo run)" in out
    summary = [line for line in out if line.startswith("Demo summary")]
    assert summary == ["Demo summary (times in Asia/Shanghai, UTC+08):"] * 2
