"""A real Prometheus (Debian's `prometheus` binary) scrapes gridbus metrics and evaluates
the alert rules of deploy/prometheus/alerts.yml.

The target is a `prometheus_client` HTTP server started here, exposing intake's registry
as shared.metrics builds it — the same exposition the intake service serves.
(The scrape of the four running services is added once `gridbus run` exists.)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from shared import metrics
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="no `prometheus` binary: `apt-get install -y prometheus` (or `deploy/ci/validate.sh --install-only`)",
    ),
]

WAIT_S = 60.0


def _wait_for(what: str, probe: Callable[[], Any], proc: subprocess.Popen) -> Any:
    deadline = time.monotonic() + WAIT_S
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode} while waiting for {what}")
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def target_port() -> int:
    port = free_port()
    metrics.serve_metrics(metrics.Known("intake", entrypoints=("handle_report",)), port, host="127.0.0.1")
    return port


@contextmanager
def running_prometheus(work: Path, targets: dict[str, int]) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real Prometheus in `work` scraping `targets` (job name → port on 127.0.0.1) every
    second and evaluating deploy/prometheus/alerts.yml; yields (base URL, process) once it
    is ready, and stops it on the way out."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in targets.items()
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for("/-/ready", lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200, proc)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, target_port: int) -> Iterator[tuple[str, subprocess.Popen]]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), {"intake": target_port}) as running:
        yield running


def _api(base: str, path: str, **params: Any) -> Any:
    body = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_gridbus_metrics_and_evaluates_rules(prometheus: tuple[str, subprocess.Popen]) -> None:
    base, proc = prometheus
    metrics.REPORTS_RECEIVED.labels("http", "registered").inc()
    dead = metrics.DEAD_LETTERED.labels("router", "router.cases", "scrape_test")  # series at 0

    def target_up() -> bool:
        targets = _api(base, "targets")["activeTargets"]
        return any(t["labels"]["job"] == "intake" and t["health"] == "up" for t in targets)

    _wait_for("the target to be up", target_up, proc)

    def sample_of(query: str) -> list:
        return _api(base, "query", query=query)["result"]

    up = _wait_for("up{job='intake'}", lambda: sample_of('up{job="intake"}'), proc)
    assert up[0]["value"][1] == "1"
    _wait_for("a gridbus counter", lambda: sample_of('gridbus_reports_received_total{outcome="registered"}'), proc)
    _wait_for(
        "the dead-letter series at 0", lambda: sample_of('gridbus_dead_lettered_total{reason="scrape_test"}'), proc
    )

    # every rule group loads and evaluates without error
    def groups_evaluated() -> list:
        groups = _api(base, "rules")["groups"]
        done = all(
            r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for g in groups for r in g["rules"]
        )
        return groups if groups and done else []

    groups = _wait_for("every rule evaluated", groups_evaluated, proc)
    on_disk = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert {g["name"] for g in groups} == {g["name"] for g in on_disk["groups"]}

    # a rule fires on what the target exposes: a service dead-letters a message
    dead.inc()

    def dead_letter_alert() -> list:
        alerts = _api(base, "alerts")["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "GridbusDeadLettered"
            and a["labels"].get("reason") == "scrape_test"
            and a["state"] == "firing"
        ]

    fired = _wait_for("GridbusDeadLettered to fire", dead_letter_alert, proc)
    assert fired[0]["labels"]["queue"] == "router.cases"
    # and a service that is up is not reported down
    assert not [a for a in _api(base, "alerts")["alerts"] if a["labels"]["alertname"] == "GridbusServiceDown"]
