"""The pure parts of the benchmarks: statistics, sample messages, the result's shape.
No broker, no timing assertions."""

from __future__ import annotations

import json
import types

import pytest

from bench import brokerwork
from bench import profile as prof
from bench.broker import payload
from bench.common import latency_summary, make_report, percentile, sample_reports, slope_per_s
from bench.pipeline import analyse, ratios, summary_lines
from shared.models import Report


def test_percentile_interpolates_like_numpy() -> None:
    xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert percentile(xs, 0) == 1
    assert percentile(xs, 100) == 10
    assert percentile(xs, 50) == 5.5
    assert percentile(xs, 90) == pytest.approx(9.1)
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    assert percentile([5, 1, 3], 50) == 3  # unsorted input
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_latency_summary_in_milliseconds() -> None:
    s = latency_summary([0.010, 0.020, 0.030])
    assert s == {"count": 3, "p50_ms": 20.0, "p95_ms": 29.0, "p99_ms": 29.8, "max_ms": 30.0, "mean_ms": 20.0}
    assert latency_summary([])["p99_ms"] is None


def test_slope_is_growth_per_second() -> None:
    assert slope_per_s([(0, 0), (1, 10), (2, 20)]) == pytest.approx(10)
    assert slope_per_s([(0, 5)]) is None


def test_bench_reports_are_valid_and_distinct() -> None:
    templates = sample_reports()
    reports = [make_report(templates[i % len(templates)], "abcd1234", i) for i in range(50)]
    for r in reports:
        Report.model_validate(r)
    assert len({r["report_id"] for r in reports}) == 50
    assert len({(r["location"]["lat"], r["location"]["lon"]) for r in reports}) == 50


def test_broker_payload_has_the_asked_size() -> None:
    for size in (100, 838, 1500):
        body = payload(size)
        assert len(body) == size
        json.loads(body)


def test_profile_summary_buckets_collapsed_stacks() -> None:
    raw = (
        'process 1:"python";thread (0x1);run (eventlet/hubs/hub.py:1);wait (eventlet/hubs/poll.py:2) 6\n'
        "thread (0x1);post_report (services/intake/service.py:9);execute_command (redis/client.py:3) 3\n"
        "thread (0x1);route (services/router/service.py:9);validate (pydantic/main.py:3) 1\n"
    )
    s = prof.summarize(raw)
    assert s["samples"] == 10
    assert s["buckets"]["eventlet_hub"]["samples"] == 6
    assert s["buckets"]["redis"]["share"] == 0.3
    assert s["top_self"][0]["frame"].startswith("wait")


def test_framework_profile_buckets_and_inclusive_shares() -> None:
    from bench.bench_framework import FRAMEWORK_BUCKETS, FRAMEWORK_FRAMES

    raw = (
        "thread (0x1);_run_worker (nameko/containers.py:1);route_case (services/router/service.py:2);"
        "publish_batch (shared/bus.py:3);_send_loop (eventlet/greenio/base.py:4) 6\n"
        "thread (0x1);_run_worker (nameko/containers.py:1);route_case (services/router/service.py:2);"
        "record (services/router/routing.py:5);redact_processor (shared/logs.py:6) 3\n"
        "thread (0x1);_handled (shared/nameko_ext.py:7);ack (kombu/message.py:8) 1\n"
    )
    s = prof.summarize(raw, bucket_keys=FRAMEWORK_BUCKETS)
    # leaf upwards: the green socket, the log line's processors, kombu's ack
    assert s["buckets"]["eventlet (hub, green sockets)"]["samples"] == 6
    assert s["buckets"]["logging (structlog, stdlib)"]["samples"] == 3
    assert s["buckets"]["kombu"]["samples"] == 1
    shares = prof.inclusive_shares(raw, FRAMEWORK_FRAMES)
    assert shares["the handler (route_case)"] == 0.9
    assert shares["publish_batch + confirms"] == 0.6
    assert shares["record: metrics + log line"] == 0.3
    assert shares["ReliableConsumer._handled/_settle/_ack"] == 0.1


