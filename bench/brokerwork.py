"""The broker's work per report: what RabbitMQ itself counted while the pipeline ran.

The management API keeps, per vhost, exchange and queue, counters that only grow
(`message_stats`): messages published and confirmed in the vhost, published into and
routed out of each exchange, and enqueued into (`publish`), handed to consumers
(`deliver_get`) and redelivered from each queue. The pipeline benchmark reads them at
the start of the offering window and again after the services stopped, and divides the
difference by the reports dispatched: publishes, confirms, enqueues into quorum queues
and appends to streams per report, broken down by queue and exchange. These are counts,
not timings: they do not change with the machine's load, which makes them the figure to
compare before and after a change to the topology or to what a service publishes.

The management database takes its samples from the queues and channels every
`collect_statistics_interval` (5 s by default): `settled` reads until the counters have
stayed the same for longer than that.
"""

from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import quote

import httpx

#: the management API's default `collect_statistics_interval` (s), plus a margin
STATS_INTERVAL_S = 5.5

VHOST_COUNTERS = ("publish", "confirm", "deliver_get", "ack", "redeliver", "return_unroutable", "drop_unroutable")
QUEUE_COUNTERS = ("publish", "deliver_get", "redeliver", "ack")
EXCHANGE_COUNTERS = ("publish_in", "publish_out")


def read_counters(api: httpx.Client, vhost: str) -> dict[str, Any]:
    """The vhost's counters now: {"vhost": {...}, "queues": {name: {type, ...}}, "exchanges": {name: {...}}}."""
    v = quote(vhost, safe="")
    stats = api.get(f"/api/vhosts/{v}").json().get("message_stats") or {}
    out: dict[str, Any] = {"vhost": {k: int(stats.get(k) or 0) for k in VHOST_COUNTERS}, "queues": {}, "exchanges": {}}
    for row in api.get(f"/api/queues/{v}", params={"columns": "name,type,message_stats"}).json():
        ms = row.get("message_stats") or {}
        out["queues"][row["name"]] = {
            "type": row.get("type") or "classic",
            **{k: int(ms.get(k) or 0) for k in QUEUE_COUNTERS},
        }
    for row in api.get(f"/api/exchanges/{v}", params={"columns": "name,message_stats"}).json():
        ms = row.get("message_stats") or {}
        if row.get("name"):  # the default exchange ("") is not used by gridbus
            out["exchanges"][row["name"]] = {k: int(ms.get(k) or 0) for k in EXCHANGE_COUNTERS}
    return out


def settled(
    read: Callable[[], dict[str, Any]],
    quiet_s: float = STATS_INTERVAL_S,
    timeout_s: float = 30.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], bool]:
    """Read until the counters have not changed for `quiet_s` (every sample the broker
    still had to send is in); (the last reading, whether it settled within `timeout_s`)."""
    start = clock()
    last = read()
    since = clock()
    while True:
        if clock() - since >= quiet_s:
            return last, True
        if clock() - start >= timeout_s:
            return last, False
        sleep(poll_s)
        now = read()
        if now != last:
            last, since = now, clock()


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after − before, counter by counter (a queue or exchange new since `before` counts from 0)."""

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {k: (v - int(a.get(k) or 0) if isinstance(v, int) else v) for k, v in b.items()}

    return {
        "vhost": diff(before.get("vhost", {}), after.get("vhost", {})),
        "queues": {n: diff(before.get("queues", {}).get(n, {}), q) for n, q in after.get("queues", {}).items()},
        "exchanges": {
            n: diff(before.get("exchanges", {}).get(n, {}), e) for n, e in after.get("exchanges", {}).items()
        },
    }


def per_report(d: dict[str, Any], reports: int, settled_ok: bool = True) -> dict[str, Any]:
    """The figures of the result's `broker_work`: totals and per-report counts, by queue
    (quorum queues, streams, classic) and by exchange; queues nothing entered are left out."""
    n = max(1, reports)

    def r(x: float) -> float:
        return round(x / n, 3)

    queues = {name: q for name, q in sorted(d["queues"].items()) if q.get("publish")}
    quorum = sum(q["publish"] for q in queues.values() if q["type"] == "quorum")
    stream = sum(q["publish"] for q in queues.values() if q["type"] == "stream")
    classic = sum(q["publish"] for q in queues.values() if q["type"] not in ("quorum", "stream"))
    v = d["vhost"]
    return {
        "reports": reports,
        "settled": settled_ok,
        "totals": {
            "publishes": v.get("publish", 0),
            "confirms": v.get("confirm", 0),
            "enqueues_quorum": quorum,
            "stream_appends": stream,
            "enqueues_classic": classic,
            "deliveries": v.get("deliver_get", 0),
            "redeliveries": v.get("redeliver", 0),
            "unroutable": v.get("return_unroutable", 0) + v.get("drop_unroutable", 0),
        },
        "per_report": {
            "publishes": r(v.get("publish", 0)),
            "confirms": r(v.get("confirm", 0)),
            "enqueues_quorum": r(quorum),
            "stream_appends": r(stream),
            "enqueues_classic": r(classic),
            "deliveries": r(v.get("deliver_get", 0)),
        },
        "by_queue": {
            name: {
                "type": q["type"],
                "enqueued": q["publish"],
                "per_report": r(q["publish"]),
                "delivered": q.get("deliver_get", 0),
                "redelivered": q.get("redeliver", 0),
            }
            for name, q in queues.items()
        },
        "by_exchange": {
            name: {
                "published": e["publish_in"],
                "routed": e["publish_out"],
                "published_per_report": r(e["publish_in"]),
                "routed_per_report": r(e["publish_out"]),
            }
            for name, e in sorted(d["exchanges"].items())
            if e.get("publish_in") or e.get("publish_out")
        },
    }


def publishes_by_kind(service_metrics: dict[str, Any], reports: int) -> dict[str, float]:
    """Messages each service published per report, by `exchange:kind` (from their
    /metrics): who sends what the broker counted."""
    n = max(1, reports)
    out: dict[str, float] = {}
    for service, info in sorted(service_metrics.items()):
        for key, value in sorted((info.get("messages_out") or {}).items()):
            if value:
                out[f"{service} {key}"] = round(value / n, 3)
    return out


def summary_lines(work: dict[str, Any]) -> list[str]:
    p = work["per_report"]
    lines = [
        f"  broker work per dispatched report ({work['reports']} reports"
        + ("" if work.get("settled", True) else "; counters had not settled")
        + f"): publishes {p['publishes']}, confirms {p['confirms']}, "
        f"quorum enqueues {p['enqueues_quorum']}, stream appends {p['stream_appends']}, "
        f"deliveries to consumers {p['deliveries']}",
        "    enqueued per report by queue: "
        + ", ".join(f"{name} {q['per_report']}" for name, q in work["by_queue"].items()),
    ]
    if work.get("publishes_by_kind"):
        lines.append(
            "    published per report by service and kind: "
            + ", ".join(f"{k} {v}" for k, v in work["publishes_by_kind"].items())
        )
    return lines
