"""The pipeline benchmark: reports offered at a fixed rate to a real four-service stack.

One run:
1. a throwaway vhost, Redis key prefix and copy of config/ (nothing shared with a
   developer's stack or the tests);
2. a local webhook sink answering 204 (so the notifier has somewhere to deliver) and a
   "departments" consumer of every `dept.*` queue, each in its own process;
3. the four services as real processes (`services.runner.start_all`), LOG_LEVEL=WARNING;
4. reports offered open-loop at `rate`/s for `duration` s over HTTP (POST /v1/reports by a
   pool of keep-alive connections) or AMQP (`gridbus.reports` / `report.submitted`,
   asynchronous publisher confirms), then a drain period until every accepted report has
   its order or the drain time is up;
5. queue depths (management API, and passive declares for an immediate ready count) and
   CPU seconds of every process sampled each second; optionally py-spy on each service;
6. the services stopped, then the raw broker baseline (`bench.broker`) in the same vhost
   with the same message size, so the result is a ratio against the broker measured in
   the same run; the vhost and Redis keys deleted.

Latency is from acceptance (HTTP 202 received / AMQP publish confirmed) to the first
dispatch order for that report arriving at the department consumer; orders are matched
by their `correlation_id` (= the report's `report_id`) and, over HTTP, checked against
the `case_id` of the 202 answer.
"""

from __future__ import annotations

import collections
import http.client
import json
import multiprocessing as mp
import queue as queue_mod
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, cast
from urllib.parse import quote

import httpx

from bench import brokerwork
from bench import profile as prof
from bench.broker import AsyncConfirmPublisher, run_broker_bench
from bench.common import (
    PIPELINE_QUEUES,
    REPO,
    bench_config_dir,
    cpu_seconds,
    delete_redis_prefix,
    envelope,
    free_port,
    infrastructure_pids,
    latency_summary,
    machine_busy_seconds,
    make_report,
    mgmt_client,
    runqueue_wait_seconds,
    sample_reports,
    service_ports,
    slope_per_s,
    throwaway_vhost,
    wall,
)
from shared.amqpclient import body_bytes, channel, close_quietly, connect, connection, queue_depth

#: the stack of `gridbus up` without the optional bridge: the archiver too, since the
#: complete record (the audit stream, which the archiver reads) is part of every report's cost
SERVICES = ("intake", "router", "sla", "notifier", "archiver")
#: the processes whose CPU per report is the stack's (`cpu_ms_per_report.stack`)
STACK_PROCESSES = (*SERVICES, "rabbitmq", "redis")


# ------------------------------------------------------------------ helper processes
def _serve_sink(port: int, hits: Any) -> None:
    """A webhook receiver that accepts everything with 204 (runs in its own process)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with hits.get_lock():
                hits.value += 1

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _consume_orders(
    amqp_uri: str, queues: list[str], prefix: str, ready: Any, stop: Any, matched: Any, out: Any
) -> None:
    """The departments: consume every dept.* queue, note when each order arrived."""
    conn = connect(amqp_uri)
    ch = channel(conn)
    ch.basic_qos(0, 500, False)
    records: list[tuple[float, str, str, int]] = []
    seen: set[str] = set()

    def on_message(m: Any) -> None:
        now = wall()
        body = body_bytes(m)
        try:
            msg = json.loads(body)
        except ValueError:
            msg = {}
        corr = msg.get("correlation_id") or m.properties.get("correlation_id") or ""
        records.append((now, corr, msg.get("case_id", ""), len(body)))
        if corr.startswith(prefix) and corr not in seen:
            seen.add(corr)
            matched.value = len(seen)

    for q in queues:
        ch.basic_consume(q, callback=on_message, no_ack=True)
    ready.set()

    def drain(timeout: float) -> None:
        try:
            conn.drain_events(timeout=timeout)
        except socket.timeout:
            pass

    while not stop.is_set():
        drain(0.1)
    drain(0.2)
    out.put(records)
    close_quietly(conn)


def bench_key(redis_url: str, prefix: str) -> str:
    """A grid_app key in the bench stack's Redis prefix (intake wants one)."""
    import redis

    from services.intake.auth import Role, create_key

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return create_key(client, Role.grid_app, name="bench", prefix=prefix)[0]
    finally:
        client.close()


