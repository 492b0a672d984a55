"""The stack at rest: how much CPU it takes when nothing happens, and who wakes up.

    gridbus bench idle [--settle 10] [--window 30]      (or python -m bench.idle …)

A fresh stack as the pipeline benchmark starts it (the five services of `gridbus up`,
own vhost, Redis key prefix, archive database and config copy), left alone: after it is
ready and `--settle` seconds more (start-up work done), the CPU time of each service
process (/proc/<pid>/stat) is read over `--window` seconds, and with it

- each service's entrypoint runs in the window (its `/metrics` handler counts): the
  timers that wake it up, how often, and their mean time — the pollers;
- the broker work of the stack's vhost in the window (publishes, deliveries: both
  should be 0) and the AMQP frames its connections exchanged (heartbeats, polls);
- RabbitMQ's and Redis's CPU in the window, for the record only: they serve every
  other user of the machine too, so it is not the stack's.

The target (issue 16): the services together below 2 % of one core.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, cast
from urllib.parse import quote

from bench import brokerwork
from bench import profile as prof
from bench.common import (
    REPO,
    bench_config_dir,
    cpu_seconds,
    delete_redis_prefix,
    envelope,
    infrastructure_pids,
    machine_busy_seconds,
    mgmt_client,
    result_path,
    throwaway_vhost,
    write_result,
)
from bench.pipeline import SERVICES, scrape_service_metrics, stack_env

TARGET_SHARE = 0.02  #: of one core, the services together


def _connection_frames(mgmt_url: str, vhost: str) -> dict[str, int]:
    with mgmt_client(mgmt_url) as api:
        rows = api.get(
            f"/api/vhosts/{quote(vhost, safe='')}/connections", params={"columns": "name,recv_cnt,send_cnt"}
        ).json()
    return {
        "connections": len(rows),
        "frames_in": sum(int(r.get("recv_cnt") or 0) for r in rows),
        "frames_out": sum(int(r.get("send_cnt") or 0) for r in rows),
    }


def _runs(metrics: dict[str, Any]) -> dict[str, dict[str, tuple[int, float]]]:
    return {
        svc: {ep: (h["count"], h["mean_ms"]) for ep, h in (info.get("handler") or {}).items()}
        for svc, info in metrics.items()
    }


def run_idle(
    *,
    amqp_uri: str,
    mgmt_url: str,
    redis_url: str,
    database_url: str,
    settle_s: float = 10.0,
    window_s: float = 30.0,
    profile: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    from psycopg.conninfo import make_conninfo

    from services.archiver import db
    from services.demo import wait_until_ready
    from services.runner import start_all, stop_all
    from shared.config import Settings

    result = envelope("idle", {"settle_s": settle_s, "window_s": window_s})
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench{tag}"
    work = Path(tempfile.mkdtemp(prefix="gridbus-idle-"))
    log_path = REPO / "bench" / "results" / f"idle-{time.strftime('%Y%m%d-%H%M%S')}-{tag}.services.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    archive_dsn = make_conninfo(database_url, dbname=f"gridbus_bench_{tag}")
    db.prepare(archive_dsn)
    procs: list[Any] = []
    profiles: dict[str, Any] = {}
    log_file = open(log_path, "w")
    try:
        with throwaway_vhost(amqp_uri, mgmt_url) as (vhost_uri, vhost_name):
            config_dir = bench_config_dir(REPO / "config", work / "config")
            # no webhook is sent at rest: the sink's port is never connected to
            env = stack_env(vhost_uri, mgmt_url, redis_url, prefix, archive_dsn, config_dir, 9)
            settings = Settings(**cast(dict[str, Any], {k.lower(): v for k, v in env.items()}))
            echo(f"starting the services in vhost {vhost_name} (log: {log_path})")
            procs = start_all(SERVICES, env=env, stdout=log_file.fileno())
            wait_until_ready(settings, procs, timeout=120, services=SERVICES)
            echo(f"ready; settling {settle_s:g} s, then measuring {window_s:g} s")
            time.sleep(settle_s)
            pids = {name: p.pid for name, p in zip(SERVICES, procs, strict=True)}
            infra = infrastructure_pids(mgmt_url, redis_url)
            ports = {s: settings.metrics_port(s) for s in SERVICES}

            def snapshot() -> dict[str, Any]:
                with mgmt_client(mgmt_url) as api:
                    counters = brokerwork.read_counters(api, vhost_name)
                return {
                    "t": time.monotonic(),
                    "cpu": {k: cpu_seconds(v) for k, v in {**pids, **infra}.items()},
                    "machine": machine_busy_seconds(),
                    "runs": _runs(scrape_service_metrics(ports)),
                    "frames": _connection_frames(mgmt_url, vhost_name),
                    "counters": counters,
                }

            profilers = {}
            if profile:  # py-spy on each service for the window: where its idle CPU goes
                for name, pid in pids.items():
                    pp = prof.start(pid, window_s, work / f"{name}.pyspy.txt")
                    if pp is not None:
                        profilers[name] = pp
            a = snapshot()
            time.sleep(window_s)
            b = snapshot()
            for name, pp in profilers.items():
                pp.wait(timeout=60)
                path = work / f"{name}.pyspy.txt"
                profiles[name] = prof.summarize(path.read_text() if path.exists() else "")
            exits = {n: p.returncode for n, p in zip(SERVICES, procs, strict=True) if p.poll() is not None}
            stop_all(procs)
            procs = []
    finally:
        if procs:
            stop_all(procs)
        log_file.close()
        delete_redis_prefix(redis_url, prefix)
        shutil.rmtree(work, ignore_errors=True)
        try:
            db.drop_database(archive_dsn)
        except Exception as exc:
            echo(f"could not drop the bench's archive database: {exc}")
    result.update(analyse(a, b))
    if profiles:
        result["profile"] = profiles
    result["service_exits"] = exits
    result["services_log"] = str(log_path)
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


def analyse(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Shares of one core over the window and entrypoint runs per second, from two snapshots."""
    span = b["t"] - a["t"]
    share = {
        k: round((b["cpu"][k] - a["cpu"][k]) / span, 4)
        for k in b["cpu"]
        if a["cpu"].get(k) is not None and b["cpu"].get(k) is not None
    }
    services = round(sum(v for k, v in share.items() if k in SERVICES), 4)
    runs: dict[str, dict[str, Any]] = {}
    for svc, eps in b["runs"].items():
        for ep, (count, mean_ms) in eps.items():
            n = count - a["runs"].get(svc, {}).get(ep, (0, 0.0))[0]
            if n > 0:
                runs.setdefault(svc, {})[ep] = {"per_s": round(n / span, 2), "mean_ms": mean_ms}
    d = brokerwork.delta(a["counters"], b["counters"])
    return {
        "window_s": round(span, 1),
        "cpu_share_of_one_core": {k: v for k, v in share.items() if k in SERVICES},
        "services_share_of_one_core": services,
        "target_share_of_one_core": TARGET_SHARE,
        "within_target": services < TARGET_SHARE,
        "shared_servers_share_of_one_core": {k: v for k, v in share.items() if k not in SERVICES},
        "machine_share_of_one_core": round((b["machine"] - a["machine"]) / span, 3) if a["machine"] else None,
        "entrypoint_runs": runs,
        "broker": {
            "publishes": d["vhost"].get("publish", 0),
            "deliveries": d["vhost"].get("deliver_get", 0),
            "connections": b["frames"]["connections"],
            "frames_in_per_s": round((b["frames"]["frames_in"] - a["frames"]["frames_in"]) / span, 2),
            "frames_out_per_s": round((b["frames"]["frames_out"] - a["frames"]["frames_out"]) / span, 2),
        },
    }


