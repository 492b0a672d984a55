"""Shared pieces of the benchmarks: throwaway vhosts, sample messages, percentiles,
process CPU accounting, the machine description and the result file.

Everything here targets the local broker and Redis only; nothing is left behind: a
vhost created here is deleted by the same context manager, Redis keys by prefix.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote, urlparse, urlunparse

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
RESULT_SCHEMA = 1

#: the work queues whose depth tells where a backlog builds up
PIPELINE_QUEUES = (
    "intake.reports",
    "intake.events",
    "router.cases",
    "sla.events",
    "notifier.events",
)


# ------------------------------------------------------------------ statistics
def free_port() -> int:
    """A free loopback port (for a bench stack's servers and services)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_ports() -> dict[str, str]:
    """Free ports for intake's HTTP API and every service's /metrics (each `*_METRICS_PORT`
    setting), as environment variables: a stack of services that collides with nothing."""
    from shared.config import Settings

    names = ["intake_http_port", *(n for n in Settings.model_fields if n.endswith("_metrics_port"))]
    return {n.upper(): str(free_port()) for n in names}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max/mean in milliseconds (None when there are no samples)."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 2)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p95_ms": ms(percentile(seconds, 95)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def slope_per_s(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y) points: backlog growth in messages per second."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / den


# ------------------------------------------------------------------ sample messages
SAMPLE_REPORT: dict[str, Any] = {
    "category": "01037",
    "description": "羊角山社区穿山路连续三盏路灯不亮",
    "severity": "normal",
    "filing_condition": "连续3盏以上不亮",
    "location": {"lat": 25.2590, "lon": 110.3330, "address": "七星区穿山路12号", "grid": "450305003002001"},
    "reporter": {"id": "g-0007", "role": "grid_officer", "name": "网格员 黄", "phone": "13900000007"},
    "observed_at": "2026-11-27T09:30:00+08:00",
}


def sample_reports() -> list[dict[str, Any]]:
    """The demo's realistic reports (several departments and streets), without ids."""
    try:
        from services.demo import DEMO_REPORTS
    except Exception:  # the demo moved: one fixed report still makes a valid run
        return [dict(SAMPLE_REPORT)]
    return [dict(r) for r in DEMO_REPORTS] or [dict(SAMPLE_REPORT)]


def make_report(template: dict[str, Any], run_tag: str, seq: int) -> dict[str, Any]:
    # A distinct location per report keeps intake's duplicate detection (same category
    # within a radius and time window) from linking bench reports to each other.
    body = json.loads(json.dumps(template))
    body["report_id"] = f"bench-{run_tag}-{seq:07d}"
    loc = body.get("location") or {}
    if "lat" in loc:
        # a lattice of 2 m steps, ±100 m around the sample point (inside the district)
        loc["lat"] = round(loc["lat"] + ((seq % 101) - 50) * 2e-5, 6)
        loc["lon"] = round(loc["lon"] + ((seq // 101) % 101 - 50) * 2e-5, 6)
    body["description"] = f"{body.get('description', '')} #{seq}"
    body.setdefault("observed_at", (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(timespec="seconds"))
    return body


def bench_config_dir(source: Path, target: Path) -> Path:
    """Copy config/ for a bench stack. Near-duplicate detection stays on (its Redis geo
    search runs for every report) but with a 1 m radius: the synthetic reports come from a
    few sample patches and must each become a case of their own to be dispatched."""
    import yaml

    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file():
            shutil.copy(f, target / f.name)
    dup = target / "duplicates.yaml"
    if dup.exists():
        data = yaml.safe_load(dup.read_text(encoding="utf-8")) or {}
        data["radius_m"] = 1
        data["classes"] = {k: 1 for k in (data.get("classes") or {})}
        dup.write_text("# bench copy: 1 m radius (see bench/common.py)\n" + yaml.safe_dump(data), encoding="utf-8")
    return target


def report_bytes() -> int:
    """Size of one encoded bench report (the body of POST /v1/reports)."""
    return len(json.dumps(make_report(sample_reports()[0], "x" * 8, 1), ensure_ascii=False).encode())


# ------------------------------------------------------------------ machine & processes
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_gb"] = round(int(mem[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def git_describe() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "dirty_files": len([line for line in run("status", "--porcelain").splitlines() if line.strip()]),
    }


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def runqueue_wait_seconds(pid: int) -> float | None:
    """Time the threads of a process spent runnable but waiting for a CPU (schedstat):
    how much a busy machine delays every wake-up of that process."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors spent busy since boot (/proc/stat; not idle, not iowait),
    to tell the load of other processes on the machine from the benchmark's own."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
    return busy / _CLK_TCK


def infrastructure_pids(mgmt_url: str, redis_url: str) -> dict[str, int]:
    """OS pids of the RabbitMQ node behind the management API and of the Redis server
    (several brokers may run on one machine: ask each server rather than guess by name)."""
    pids: dict[str, int] = {}
    try:
        with mgmt_client(mgmt_url) as api:
            nodes = api.get("/api/nodes", params={"columns": "name,os_pid"}).json()
            if nodes and str(nodes[0].get("os_pid", "")).isdigit():
                pids["rabbitmq"] = int(nodes[0]["os_pid"])
    except (httpx.HTTPError, ValueError):
        pass
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        pids["redis"] = int(client.info("server")["process_id"])
        client.close()
    except Exception:
        pass
    return pids


# ------------------------------------------------------------------ broker & redis
def mgmt_client(mgmt_url: str) -> httpx.Client:
    parsed = urlparse(mgmt_url)
    netloc = (parsed.hostname or "127.0.0.1") + (f":{parsed.port}" if parsed.port else "")
    return httpx.Client(
        base_url=urlunparse((parsed.scheme or "http", netloc, "", "", "", "")),
        auth=(parsed.username or "guest", parsed.password or "guest"),
        timeout=10,
    )


@contextmanager
def throwaway_vhost(amqp_uri: str, mgmt_url: str, prefix: str = "gridbus-bench") -> Iterator[tuple[str, str]]:
    """Create a vhost with full permissions for the URI's user; yield (AMQP URI of it,
    its name); delete it (and everything in it) afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    parsed = urlparse(amqp_uri)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"benchmarks target a local broker only, not {parsed.hostname}")
    user = parsed.username or "guest"
    with mgmt_client(mgmt_url) as api:
        try:
            api.put(f"/api/vhosts/{quote(name, safe='')}").raise_for_status()
        except httpx.HTTPError as exc:
            raise SystemExit(
                f"RabbitMQ management API not usable at {mgmt_url}: {exc} (rabbitmq-plugins enable rabbitmq_management)"
            ) from None
        try:
            api.put(
                f"/api/permissions/{quote(name, safe='')}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}
            ).raise_for_status()
            uri = urlunparse(parsed._replace(path="/" + quote(name, safe="")))
            _wait_for_vhost(uri)
            yield uri, name
        finally:
            api.delete(f"/api/vhosts/{quote(name, safe='')}")


def _wait_for_vhost(uri: str, timeout: float = 15.0) -> None:
    """A new vhost may refuse connections ("vhost not found") for a moment on a busy
    node; wait until one AMQP connection succeeds."""
    from shared.amqpclient import wait_for_broker

    wait_for_broker(uri, timeout, interval=0.3)


def delete_redis_prefix(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    n = 0
    try:
        batch = []
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += client.delete(*batch)
                batch = []
        if batch:
            n += client.delete(*batch)
    finally:
        client.close()
    return n


# ------------------------------------------------------------------ results
def result_path(kind: str, out: str | None) -> Path:
    if out:
        return Path(out)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def envelope(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The common head of every result file."""
    return {
        "schema": RESULT_SCHEMA,
        "kind": kind,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_describe(),
        "params": params,
    }


def write_result(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def wall() -> float:
    """The clock shared by every benchmark process (CLOCK_MONOTONIC is system-wide)."""
    return time.monotonic()