# ------------------------------------------------------------------ load generators
class HttpLoad:
    """Open-loop HTTP load: report i is due at t0 + i/rate and taken by the next free
    connection of the pool; a report that no connection could take within `duration +
    grace_s` is counted as not sent."""

    def __init__(
        self,
        host: str,
        port: int,
        bodies: list[bytes],
        rate: float,
        duration: float,
        concurrency: int,
        grace_s: float = 5.0,
        api_key: str = "",
    ) -> None:
        self.host, self.port, self.bodies, self.api_key = host, port, bodies, api_key
        self.rate, self.duration, self.concurrency, self.grace_s = rate, duration, concurrency, grace_s
        n = len(bodies)
        self.due: list[float | None] = [None] * n
        self.sent: list[float | None] = [None] * n
        self.accepted: list[float | None] = [None] * n
        self.case_ids: list[str | None] = [None] * n
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_samples: dict[str, str] = {}
        self.offered = 0
        self.not_sent = 0
        self.n_accepted = 0
        self.t0 = 0.0
        self._q: "queue_mod.Queue[int | None]" = queue_mod.Queue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.t0 = wall()
        for _ in range(self.concurrency):
            t = threading.Thread(target=self._worker, daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._schedule, daemon=True)
        t.start()
        self._threads.append(t)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def join(self, timeout: float) -> None:
        deadline = wall() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - wall()))

    def _schedule(self) -> None:
        n = len(self.bodies)
        i = 0
        while i < n:
            now = wall()
            due_n = min(n, int((now - self.t0) * self.rate) + 1)
            while i < due_n:
                self.due[i] = self.t0 + i / self.rate
                self._q.put(i)
                i += 1
            self.offered = i
            if i < n:
                time.sleep(max(0.0, min(0.01, self.t0 + i / self.rate - wall())))
        for _ in range(self.concurrency):
            self._q.put(None)

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def _worker(self) -> None:
        conn = self._connect()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        limit = self.t0 + self.duration + self.grace_s
        while True:
            i = self._q.get()
            if i is None:
                break
            if wall() > limit:
                with self._lock:
                    self.not_sent += 1
                continue
            self.sent[i] = wall()
            try:
                conn.request("POST", "/v1/reports", self.bodies[i], headers)
                resp = conn.getresponse()
                data = resp.read()
                now = wall()
                if resp.status == 202:
                    self.accepted[i] = now
                    self.case_ids[i] = json.loads(data).get("case_id")
                    with self._lock:
                        self.n_accepted += 1
                else:
                    with self._lock:
                        self.errors[f"http_{resp.status}"] += 1
                        self.error_samples.setdefault(f"http_{resp.status}", data[:500].decode(errors="replace"))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = self._connect()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                conn.close()
                conn = self._connect()
        conn.close()


