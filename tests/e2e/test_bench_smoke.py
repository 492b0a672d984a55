"""A short run of the pipeline benchmark in CI, so that it never rots (issue 16): the
whole `gridbus bench pipeline` path — its own stack with the archiver, load over HTTP,
the drain, the broker's counters, the raw broker baseline — at 20 reports/s for 3 s.

It asserts that the result has every figure and that nothing accepted was lost; never a
time or a rate (the figures themselves belong in bench/README.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.pipeline import SERVICES, STACK_PROCESSES, run_pipeline, summary_lines


def test_pipeline_benchmark_smoke_run(broker_uris: tuple[str, str], redis_url: str, tmp_path: Path) -> None:
    amqp_uri, mgmt_url = broker_uris
    result = run_pipeline(
        rate=20,
        duration=3,
        transport="http",
        amqp_uri=amqp_uri,
        mgmt_url=mgmt_url,
        redis_url=redis_url,
        database_url=os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres"),
        drain_s=20,
        broker_count=200,
        results_dir=tmp_path,
        progress=False,
        echo=lambda _line: None,
    )
    json.dumps(result)
    lines = summary_lines(result)
    # nothing accepted was lost
    assert result["accepted"]["count"] > 0
    assert result["dispatched"]["count"] == result["accepted"]["count"], lines
    assert result["errors"]["undispatched"] == 0 and result["errors"]["case_id_mismatch"] == 0, lines
    assert result["errors"]["dead_letters"] == {}, lines
    assert result["service_exits"] == {}
    # every figure is there
    for stage in ("accept_to_order", "submit_to_order", "request"):
        assert result["latency"][stage]["count"] == result["dispatched"]["count"]
    assert result["dispatched"]["per_s"] is not None
    assert set(STACK_PROCESSES) | {"stack"} <= set(result["cpu_ms_per_report"])
    assert result["cpu_ms_per_report"]["stack"] > 0
    assert result["machine"]["loadavg"] and result["machine"]["loadavg_end"]
    assert set(SERVICES) <= set(result["service_metrics"])
    work = result["broker_work"]
    assert work["settled"] and work["reports"] == result["dispatched"]["count"]
    assert set(work["per_report"]) == {
        "publishes",
        "confirms",
        "enqueues_quorum",
        "stream_appends",
        "enqueues_classic",
        "deliveries",
    }
    assert work["per_report"]["enqueues_quorum"] > 0 and work["per_report"]["stream_appends"] > 0
    assert work["totals"]["confirms"] == work["totals"]["publishes"]  # every publish confirmed
    assert {"router.cases", "sla.events", "notifier.events", "gridbus.audit"} <= set(work["by_queue"])
    assert work["by_queue"]["gridbus.audit"]["type"] == "stream"
    assert work["publishes_by_kind"]
    assert set(result["broker"]["modes"]) == {"confirm_sync", "confirm_pipelined", "unconfirmed"}
    assert all(result["ratio"][f"vs_{m}"] is not None for m in result["broker"]["modes"])
    assert any("broker work per dispatched report" in line for line in lines)
