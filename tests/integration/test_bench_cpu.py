"""A smoke run of bench/bench_cpu.py (CPU per report of intake's, router's, sla's and
the notifier's code), so that it never rots: every step it documents is measured. In a
subprocess, and not imported here: the benchmark patches its process with eventlet, as the
services do. No timing assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STEPS = {
    "intake_gate",
    "intake_parse",
    "intake_register",
    "router_plan_publish",
    "intake_apply_dispatch",
    "intake_batches",
    "sla_clocks",
    "notifier_plan",
    "notifier_deliver",
}


@pytest.mark.timeout(300)
def test_cpu_benchmark_measures_every_step(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_cpu",
            "--reports",
            "4",
            "--warmup",
            "2",
            "--out",
            str(out),
            "--profile",
            "sla_clocks",
            "--batch",
            "2",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        timeout=280,
    )
    run = json.loads(out.read_text())["runs"][0]
    assert run["reports"] == 4
    assert run["deliveries_per_report"] > 0
    assert set(run["cpu_ms_per_report"]) == STEPS
    assert all(v > 0 for v in run["cpu_ms_per_report"].values()), run["cpu_ms_per_report"]
    assert set(run["cpu_ms_per_report_by_service"]) == {"intake", "router", "sla", "notifier"}