def summary_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        f"idle stack, {r['window_s']} s window: services {r['services_share_of_one_core']:.2%} of one core "
        f"(target < {r['target_share_of_one_core']:.0%}: {'met' if r['within_target'] else 'NOT met'}); "
        + ", ".join(f"{k} {v:.2%}" for k, v in r["cpu_share_of_one_core"].items()),
        "  shared servers (every user of the machine, not the stack's alone): "
        + ", ".join(f"{k} {v:.2%}" for k, v in r["shared_servers_share_of_one_core"].items())
        + f"; machine {r['machine_share_of_one_core']} cores; load average "
        + " ".join(r["machine"].get("loadavg", []))
        + " → "
        + " ".join(r["machine"].get("loadavg_end", [])),
        f"  broker, the stack's vhost: {r['broker']['publishes']} publishes, {r['broker']['deliveries']} deliveries, "
        f"{r['broker']['connections']} connections, frames in/out {r['broker']['frames_in_per_s']}/"
        f"{r['broker']['frames_out_per_s']} per s",
    ]
    for name, pr in (r.get("profile") or {}).items():
        if pr.get("samples"):
            top = ", ".join(f"{k} {v['share']:.0%}" for k, v in list(pr["buckets"].items())[:5])
            lines.append(f"  profile {name}: {pr['samples']} samples; {top}")
    for svc, eps in r["entrypoint_runs"].items():
        lines.append(
            f"  {svc} wake-ups: "
            + ", ".join(f"{ep} {v['per_s']}/s × {v['mean_ms']} ms" for ep, v in sorted(eps.items()))
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from shared.config import get_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after ready before measuring")
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured")
    ap.add_argument("--profile", action="store_true", help="py-spy each service for the window")
    ap.add_argument("--out", default=None, help="result JSON [bench/results/idle-<time>.json]")
    args = ap.parse_args(argv)
    s = get_settings()
    result = run_idle(
        amqp_uri=s.amqp_uri,
        mgmt_url=s.rabbitmq_management_url,
        redis_url=s.redis_url,
        database_url=s.database_url,
        settle_s=args.settle,
        window_s=args.window,
        profile=args.profile,
    )
    path = write_result(result, result_path("idle", args.out))
    for line in summary_lines(result):
        print(line)
    print(f"result: {path}")
    return result


if __name__ == "__main__":
    main()