def fake_run() -> dict:
    """A tiny HTTP run: 4 reports offered, 3 accepted, 2 dispatched (one twice)."""
    load = types.SimpleNamespace(
        offered=4,
        not_sent=0,
        n_accepted=3,
        errors={"http_503": 1},
        error_samples={},
        sent=[0.00, 0.25, 0.50, 0.75],
        accepted=[0.05, 0.30, 0.55, None],
        due=[0.0, 0.25, 0.5, 0.75],
        case_ids=["c0", "c1", "c2", None],
    )
    ids = ["bench-t-0", "bench-t-1", "bench-t-2", "bench-t-3"]
    records = [
        (0.10, "bench-t-0", "c0", 800),
        (0.12, "bench-t-0", "c0", 800),
        (0.50, "bench-t-1", "c1", 900),
        (0.6, "someone-else", "cx", 700),
    ]
    samples = [
        {
            "t": t,
            "queues": {"router.cases": {"messages": 2 * t}, "router.cases.dead": {"messages": 0}},
            "ready_now": {"router.cases": 2 * t},
            "cpu_s": {},
        }
        for t in (0, 1, 2)
    ]
    cpu0 = {"intake": 1.0, "machine": 10.0, "runq:intake": 0.5}
    cpu1 = {"intake": 1.5, "machine": 12.0, "runq:intake": 0.7}
    result = {"params": {"transport": "http", "duration": 2.0}, "report_bytes": 460}
    result.update(analyse(load, ids, records, 0.0, 2.0, 3.0, samples, cpu0, cpu1, "http"))
    result["broker"] = {
        "size_bytes": 850,
        "modes": {"confirm_sync": {"hop_per_s": 500.0}, "confirm_pipelined": {"hop_per_s": 4000.0}},
    }
    result["ratio"] = ratios(result)
    return result


def test_result_json_shape() -> None:
    r = fake_run()
    json.dumps(r)  # serialisable
    for key in (
        "offered",
        "accepted",
        "dispatched",
        "orders",
        "latency",
        "backlog",
        "errors",
        "cpu",
        "runqueue_wait_s",
        "broker",
        "ratio",
    ):
        assert key in r
    assert r["accepted"] == {"count": 3, "per_s": 1.5}
    assert r["dispatched"]["count"] == 2 and r["dispatched"]["in_window"] == 2
    assert r["orders"]["count"] == 4 and r["orders"]["foreign"] == 1
    assert r["errors"]["undispatched"] == 1 and r["errors"]["http_503"] == 1
    assert set(r["latency"]) == {"accept_to_order", "submit_to_order", "request", "generator_lag"}
    assert r["latency"]["accept_to_order"]["count"] == 2
    assert r["latency"]["accept_to_order"]["p50_ms"] == pytest.approx(125.0)
    assert r["backlog"]["growth_per_s"]["router.cases"] == pytest.approx(2.0)
    assert r["cpu"]["other_processes"]["seconds"] == pytest.approx(1.5)
    assert r["runqueue_wait_s"] == {"intake": pytest.approx(0.2)}
    assert r["ratio"]["vs_confirm_sync"] == pytest.approx(r["dispatched"]["per_s"] / 500.0, abs=1e-3)
    assert any("ratio" in line for line in summary_lines(r))


def _counters(vhost: dict[str, int], queues: dict[str, tuple[str, int]], exchanges: dict[str, tuple[int, int]]) -> dict:
    return {
        "vhost": {k: vhost.get(k, 0) for k in brokerwork.VHOST_COUNTERS},
        "queues": {
            n: {"type": t, "publish": p, "deliver_get": p, "redeliver": 0, "ack": p} for n, (t, p) in queues.items()
        },
        "exchanges": {n: {"publish_in": i, "publish_out": o} for n, (i, o) in exchanges.items()},
    }


