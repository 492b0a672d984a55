"""A real Prometheus scrapes the four running services and evaluates the alert rules
against what they expose (after a report went through the pipeline)."""
from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import report, wait_for
from tests.integration.test_prometheus_scrape import ALERTS, PROMETHEUS, _api, _free_port, _wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(PROMETHEUS is None, reason="no `prometheus` binary: "
                                                  "deploy/ci/validate.sh --install-only")]
SERVICES = ("intake", "router", "sla", "notifier")


def test_prometheus_scrapes_the_running_services(stack: dict[str, Any], tmp_path: Any) -> None:
    settings = stack["settings"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": s, "static_configs": [{"targets": [f"127.0.0.1:{settings.metrics_port(s)}"]}]}
                           for s in SERVICES],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for("/-/ready", lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200, proc)
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
            ok = all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                     for g in groups for r in g["rules"])
            return groups if groups and ok else []

        assert _wait_for("the rules to evaluate", evaluated, proc)
        down = [a for a in _api(base, "alerts")["alerts"] if a["labels"]["alertname"] == "GridbusServiceDown"]
        assert down == []
    finally:
        proc.terminate()
        proc.wait(timeout=20)
