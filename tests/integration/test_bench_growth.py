"""A smoke run of the growth benchmark (bench/bench_growth.py) at tiny sizes, so that it
never rots: every figure it documents is in its result. No timing assertion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bench_growth
from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_growth_benchmark_reports_every_figure(tmp_path: Path, pg_dsn: str) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary: the benchmark runs a Redis of its own")
    out = tmp_path / "growth.json"
    # its own process: the benchmark points the environment (REDIS_URL, DATABASE_URL) and the
    # logging at its own servers, which must not leak into the tests that run after this one
    subprocess.run(
        [sys.executable, "-m", "bench.bench_growth", "--sizes", "300,600", "--ops", "3", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        timeout=580,
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["sizes"].keys() == {"300", "600"}
    for size in ("300", "600"):
        s = result["sizes"][size]
        assert s["cases"] == int(size) and s["open"] > 0
        assert s["bytes_per_open_case"] > 0 and s["bytes_per_archived_case"] > 0 and s["ledger_bytes_per_case"] > 0
        assert set(s["ops"]) == set(bench_growth.OPS)
        for name, f in s["ops"].items():
            assert f["ops"] == 3, name
            for k in ("p50_ms", "p99_ms", "cpu_ms", "cpu_client_ms"):
                assert f[k] > 0, (size, name, k)
            assert f["cpu_redis_ms"] >= 0 and f["cpu_pg_ms"] >= 0, (size, name)  # the CPU split by process
            assert f["p99_ratio"] is not None and f["cpu_ratio"] is not None, (size, name)
    assert all(f["p99_ratio"] == 1.0 for f in result["sizes"]["300"]["ops"].values())  # the baseline itself