def test_broker_work_is_the_difference_per_report_by_queue() -> None:
    before = _counters({"publish": 1, "confirm": 1}, {"archiver.record": ("quorum", 1)}, {"gridbus.events": (1, 2)})
    after = _counters(
        {"publish": 21, "confirm": 21, "deliver_get": 30},
        {
            "archiver.record": ("quorum", 21),
            "sla.events": ("quorum", 10),
            "gridbus.audit": ("stream", 20),
            "notifier.retry.10s": ("quorum", 0),  # nothing entered: left out
        },
        {"gridbus.events": (21, 52), "gridbus.dead": (0, 0)},
    )
    work = brokerwork.per_report(brokerwork.delta(before, after), reports=10)
    json.dumps(work)
    assert work["totals"]["publishes"] == 20 and work["totals"]["confirms"] == 20
    assert work["per_report"] == {
        "publishes": 2.0,
        "confirms": 2.0,
        "enqueues_quorum": 3.0,  # (21 − 1) + 10 into quorum queues, per 10 reports
        "stream_appends": 2.0,
        "enqueues_classic": 0.0,
        "deliveries": 3.0,
    }
    assert set(work["by_queue"]) == {"archiver.record", "sla.events", "gridbus.audit"}
    assert work["by_queue"]["archiver.record"]["per_report"] == 2.0
    assert work["by_exchange"] == {
        "gridbus.events": {"published": 20, "routed": 50, "published_per_report": 2.0, "routed_per_report": 5.0}
    }
    assert any("quorum enqueues 3.0" in line for line in brokerwork.summary_lines(work))


def test_broker_counters_are_read_until_they_stay_the_same() -> None:
    now = [0.0]
    readings = iter([{"n": 1}, {"n": 2}, {"n": 3}] + [{"n": 3}] * 100)

    def sleep(s: float) -> None:
        now[0] += s

    last, ok = brokerwork.settled(lambda: next(readings), quiet_s=5.0, clock=lambda: now[0], sleep=sleep)
    assert last == {"n": 3} and ok
    assert now[0] == pytest.approx(7.0)  # changed at 1 and 2 s, then 5 s without change
    moving = iter(range(1000))
    last, ok = brokerwork.settled(
        lambda: {"n": next(moving)}, quiet_s=5.0, timeout_s=10, clock=lambda: now[0], sleep=sleep
    )
    assert not ok


def test_idle_figures_are_shares_of_one_core_and_wake_ups_per_second() -> None:
    from bench.idle import analyse as idle_analyse
    from bench.idle import summary_lines as idle_lines

    def snap(t: float, cpu: float, fire_due: int, frames: int) -> dict:
        return {
            "t": t,
            "cpu": {
                "intake": cpu,
                "sla": 2 * cpu,
                "router": cpu,
                "notifier": cpu,
                "archiver": cpu,
                "rabbitmq": 5 * cpu,
            },
            "machine": 10 * t,
            "runs": {"sla": {"fire_due": (fire_due, 1.5), "relay_outbox": (3, 2.0)}},
            "frames": {"connections": 10, "frames_in": frames, "frames_out": frames},
            "counters": _counters({}, {}, {}),
        }

    r = idle_analyse(snap(0.0, 1.0, 100, 0), snap(10.0, 1.01, 150, 20))
    assert r["cpu_share_of_one_core"]["sla"] == pytest.approx(0.002)
    assert r["services_share_of_one_core"] == pytest.approx(0.006) and r["within_target"]
    assert set(r["shared_servers_share_of_one_core"]) == {"rabbitmq"}  # not counted as the stack's
    assert r["entrypoint_runs"] == {"sla": {"fire_due": {"per_s": 5.0, "mean_ms": 1.5}}}  # relay did not run
    assert r["broker"]["frames_in_per_s"] == 2.0
    r["machine"] = {"loadavg": ["1", "1", "1"], "loadavg_end": ["1", "1", "1"]}
    assert any("fire_due 5.0/s" in line for line in idle_lines(r))
