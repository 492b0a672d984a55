"""A short run of the framework benchmark in CI, so that it never rots (issue 16): every
consumer variant (the deployed nameko RouterService, bare kombu with and without eventlet,
py-amqp in batches, nameko with a larger prefetch), with and without the router's work, on
a backlog of 40 messages (batches of 10).

It asserts that every run drained its backlog, that the work reached the next queue (each
message's `case_dispatched` is in `sla.events`) and that every figure is there; never a time
or a rate (the figures belong in bench/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_framework import VARIANTS, run_framework, summary_lines


@pytest.mark.timeout(600)  # ten consumer processes start one after the other: ~40 s here, more on a loaded machine
def test_framework_benchmark_smoke_run(broker_uris: tuple[str, str], redis_url: str, tmp_path: Path) -> None:
    amqp_uri, mgmt_url = broker_uris
    result = run_framework(
        amqp_uri,
        mgmt_url,
        redis_url,
        backlog=40,
        warmup=5,
        large_prefetch=10,
        work_dir=tmp_path,
        echo=lambda _line: None,
    )
    json.dumps(result)
    lines = summary_lines(result)
    runs = result["runs"]
    assert {(r["variant"], r["work"]) for r in runs} == {(v, w) for v in VARIANTS for w in (True, False)}
    for r in runs:
        assert "error" not in r, (r, r.get("log_tail"))
        assert 40 - 5 - 10 <= r["window_messages"] <= 40 - 5, r  # a batch may cross the warm-up mark
        assert r["left_in_router_cases"] == 0, r  # the backlog drained, every message acked
        assert r["per_s"] > 0 and r["consumer_cpu_us"] > 0, r
        if r["work"]:
            assert r["dispatched_in_sla_events"] == 40, r  # the work's output confirmed before each ack
    assert set(result["summary"]) == set(VARIANTS)
    assert all("work_minus_nowork_cpu_us" in v for v in result["summary"].values())
    assert set(result["spawn_us"]) == {
        "nameko_worker_no_dependencies",
        "nameko_worker_router_dependencies",
        "eventlet_greenthread",
    }, result["spawn_us"]
    assert len(lines) == 2 + len(runs)
