"""The first orders after a start: how long the first few reports take, one at a time,
sent as soon as `gridbus up` would say the stack is ready.

    python -m bench.first_order [--reports 4] [--gap 0.3] [--old-readiness]

A fresh stack (own vhost, Redis key prefix, archive database and free ports, the five
services as processes, log in bench/results/first_order.log) per run. For each report: the POST's
time, the time from registration to the dispatch in the case's timeline (server side,
what a department waits), and when a polling client sees `dispatched`.
`--old-readiness`: ready as soon as /healthz and /metrics answer (before the consumers
attach), as `wait_until_ready` did before it also waited for the work queues' consumers.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from psycopg.conninfo import make_conninfo

from bench.common import REPO, bench_config_dir, delete_redis_prefix, throwaway_vhost
from bench.pipeline import SERVICES, stack_env
from services import demo
from services.archiver import db
from services.intake.auth import Role, create_key
from services.runner import start_all, stop_all
from shared.config import Settings, get_settings

RESULTS = Path(__file__).resolve().parent / "results"


def report(i: int) -> dict:
    return {
        "report_id": f"fo-{uuid.uuid4().hex[:10]}",
        "category": "01037",
        "description": "路灯不亮",
        "severity": "normal",
        "filing_condition": "连续3盏以上不亮",
        "location": {"lat": 25.20 + i * 0.003, "lon": 110.35, "address": "七星区辰山路", "grid": "450305001001001"},
        "reporter": {"id": "w-1", "role": "grid_officer"},
        "observed_at": "2026-11-27T09:30:00+08:00",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=4)
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between one dispatch and the next report")
    ap.add_argument("--old-readiness", action="store_true")
    args = ap.parse_args()
    base = get_settings()
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench{tag}"
    archive_dsn = make_conninfo(base.database_url, dbname=f"gridbus_bench_{tag}")
    db.prepare(archive_dsn)  # the archive in a database of its own, never the developer's
    work = Path(tempfile.mkdtemp(prefix="gridbus-first-"))
    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "first_order.log", "w")
    if args.old_readiness:
        demo.queues_without_consumer = lambda uri, queues: []  # type: ignore[assignment]
    procs: list[Any] = []
    try:
        with throwaway_vhost(base.amqp_uri, base.rabbitmq_management_url) as (vhost_uri, _name):
            config_dir = bench_config_dir(REPO / "config", work / "config")
            env = stack_env(vhost_uri, base.rabbitmq_management_url, base.redis_url, prefix, archive_dsn, config_dir, 9)
            settings = Settings(**cast(dict[str, Any], {k.lower(): v for k, v in env.items()}))
            procs = start_all(SERVICES, env=env, stdout=log.fileno())
            demo.wait_until_ready(settings, procs, timeout=120, services=SERVICES)
            client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
            key = create_key(client, Role.grid_app, prefix=prefix)[0]
            client.close()
            servers = _first_orders(settings, key, args.reports, args.gap)
            rest = sorted(servers[1:])
            if rest:
                print(
                    f"first {1000 * servers[0]:.0f} ms registered→dispatched, the rest median "
                    f"{1000 * rest[len(rest) // 2]:.0f} ms (load average {open('/proc/loadavg').read().split()[0]})"
                )
            stop_all(procs)
            procs = []
    finally:
        if procs:
            stop_all(procs)
        log.close()
        delete_redis_prefix(base.redis_url, prefix)
        shutil.rmtree(work, ignore_errors=True)
        db.drop_database(archive_dsn)


def _first_orders(settings: Settings, key: str, reports: int, gap: float) -> list[float]:
    """Send `reports` one at a time; print each; the server's registered→dispatched times (s)."""
    out: list[float] = []
    base = f"http://127.0.0.1:{settings.intake_http_port}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
        for i in range(reports):
            t0 = time.perf_counter()
            case_id = http.post("/v1/reports", json=report(i)).json()["case_id"]
            t1 = time.perf_counter()
            while (case := http.get(f"/v1/cases/{case_id}").json())["status"] == "registered":
                time.sleep(0.005)
            t2 = time.perf_counter()
            at = {e["action"]: datetime.fromisoformat(e["at"]) for e in case["timeline"]}
            server = (at["dispatch"] - datetime.fromisoformat(case["registered_at"])).total_seconds()
            out.append(server)
            print(
                f"report {i + 1}: POST {1000 * (t1 - t0):.0f} ms, registered→dispatched {1000 * server:.0f} ms, "
                f"seen dispatched after {1000 * (t2 - t0):.0f} ms",
                flush=True,
            )
            time.sleep(gap)
    return out


if __name__ == "__main__":
    main()
