"""A real Prometheus scrapes the four running services and evaluates the alert rules
against what they expose (after a report went through the pipeline)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import report, wait_for
from tests.integration.test_prometheus_scrape import PROMETHEUS, _api, _wait_for, running_prometheus

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PROMETHEUS is None, reason="no `prometheus` binary: deploy/ci/validate.sh --install-only"),
]
SERVICES = ("intake", "router", "sla", "notifier")


def test_prometheus_scrapes_the_running_services(stack: dict[str, Any], tmp_path: Any) -> None:
    settings = stack["settings"]
    with running_prometheus(tmp_path, {s: settings.metrics_port(s) for s in SERVICES}) as (base, proc):
        r = httpx.post(f"{stack['base']}/v1/reports", json=report(), headers=stack["auth"], timeout=5)
        assert r.status_code == 202

        def all_up() -> bool:
            targets = _api(base, "targets")["activeTargets"]
            return {t["labels"]["job"] for t in targets if t["health"] == "up"} == set(SERVICES)

        _wait_for("the four services to be up", all_up, proc)

        def dispatched() -> list:
            return _api(base, "query", query="sum(gridbus_cases_dispatched_total)")["result"]

        assert wait_for(dispatched, timeout=30)
        in_by_service = _api(base, "query", query="sum by (job) (gridbus_messages_in_total)")["result"]
        assert {s["metric"]["job"] for s in in_by_service} >= {"intake", "router", "sla", "notifier"}

        def evaluated() -> list:
            groups = _api(base, "rules")["groups"]
            ok = all(
                r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for g in groups for r in g["rules"]
            )
            return groups if groups and ok else []

        assert _wait_for("the rules to evaluate", evaluated, proc)
        down = [a for a in _api(base, "alerts")["alerts"] if a["labels"]["alertname"] == "GridbusServiceDown"]
        assert down == []
