"""The framework ceiling (issue 16): how fast the router's work drains a backlog when nameko
does the consuming, and when a bare kombu or py-amqp consumer does the same work.

    gridbus bench framework --backlog 5000            # AMQP_URI, RABBITMQ_MANAGEMENT_URL
    gridbus bench framework --backlog 5000 --profile  # + py-spy of the nameko consumer

In a throwaway vhost with the real topology, for each variant (bench/framework_child.py)
and each of `work` (the router's real work: decode `case_registered`, `Dispatcher.plan_event`
with the shipped routes, publish the orders and `case_dispatched` with pipelined confirms,
ack after the confirms) and `nowork` (consume and ack only), one after the other in the
same run: `router.cases` is pre-filled with BACKLOG messages, the consumer process starts,
and between its WARMUP-th and its last ack it records its own CPU, the clock and RabbitMQ's
CPU (its OS process, /proc). Each figure per message: the ceiling (messages/s drained),
the consumer's CPU µs, RabbitMQ's CPU µs — raw, and less what the broker burnt in an idle
second measured just before (the machine's broker also serves other users). `work − nowork`
is the cost of the work; `nowork` the framework's own per-message cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from bench import profile as prof
from bench.common import REPO, RESULTS_DIR, cpu_seconds, envelope, infrastructure_pids, throwaway_vhost

#: name → (consumer, whether it takes the large prefetch; otherwise the deployed one, nameko's max_workers)
VARIANTS: dict[str, tuple[str, bool]] = {
    "nameko": ("nameko", False),  # (a) the deployed RouterService
    "kombu": ("kombu", False),  # (b) bare kombu, no eventlet, same prefetch
    "kombu_eventlet": ("kombu_eventlet", False),  # (b') the same under eventlet: eventlet's share
    "amqp_batch": ("amqp_batch", True),  # (c) py-amqp, a confirm round and an ack-multiple per batch
    "nameko_prefetch": ("nameko", True),  # (d) nameko with max_workers (its basic.qos) at the large prefetch
}

#: the profile's buckets for a consumer (first match from the leaf upwards wins)
FRAMEWORK_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog, stdlib)", ("structlog", "logging/", "shared/logs.py")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("pydantic", ("pydantic",)),
    ("json", ("json/",)),
    ("our glue (nameko_ext, health, resilience)", ("shared/nameko_ext.py", "shared/health.py", "shared/resilience.py")),
    ("router work (plan, routing)", ("services/router/", "shared/worktime.py", "shared/policies.py")),
    ("publisher (shared/bus, amqpclient)", ("shared/bus.py", "shared/amqpclient.py")),
    ("py-amqp", ("amqp/",)),
    ("kombu", ("kombu/",)),
    ("nameko container / worker", ("nameko/",)),
    ("eventlet (hub, green sockets)", ("eventlet/",)),
)

#: inclusive shares: a sample counts for a name when any of its frames is on the stack
FRAMEWORK_FRAMES: dict[str, tuple[str, ...]] = {
    "the handler (route_case)": ("route_case (services/router/service.py",),
    "route: decode + plan": ("route (services/router/routing.py",),
    "publish_batch + confirms": ("publish_batch (shared/bus.py",),
    "record: metrics + log line": ("record (services/router/routing.py",),
    "nameko spawn_worker": ("spawn_worker (nameko/",),
    "nameko _run_worker": ("_run_worker (nameko/",),
    "worker setup/teardown (dependencies)": (
        "_worker_setup",
        "_worker_teardown",
        "_worker_result",
        "inject_dependencies",
    ),
    "EntrypointMetrics": ("worker_setup (shared/nameko_ext.py", "worker_result (shared/nameko_ext.py"),
    "ReliableConsumer.handle_message": ("handle_message (shared/nameko_ext.py",),
    "ReliableConsumer._handled/_settle/_ack": ("_handled (shared/nameko_ext.py",),
    "unsettled-message ledger": ("shared/resilience.py",),
    "kombu message decode/receive": ("receive (kombu/", "_receive_callback (kombu/", "decode (kombu/"),
    "structlog": ("structlog",),
    "prometheus_client": ("prometheus_client",),
    "eventlet hub": ("eventlet/hubs",),
    "eventlet green sockets": ("eventlet/greenio",),
}


def case_registered_bodies(n: int, tag: str) -> list[bytes]:
    """`n` distinct `case_registered` events: bench_routing's realistic mix of categories,
    grids, severities and attributes."""
    from bench.bench_routing import make_inputs
    from shared.models import CaseRegistered, CaseSummary

    at = datetime.now(timezone.utc) - timedelta(minutes=5)
    out = []
    for i, inp in enumerate(make_inputs(n)):
        event = CaseRegistered(
            case_id=f"450305-{tag}-{i:06d}",
            correlation_id=f"bench-{tag}-{i}",
            case=CaseSummary(
                category=inp.category,
                severity=inp.severity,
                grid=inp.grid,
                street=inp.grid[:9],
                attributes=dict(inp.attributes),
                registered_at=at,
            ),
        )
        out.append(event.model_dump_json().encode())
    return out


def _purge(uri: str) -> None:
    """Empty every queue but the stream (which cannot be purged; it only grows)."""
    from shared import topology
    from shared.amqpclient import channel, connection

    with connection(uri) as conn:
        ch = channel(conn)
        for q in topology.default_topology().queues:
            if q.arguments.get("x-queue-type") != "stream":
                ch.queue_purge(q.name)


def _prefill(uri: str, bodies: list[bytes]) -> None:
    from shared import topology
    from shared.amqpclient import ConfirmChannel

    pub = ConfirmChannel(uri)
    props = {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2}
    try:
        for i in range(0, len(bodies), 1000):
            pub.publish([("", topology.Q_ROUTER_CASES, b, props) for b in bodies[i : i + 1000]], timeout=60)
    finally:
        pub.close()


def _depth(uri: str, queue: str) -> int | None:
    from shared.amqpclient import connection, queue_depth

    with connection(uri) as conn:
        return queue_depth(conn, queue)


def _depths(uri: str, queues: list[str]) -> dict[str, int | None]:
    from shared.amqpclient import connection, queue_depth

    with connection(uri) as conn:
        return {q: queue_depth(conn, q) for q in queues}


def _loadavg() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def run_one(
    uri: str,
    variant: str,
    work: bool,
    bodies: list[bytes],
    warmup: int,
    rabbit_pid: int | None,
    workdir: Path,
    redis_url: str,
    large_prefetch: int = 100,
    profile_s: float = 0.0,
    timeout_s: float | None = None,
    code: tuple[str, Path] = ("current", REPO),
) -> dict[str, Any]:
    """Pre-fill, start the consumer, wait for its last ack; the figures of one run.
    `code`: (label, checkout) whose shared/ and services/ the consumer runs (a baseline
    worktree for the before of a before/after in the same run)."""
    from shared import topology

    consumer, large = VARIANTS[variant]
    prefetch = large_prefetch if large else None
    label = f"{variant}.{code[0]}.{'work' if work else 'nowork'}{'.profile' if profile_s else ''}"
    _purge(uri)
    _prefill(uri, bodies)
    # the broker's CPU while nothing of ours runs: other users of the machine's broker
    # (after a second for the pre-fill's own work to settle)
    time.sleep(1.0)
    bg0, t0 = (cpu_seconds(rabbit_pid) if rabbit_pid else None), time.monotonic()
    time.sleep(1.0)
    bg1, t1 = (cpu_seconds(rabbit_pid) if rabbit_pid else None), time.monotonic()
    background = (bg1 - bg0) / (t1 - t0) if bg0 is not None and bg1 is not None else None
    out = workdir / f"{label}.json"
    cmd = [sys.executable, "-m", "bench.framework_child", consumer, "--count", str(len(bodies))]
    cmd += ["--warmup", str(warmup), "--out", str(out)]
    if rabbit_pid:
        cmd += ["--rabbit-pid", str(rabbit_pid)]
    if prefetch:
        cmd += ["--prefetch", str(prefetch)]
    if not work:
        cmd.append("--no-work")
    env = {**os.environ, "AMQP_URI": uri, "REDIS_URL": redis_url, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    env["PYTHONPATH"] = str(code[1])
    load_start = _loadavg()
    with open(workdir / f"{label}.log", "wb") as logf:
        child = subprocess.Popen(cmd, cwd=code[1], env=env, stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + (timeout_s or 60 + len(bodies) / 20)
    spy: subprocess.Popen | None = None
    spy_out = workdir / f"{label}.pyspy.txt"
    marks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if out.exists():
            try:
                marks = json.loads(out.read_text() or "{}")
            except ValueError:  # caught mid-write
                marks = {}
        if profile_s and spy is None and "mark" in marks:
            spy = prof.start(child.pid, profile_s, spy_out, rate=200)
        if "end" in marks or child.poll() is not None:
            break
        time.sleep(0.02)
    if spy is not None:
        spy.wait(timeout=profile_s + 30)
    if child.poll() is None:
        child.terminate()
        child.wait(timeout=30)
    result: dict[str, Any] = {
        "variant": variant,
        "code": code[0],
        "work": work,
        "prefetch": prefetch,
        "backlog": len(bodies),
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "exit_code": child.returncode,
        "log": str(workdir / f"{label}.log"),
    }
    if "mark" not in marks or "end" not in marks:
        result["error"] = f"consumer did not finish: {marks.get('end', marks.get('mark'))} (log: {result['log']})"
        return result
    m, e = marks["mark"], marks["end"]
    n, secs = e["count"] - m["count"], e["t"] - m["t"]
    if n <= 0 or secs <= 0:
        result["error"] = "empty window: the backlog is not larger than the warm-up and one batch"
        return result
    result.update(
        {
            "window_messages": n,
            "window_s": round(secs, 3),
            "per_s": round(n / secs, 1),
            "consumer_cpu_us": round((e["cpu_s"] - m["cpu_s"]) / n * 1e6, 1),
        }
    )
    if m.get("rabbit_cpu_s") is not None and e.get("rabbit_cpu_s") is not None:
        raw = (e["rabbit_cpu_s"] - m["rabbit_cpu_s"]) / n * 1e6
        result["rabbit_cpu_us_raw"] = round(raw, 1)
        result["rabbit_background_cores"] = round(background, 3) if background is not None else None
        if background is not None:
            result["rabbit_cpu_us"] = round(max(0.0, raw - background * secs / n * 1e6), 1)
    if work:  # every message led to its case_dispatched, confirmed before the ack
        result["dispatched_in_sla_events"] = _depth(uri, topology.Q_SLA_EVENTS)
        # what the broker stored per message consumed (orders, the event's fan-out), the
        # stream apart: the divisor for RabbitMQ's CPU per enqueue
        queues = [q.name for q in topology.default_topology().queues if q.arguments.get("x-queue-type") != "stream"]
        depths = _depths(uri, [q for q in queues if q != topology.Q_ROUTER_CASES])
        result["enqueued_per_message"] = round(sum(d or 0 for d in depths.values()) / len(bodies), 2)
    result["left_in_router_cases"] = _depth(uri, topology.Q_ROUTER_CASES)
    if spy is not None and spy_out.exists():
        text = spy_out.read_text()
        result["profile"] = {
            "file": str(spy_out),
            **prof.summarize(text, bucket_keys=FRAMEWORK_BUCKETS),
            "inclusive": prof.inclusive_shares(text, FRAMEWORK_FRAMES),
        }
    return result


def spawn_cost(uri: str, redis_url: str, workdir: Path, count: int = 5000) -> dict[str, Any]:
    """CPU µs per message of a nameko worker (with the router's dependencies and with none)
    and of a bare greenthread, in a process of its own (framework_child `spawn`)."""
    out = workdir / "spawn.json"
    env = {**os.environ, "AMQP_URI": uri, "REDIS_URL": redis_url, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "bench.framework_child", "spawn", "--count", str(count), "--out", str(out)]
    with open(workdir / "spawn.log", "wb") as logf:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=300)
    if done.returncode != 0 or not out.exists():
        return {"error": f"exit {done.returncode} (log: {workdir / 'spawn.log'})"}
    return json.loads(out.read_text())


def run_framework(
    amqp_uri: str,
    mgmt_url: str,
    redis_url: str,
    backlog: int = 5000,
    warmup: int = 200,
    variants: tuple[str, ...] = tuple(VARIANTS),
    profile: bool = False,
    profile_s: float = 5.0,
    large_prefetch: int = 100,
    work_dir: Path | None = None,
    baseline: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every variant, work and no work, in one vhost, one after the other. The consumers'
    logs, marks and py-spy files stay in `work_dir` [bench/results/framework-<time>/].
    `baseline`: another checkout (a worktree at the commit before a change); each run is
    then made with its code too, right before the same run with this checkout's."""
    from shared import topology

    result = envelope(
        "framework",
        {
            "backlog": backlog,
            "warmup": warmup,
            "variants": list(variants),
            "profile": profile,
            "large_prefetch": large_prefetch,
            "baseline": str(baseline) if baseline else None,
        },
    )
    rabbit_pid = infrastructure_pids(mgmt_url, redis_url).get("rabbitmq")
    result["rabbit_pid"] = rabbit_pid
    tag = time.strftime("%H%M%S")
    bodies = case_registered_bodies(backlog, tag)
    result["message_bytes"] = round(sum(map(len, bodies)) / len(bodies))
    runs: list[dict[str, Any]] = []
    with throwaway_vhost(amqp_uri, mgmt_url, prefix="gridbus-bench-framework") as (uri, _vhost):
        topology.apply(uri)
        workdir = work_dir or RESULTS_DIR / f"framework-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        workdir.mkdir(parents=True, exist_ok=True)
        result["work_dir"] = str(workdir)
        codes: list[tuple[str, Path]] = [("current", REPO)]
        if baseline is not None:
            codes.insert(0, ("base", baseline.resolve()))
            result["baseline_git"] = _git_rev(baseline)
        plan = [(v, w, 0.0, c) for v in variants for w in (True, False) for c in codes]
        if profile and "nameko" in variants:
            plan += [("nameko", w, profile_s, c) for w in (True, False) for c in codes]
        for variant, work, spy_s, code in plan:
            r = run_one(
                uri,
                variant,
                work,
                bodies,
                min(warmup, backlog - 1),
                rabbit_pid,
                workdir,
                redis_url,
                large_prefetch,
                spy_s,
                code=code,
            )
            if "error" in r:
                r["log_tail"] = Path(r["log"]).read_text(errors="replace")[-2000:]
            runs.append(r)
            echo(run_line(r))
        result["spawn_us"] = spawn_cost(uri, redis_url, workdir, count=min(5000, max(300, backlog)))
    result["runs"] = runs
    result["summary"] = summarize(runs)
    return result


def _git_rev(path: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant (and code, `variant@base` for a baseline's): work and no-work figures
    side by side, and what the work adds."""
    out: dict[str, Any] = {}
    for r in runs:
        if "error" in r or "profile" in r:
            continue
        v = out.setdefault(r["variant"] if r.get("code", "current") == "current" else f"{r['variant']}@{r['code']}", {})
        key = "work" if r["work"] else "nowork"
        v[key] = {k: r.get(k) for k in ("per_s", "consumer_cpu_us", "rabbit_cpu_us", "rabbit_cpu_us_raw")}
    for v in out.values():
        if "work" in v and "nowork" in v:
            v["work_minus_nowork_cpu_us"] = round(v["work"]["consumer_cpu_us"] - v["nowork"]["consumer_cpu_us"], 1)
    return out


def run_line(r: dict[str, Any]) -> str:
    at = "" if r.get("code", "current") == "current" else f"@{r['code']}"
    name = f"{r['variant']}{at}{'' if r['work'] else ' (no work)'}{' [py-spy]' if 'profile' in r else ''}"
    if "error" in r:
        return f"{name}: {r['error']}"
    return (
        f"{name}: {r['per_s']:,.0f} msg/s, consumer {r['consumer_cpu_us']:,.0f} µs/msg, "
        f"RabbitMQ {r.get('rabbit_cpu_us', '?')} µs/msg (raw {r.get('rabbit_cpu_us_raw', '?')}), "
        f"load {' '.join(r['loadavg_start'])}"
    )


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"framework ceiling, backlog {result['params']['backlog']}, {result['message_bytes']} B per message:"]
    lines += ["  " + run_line(r) for r in result["runs"]]
    spawn = result.get("spawn_us") or {}
    if "error" not in spawn and spawn:
        lines.append(
            "  nameko worker per message (CPU µs, no broker): " + ", ".join(f"{k} {v:g}" for k, v in spawn.items())
        )
    for r in result["runs"]:
        if "profile" in r:
            b = ", ".join(f"{k} {v['share']:.0%}" for k, v in list(r["profile"]["buckets"].items())[:8])
            lines.append(f"  profile {r['variant']}@{r.get('code')} {'work' if r['work'] else 'nowork'}: {b}")
    return lines