class AmqpLoad:
    """Open-loop AMQP load on `gridbus.reports` with asynchronous publisher confirms."""

    def __init__(
        self,
        amqp_uri: str,
        bodies: list[bytes],
        report_ids: list[str],
        rate: float,
        duration: float,
        grace_s: float = 5.0,
    ) -> None:
        self.bodies, self.report_ids = bodies, report_ids
        self.duration = duration
        self.errors: collections.Counter[str] = collections.Counter()
        self.pub = AsyncConfirmPublisher(
            amqp_uri,
            "gridbus.reports",
            "report.submitted",
            len(bodies),
            self._body_for,
            rate=rate,
            window=5000,
            deadline_s=duration + grace_s,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def _body_for(self, i: int) -> tuple[bytes, dict[str, Any]]:
        rid = self.report_ids[i]
        return self.bodies[i], {
            "content_type": "application/json",
            "content_encoding": "utf-8",
            "delivery_mode": 2,
            "message_id": rid,
            "correlation_id": rid,
        }

    def _run(self) -> None:
        try:
            self.pub.run()
        except Exception as exc:  # reported, never hidden
            self.pub.error = repr(exc)

    def start(self) -> None:
        self._thread.start()
        while self.pub.started_at is None and self._thread.is_alive():
            time.sleep(0.001)
        self.t0 = self.pub.started_at or wall()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def offered(self) -> int:
        return sum(1 for t in self.pub.sent if t is not None)

    @property
    def n_accepted(self) -> int:
        return sum(1 for t in self.pub.confirmed if t is not None)

    @property
    def accepted(self) -> list[float | None]:
        return self.pub.confirmed

    @property
    def sent(self) -> list[float | None]:
        return self.pub.sent

    @property
    def not_sent(self) -> int:
        return len(self.bodies) - self.offered


# ------------------------------------------------------------------ sampling
class Sampler:
    """Every `interval` s: queue depths (management API: messages / ready / unacked, and a
    passive declare for the ready count right now) and CPU seconds of each process."""

    def __init__(
        self, amqp_uri: str, mgmt_url: str, vhost: str, pids: dict[str, int], t0: float, interval: float = 1.0
    ) -> None:
        self.amqp_uri, self.mgmt_url, self.vhost, self.pids = amqp_uri, mgmt_url, vhost, pids
        self.t0, self.interval = t0, interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with connection(self.amqp_uri) as conn, mgmt_client(self.mgmt_url) as api:
            while not self._stop.is_set():
                self.samples.append(self._sample(api, conn))
                self._stop.wait(self.interval)
            self.samples.append(self._sample(api, conn))

    def _sample(self, api: httpx.Client, conn: Any) -> dict[str, Any]:
        s: dict[str, Any] = {"t": round(wall() - self.t0, 2), "queues": {}, "ready_now": {}, "cpu_s": {}}
        try:
            rows = api.get(
                f"/api/queues/{quote(self.vhost, safe='')}",
                params={"columns": "name,messages,messages_ready,messages_unacknowledged"},
            ).json()
            for row in rows:
                name = row.get("name", "")
                if name in PIPELINE_QUEUES or name.endswith(".dead") or name.startswith("dept."):
                    s["queues"][name] = {
                        "messages": row.get("messages", 0),
                        "ready": row.get("messages_ready", 0),
                        "unacked": row.get("messages_unacknowledged", 0),
                    }
        except (httpx.HTTPError, ValueError):
            pass
        try:
            for q in PIPELINE_QUEUES:
                s["ready_now"][q] = queue_depth(conn, q)
        except Exception:  # a sample missing is shown as missing, the run goes on
            pass
        for name, pid in self.pids.items():
            s["cpu_s"][name] = cpu_seconds(pid)
        s["cpu_s"]["machine"] = machine_busy_seconds()
        return s


# ------------------------------------------------------------------ service metrics
def scrape_service_metrics(ports: dict[str, int]) -> dict[str, Any]:
    """Messages in/out and mean handler time per entrypoint, from each /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {}
    for service, port in ports.items():
        info: dict[str, Any] = {"messages_out": {}, "messages_in": {}, "handler": {}}
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError as exc:
            out[service] = {"error": str(exc)}
            continue
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                if sample.name == "gridbus_messages_out_total":
                    key = f"{sample.labels.get('exchange')}:{sample.labels.get('kind')}"
                    info["messages_out"][key] = info["messages_out"].get(key, 0) + sample.value
                elif sample.name == "gridbus_messages_in_total":
                    key = sample.labels.get("entrypoint", "?")
                    info["messages_in"][key] = info["messages_in"].get(key, 0) + sample.value
                elif fam.name == "gridbus_handler_seconds" or sample.name.startswith("gridbus_handler_"):
                    if sample.name.endswith("_sum"):
                        sums[sample.labels.get("entrypoint", "?")] = sample.value
                    elif sample.name.endswith("_count"):
                        counts[sample.labels.get("entrypoint", "?")] = sample.value
        for ep, c in counts.items():
            if c:
                info["handler"][ep] = {"count": int(c), "mean_ms": round(1000 * sums.get(ep, 0) / c, 2)}
        out[service] = info
    return out


# ------------------------------------------------------------------ the run
def stack_env(
    vhost_uri: str, mgmt_url: str, redis_url: str, prefix: str, archive_dsn: str, config_dir: Path, sink_port: int
) -> dict[str, str]:
    """The services' environment for a bench stack: its own vhost, Redis key prefix,
    archive database, config copy and free ports; webhooks to the local sink."""
    return {
        "AMQP_URI": vhost_uri,
        "RABBITMQ_MANAGEMENT_URL": mgmt_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "DATABASE_URL": archive_dsn,
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        **service_ports(),
        "WEBHOOK_SECRET": "bench-secret",
        "WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{sink_port}/hooks/{{dept}}",
        "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    }


def run_pipeline(
    *,
    rate: float,
    duration: float,
    transport: str,
    amqp_uri: str,
    mgmt_url: str,
    redis_url: str,
    database_url: str = "postgresql://root@127.0.0.1:5432/postgres",
    concurrency: int = 32,
    drain_s: float | None = None,
    broker_count: int = 3000,
    with_broker: bool = True,
    profile: bool = False,
    trace: bool = False,
    results_dir: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    from services.demo import wait_until_ready
    from services.runner import start_all, stop_all
    from shared.config import Settings
    from shared.topology import default_topology

    if transport not in ("http", "amqp"):
        raise ValueError("transport must be http or amqp")
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    drain_s = max(10.0, duration) if drain_s is None else drain_s
    params = {
        "rate": rate,
        "duration": duration,
        "transport": transport,
        "concurrency": concurrency,
        "drain_s": drain_s,
        "broker_count": broker_count,
        "profile": profile,
        "trace": trace,
    }
    result = envelope("pipeline", params)
    run_tag = uuid.uuid4().hex[:8]
    prefix = f"bench{run_tag}"
    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-"))
    results_dir = results_dir or (REPO / "bench" / "results")
    results_dir.mkdir(parents=True, exist_ok=True)
    log_path = results_dir / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}-{run_tag}.services.log"
    result["services_log"] = str(log_path)

    # bodies first: encoding is not part of what is measured
    templates = sample_reports()
    n = max(1, int(round(rate * duration)))
    reports = [make_report(templates[i % len(templates)], run_tag, i) for i in range(n)]
    bodies = [json.dumps(r, ensure_ascii=False).encode() for r in reports]
    report_ids = [r["report_id"] for r in reports]
    result["report_bytes"] = round(sum(map(len, bodies)) / len(bodies))

    ctx = mp.get_context("spawn")
    procs: list[subprocess.Popen] = []
    helpers: list[Any] = []
    log_file = open(log_path, "w")
    # the archive in a database of its own (never the developer's), dropped at the end
    from psycopg.conninfo import make_conninfo

    from services.archiver import db

    archive_dsn = make_conninfo(database_url, dbname=f"gridbus_bench_{run_tag}")
    db.prepare(archive_dsn)
    try:
        with throwaway_vhost(amqp_uri, mgmt_url) as (vhost_uri, vhost_name):
            result["vhost"] = vhost_name
            config_dir = bench_config_dir(REPO / "config", work / "config")

            sink_port = free_port()
            sink_hits = ctx.Value("l", 0)
            sink = ctx.Process(target=_serve_sink, args=(sink_port, sink_hits), daemon=True)
            sink.start()
            helpers.append(sink)

            env = stack_env(vhost_uri, mgmt_url, redis_url, prefix, archive_dsn, config_dir, sink_port)
            settings = Settings(**cast(dict[str, Any], {k.lower(): v for k, v in env.items()}))
            echo(f"starting the services in vhost {vhost_name} (log: {log_path})")
            trace_out = results_dir / f"pipeline-{run_tag}-{{service}}.trace.json"
            if trace:  # the same services, with wall-clock timers around their calls
                import os
                import sys

                procs = [
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.trace", name],
                        env={**os.environ, **env, "BENCH_TRACE_OUT": str(trace_out)},
                        stdout=log_file,
                        stderr=log_file,
                    )
                    for name in SERVICES
                ]
            else:
                procs = start_all(SERVICES, env=env, stdout=log_file.fileno())
            t_start = wall()
            wait_until_ready(settings, procs, timeout=90, services=SERVICES)
            result["startup_s"] = round(wall() - t_start, 2)

            dept_queues = [q.name for q in default_topology().queues if q.kind == "work" and q.name.startswith("dept.")]
            ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
            matched = ctx.Value("l", 0)
            consumer = ctx.Process(
                target=_consume_orders,
                args=(vhost_uri, dept_queues, f"bench-{run_tag}-", ready, stop, matched, out),
                daemon=True,
            )
            consumer.start()
            helpers.append(consumer)
            if not ready.wait(30):
                raise RuntimeError("the department consumer did not start")

            pids = {name: p.pid for name, p in zip(SERVICES, procs, strict=False)}
            pids.update(infrastructure_pids(mgmt_url, redis_url))
            import os

            pids["bench"] = os.getpid()
            pids["departments"] = consumer.pid or 0
            pids["sink"] = sink.pid or 0

            if transport == "http":
                load: Any = HttpLoad(
                    settings.intake_http_host,
                    settings.intake_http_port,
                    bodies,
                    rate,
                    duration,
                    concurrency,
                    api_key=bench_key(redis_url, prefix),
                )
            else:
                load = AmqpLoad(vhost_uri, bodies, report_ids, rate, duration)

            profilers: dict[str, tuple[subprocess.Popen, Path]] = {}
            if profile:
                for name, p in zip(SERVICES, procs, strict=False):
                    path = results_dir / f"pipeline-{run_tag}-{name}.pyspy.txt"
                    pp = prof.start(p.pid, duration, path)
                    if pp is not None:
                        profilers[name] = (pp, path)
                if not profilers:
                    echo("py-spy not found: no profile (pip install py-spy==0.4.3)")

            with mgmt_client(mgmt_url) as api:  # the broker's own counters, from here to the end
                counters0 = brokerwork.read_counters(api, vhost_name)
            t0 = wall()
            sampler = Sampler(vhost_uri, mgmt_url, vhost_name, pids, t0)
            sampler.start()
            load.start()
            t0 = load.t0
            sampler.t0 = t0
            cpu0 = cpu_snapshot(pids)

            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=n, unit="rep", desc=f"{transport} {rate:g}/s", dynamic_ncols=True)
            window_end = t0 + duration
            cpu1: dict[str, float | None] | None = None
            last_progress, last_matched = wall(), 0
            drain_deadline = None
            while True:
                now = wall()
                if cpu1 is None and now >= window_end:
                    cpu1 = cpu_snapshot(pids)
                if bar is not None:
                    bar.n = load.offered
                    bar.set_postfix(
                        accepted=load.n_accepted,
                        dispatched=matched.value,
                        errors=sum(load.errors.values()),
                        refresh=False,
                    )
                    bar.refresh()
                dead = [name for name, p in zip(SERVICES, procs, strict=False) if p.poll() is not None]
                if dead:
                    echo(f"service(s) exited during the run: {dead}")
                    break
                if matched.value != last_matched:
                    last_matched, last_progress = matched.value, now
                if load.done():
                    if drain_deadline is None:
                        drain_deadline = max(now, window_end) + drain_s
                    if matched.value >= load.n_accepted or now > drain_deadline:
                        break
                    if now - last_progress > 10 and now > window_end + 3:
                        break  # nothing arrives any more
                time.sleep(0.25)
            t_end = wall()
            cpu_end = cpu_snapshot(pids)
            if cpu1 is None:
                cpu1 = cpu_end
            if bar is not None:
                bar.n = load.offered
                bar.refresh()
                bar.close()
            load.join(5)
            sampler.stop()
            stop.set()
            try:
                records: list[tuple[float, str, str, int]] = out.get(timeout=30)
            except queue_mod.Empty:
                records = []
            consumer.join(10)
            for _name, (pp, _path) in profilers.items():
                try:
                    pp.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pp.kill()
                    pp.wait()

            ports = {s: settings.metrics_port(s) for s in SERVICES}
            result["service_metrics"] = scrape_service_metrics(ports)
            result["webhooks_received"] = sink_hits.value
            result["service_exits"] = {
                name: p.returncode for name, p in zip(SERVICES, procs, strict=False) if p.poll() is not None
            }
            stop_all(procs)
            procs = []
            with mgmt_client(mgmt_url) as api:  # every sample the broker still had to take
                counters1, counters_settled = brokerwork.settled(lambda: brokerwork.read_counters(api, vhost_name))
            if trace:
                result["trace"] = {}
                for name in SERVICES:
                    path = Path(str(trace_out).replace("{service}", name))
                    if path.exists():
                        result["trace"][name] = json.loads(path.read_text())

            result.update(
                analyse(load, report_ids, records, t0, duration, t_end, sampler.samples, cpu0, cpu1, transport, cpu_end)
            )
            result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
            result["broker_work"] = brokerwork.per_report(
                brokerwork.delta(counters0, counters1), result["dispatched"]["count"], counters_settled
            )
            result["broker_work"]["publishes_by_kind"] = brokerwork.publishes_by_kind(
                result["service_metrics"], result["dispatched"]["count"]
            )
            if profilers:
                result["profile"] = {}
                for name, (_pp, path) in profilers.items():
                    text = path.read_text() if path.exists() else ""
                    result["profile"][name] = {"file": str(path), **prof.summarize(text)}

            order_bytes = result["orders"].get("mean_bytes") or 1500
            if with_broker:
                echo(f"broker baseline in the same vhost ({broker_count} messages of {order_bytes} B per mode)")
                result["broker"] = run_broker_bench(vhost_uri, order_bytes, broker_count, echo=echo)
                result["ratio"] = ratios(result)
    finally:
        if procs:
            stop_all(procs)
        for h in helpers:
            if h.is_alive():
                h.terminate()
                h.join(5)
        log_file.close()
        try:
            delete_redis_prefix(redis_url, prefix)
        except Exception as exc:
            echo(f"could not delete Redis keys {prefix}:*: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        try:
            db.drop_database(archive_dsn)
        except Exception as exc:
            echo(f"could not drop the bench's archive database: {exc}")
    result["log_levels"] = count_log_levels(log_path)
    return result


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    snap: dict[str, float | None] = {k: cpu_seconds(v) for k, v in pids.items()}
    snap["machine"] = machine_busy_seconds()
    for k, v in pids.items():
        if k in SERVICES or k in ("rabbitmq", "redis"):
            snap[f"runq:{k}"] = runqueue_wait_seconds(v)
    return snap


def count_log_levels(path: Path) -> dict[str, int]:
    levels: collections.Counter[str] = collections.Counter()
    try:
        for line in path.read_text(errors="replace").splitlines():
            try:
                levels[str(json.loads(line).get("level", "?")).lower()] += 1
            except ValueError:
                levels["unstructured"] += 1
    except OSError:
        pass
    return dict(levels)


def analyse(
    load: Any,
    report_ids: list[str],
    records: list[tuple[float, str, str, int]],
    t0: float,
    duration: float,
    t_end: float,
    samples: list[dict[str, Any]],
    cpu0: dict[str, float | None],
    cpu1: dict[str, float | None],
    transport: str,
    cpu_end: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    index = {rid: i for i, rid in enumerate(report_ids)}
    first_order: dict[int, float] = {}
    order_case: dict[int, str] = {}
    sizes = [r[3] for r in records]
    foreign = 0
    for t, corr, case_id, _size in records:
        i = index.get(corr)
        if i is None:
            foreign += 1
            continue
        if i not in first_order or t < first_order[i]:
            first_order[i] = t
            order_case[i] = case_id
    accepted = load.accepted
    sent = load.sent
    latencies = [first_order[i] - accepted[i] for i in first_order if accepted[i] is not None]
    from_submit = [first_order[i] - sent[i] for i in first_order if sent[i] is not None]
    request_s = [accepted[i] - sent[i] for i in range(len(report_ids)) if accepted[i] is not None and sent[i]]
    due = getattr(load, "due", None)
    lag = [sent[i] - due[i] for i in range(len(report_ids)) if due and due[i] is not None and sent[i]] if due else []
    n_accepted = sum(1 for a in accepted if a is not None)
    in_window = sum(1 for t in first_order.values() if t <= t0 + duration)
    last = max(first_order.values()) if first_order else None
    case_mismatch = 0
    if transport == "http":
        case_mismatch = sum(1 for i, c in order_case.items() if load.case_ids[i] and c != load.case_ids[i])
    undispatched = sum(1 for i, a in enumerate(accepted) if a is not None and i not in first_order)

    # backlog: per queue, the depth at the end of the offering window and its growth per second
    backlog: dict[str, Any] = {"samples": samples, "growth_per_s": {}, "max": {}, "at_window_end": {}}
    in_win = [s for s in samples if 0 <= s["t"] <= duration + 0.5]
    for q in PIPELINE_QUEUES:
        pts = [(s["t"], s["ready_now"].get(q)) for s in in_win if s["ready_now"].get(q) is not None]
        mg = [
            (s["t"], s["queues"].get(q, {}).get("messages"))
            for s in in_win
            if s["queues"].get(q, {}).get("messages") is not None
        ]
        g = slope_per_s(pts)
        backlog["growth_per_s"][q] = None if g is None else round(g, 1)
        backlog["max"][q] = max([v for _, v in pts] + [v for _, v in mg] + [0])
        backlog["at_window_end"][q] = pts[-1][1] if pts else None
    dead = {}
    if samples:
        for name, row in samples[-1]["queues"].items():
            if name.endswith(".dead") and row.get("messages"):
                dead[name] = row["messages"]

    window = duration
    cpu = {}
    for k in cpu0:
        a, b = cpu0.get(k), cpu1.get(k)
        if a is not None and b is not None:
            cpu[k] = {"seconds": round(b - a, 2), "share_of_one_core": round((b - a) / window, 3)}
    runq = {k.split(":", 1)[1]: cpu.pop(k)["seconds"] for k in list(cpu) if k.startswith("runq:")}
    if "machine" in cpu:
        ours = sum(v["seconds"] for k, v in cpu.items() if k != "machine")
        cpu["other_processes"] = {
            "seconds": round(cpu["machine"]["seconds"] - ours, 2),
            "share_of_one_core": round((cpu["machine"]["seconds"] - ours) / window, 3),
        }
    # per report that went the whole way (over AMQP many accepted reports are still queued),
    # from the start of the window to the end of the drain: the work of the reports
    # dispatched after the window is counted too
    end = cpu_end or cpu1
    per_report: dict[str, float] = {}
    for k in cpu0:
        a, b = cpu0.get(k), end.get(k)
        if a is not None and b is not None and k != "machine" and not k.startswith("runq:"):
            per_report[k] = round((b - a) / max(1, len(first_order)) * 1000, 3)
    # the figure: every process of the stack, broker and Redis included (not the bench's own)
    per_report["stack"] = round(sum(v for k, v in per_report.items() if k in STACK_PROCESSES), 3)

    errors: dict[str, Any] = dict(load.errors)
    if getattr(load, "error_samples", None):
        errors["samples"] = load.error_samples
    if getattr(load, "pub", None) is not None:
        if load.pub.nacked:
            errors["amqp_nacked"] = load.pub.nacked
        if load.pub.returned:
            errors["amqp_returned"] = load.pub.returned
        if load.pub.error:
            errors["amqp_error"] = load.pub.error
    return {
        "offered": {"count": load.offered, "per_s": round(load.offered / duration, 1), "not_sent": load.not_sent},
        "accepted": {"count": n_accepted, "per_s": round(n_accepted / duration, 1)},
        "dispatched": {
            "count": len(first_order),
            "in_window": in_window,
            "in_window_per_s": round(in_window / duration, 1),
            "per_s": round(len(first_order) / (last - t0), 1) if last and last > t0 else None,
            "drain_s": round(max(0.0, last - (t0 + duration)), 2) if last else None,
        },
        "orders": {
            "count": len(records),
            "foreign": foreign,
            "mean_bytes": round(sum(sizes) / len(sizes)) if sizes else None,
        },
        "latency": {
            "accept_to_order": latency_summary(latencies),
            "submit_to_order": latency_summary(from_submit),
            "request": latency_summary(request_s),
            "generator_lag": latency_summary(lag),
        },
        "backlog": backlog,
        "errors": {**errors, "undispatched": undispatched, "case_id_mismatch": case_mismatch, "dead_letters": dead},
        "cpu": cpu,
        "cpu_ms_per_report": per_report,
        "runqueue_wait_s": runq,
        "elapsed_s": round(t_end - t0, 2),
    }


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """pipeline reports/s ÷ broker messages/s per hop, for each broker mode."""
    pipe = result["dispatched"].get("per_s") or 0.0
    out: dict[str, Any] = {"pipeline_reports_per_s": pipe}
    for mode, r in result.get("broker", {}).get("modes", {}).items():
        hop = r.get("hop_per_s")
        out[f"vs_{mode}"] = round(pipe / hop, 3) if hop else None
    return out


def summary_lines(r: dict[str, Any]) -> list[str]:
    p = r["params"]
    lat = r["latency"]["accept_to_order"]
    req = r["latency"]["request"]
    sub = r["latency"]["submit_to_order"]
    lines = [
        f"pipeline over {p['transport']}: offered {r['offered']['per_s']}/s for {p['duration']} s "
        f"({r['offered']['count']} reports, {r['report_bytes']} B each; {r['offered']['not_sent']} not sent)",
        f"  accepted   {r['accepted']['per_s']:>8}/s  ({r['accepted']['count']})   "
        f"request p50/p99 {req['p50_ms']}/{req['p99_ms']} ms",
        f"  dispatched {r['dispatched']['per_s']}/s sustained, {r['dispatched']['in_window_per_s']}/s within "
        f"the window ({r['dispatched']['count']} reports, drain {r['dispatched']['drain_s']} s)",
        f"  latency acceptance → order in dept queue: p50 {lat['p50_ms']} ms  p95 {lat['p95_ms']} ms  "
        f"p99 {lat['p99_ms']} ms  max {lat['max_ms']} ms",
        f"  latency submission → order in dept queue: p50 {sub['p50_ms']} ms  p95 {sub['p95_ms']} ms  "
        f"p99 {sub['p99_ms']} ms",
        "  backlog growth /s: "
        + ", ".join(f"{q} {v}" for q, v in r["backlog"]["growth_per_s"].items())
        + "   max: "
        + ", ".join(f"{q} {v}" for q, v in r["backlog"]["max"].items()),
        "  CPU during the window (share of one core): "
        + ", ".join(f"{k} {v['share_of_one_core']}" for k, v in r["cpu"].items()),
        "  CPU ms per dispatched report (window and drain): "
        + ", ".join(f"{k} {v}" for k, v in r.get("cpu_ms_per_report", {}).items())
        + f"   load average {' '.join(r.get('machine', {}).get('loadavg', []))} at the start, "
        + f"{' '.join(r.get('machine', {}).get('loadavg_end', []))} at the end",
        "  waiting for a CPU during the window (s): "
        + ", ".join(f"{k} {v}" for k, v in r.get("runqueue_wait_s", {}).items()),
        f"  errors: {json.dumps(r['errors'], ensure_ascii=False)[:600]}",
    ]
    if "broker_work" in r:
        lines += brokerwork.summary_lines(r["broker_work"])
    if "ratio" in r:
        b = r["broker"]["modes"]
        lines.append(
            "  broker per hop (same run, "
            + f"{r['broker']['size_bytes']} B): "
            + ", ".join(f"{m} {v['hop_per_s']}/s" for m, v in b.items())
        )
        lines.append(
            "  ratio pipeline ÷ broker hop: "
            + ", ".join(f"{k} {v}" for k, v in r["ratio"].items() if k.startswith("vs_"))
        )
    for name, tr in (r.get("trace") or {}).items():
        per = r["accepted"]["count"] or 1
        top = "; ".join(f"{k} {v['calls'] / per:.1f}×{v['mean_ms']} ms" for k, v in list(tr.items())[:4])
        lines.append(f"  trace {name} (calls per report × mean wall): {top}")
    for name, pr in (r.get("profile") or {}).items():
        if pr.get("samples"):
            top = ", ".join(f"{k} {v['share']:.0%}" for k, v in list(pr["buckets"].items())[:5])
            lines.append(f"  profile {name}: {pr['samples']} samples; {top}")
    return lines
