"""The first orders after a start: how long the first few reports take, one at a time,
sent as soon as `gridbus up` would say the stack is ready.

    python -m bench.first_order [--reports 4] [--gap 0.3] [--old-readiness]

A fresh stack (own vhost, Redis key prefix and free ports, the four services as
processes, log in bench/results/first_order.log) per run. For each report: the POST's
time, the time from registration to the dispatch in the case's timeline (server side,
what a department waits), and when a polling client sees `dispatched`.
`--old-readiness`: ready as soon as /healthz and /metrics answer (before the consumers
attach), as `wait_until_ready` did before it also waited for the work queues' consumers.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from bench.pipeline import free_port
from services import demo
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
    base_settings = get_settings()
    mgmt = httpx.URL(base_settings.rabbitmq_management_url)
    vhost = f"gridbus-bench-{uuid.uuid4().hex[:8]}"
    api = httpx.Client(base_url=f"{mgmt.scheme}://{mgmt.host}:{mgmt.port}", auth=(mgmt.username, mgmt.password))
    api.put(f"/api/vhosts/{vhost}").raise_for_status()
    user = httpx.URL(base_settings.amqp_uri).username or "guest"
    api.put(
        f"/api/permissions/{vhost}/{user}", json={"configure": ".*", "write": ".*", "read": ".*"}
    ).raise_for_status()
    root = httpx.URL(base_settings.amqp_uri)
    env = {
        "AMQP_URI": str(root.copy_with(path=f"/{vhost}")),
        "REDIS_URL": base_settings.redis_url,
        "REDIS_KEY_PREFIX": f"bench{uuid.uuid4().hex[:6]}",
        "LOG_FORMAT": "json",
        **{f"{s}_METRICS_PORT": str(free_port()) for s in ("INTAKE", "ROUTER", "SLA", "NOTIFIER")},
        "INTAKE_HTTP_PORT": str(free_port()),
    }
    settings = Settings(**cast(dict[str, Any], {k.lower(): v for k, v in env.items()}))
    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "first_order.log", "w")
    if args.old_readiness:
        demo.queues_without_consumer = lambda uri, queues: []  # type: ignore[assignment]
    procs = start_all(env=env, stdout=log.fileno())
    try:
        demo.wait_until_ready(settings, procs, timeout=90)
        client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        key = create_key(client, Role.grid_app, prefix=env["REDIS_KEY_PREFIX"])[0]
        base = f"http://127.0.0.1:{settings.intake_http_port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            for i in range(args.reports):
                t0 = time.perf_counter()
                case_id = http.post("/v1/reports", json=report(i)).json()["case_id"]
                t1 = time.perf_counter()
                while (case := http.get(f"/v1/cases/{case_id}").json())["status"] == "registered":
                    time.sleep(0.005)
                t2 = time.perf_counter()
                at = {e["action"]: datetime.fromisoformat(e["at"]) for e in case["timeline"]}
                server = (at["dispatch"] - datetime.fromisoformat(case["registered_at"])).total_seconds()
                print(
                    f"report {i + 1}: POST {1000 * (t1 - t0):.0f} ms, registered→dispatched {1000 * server:.0f} ms, "
                    f"seen dispatched after {1000 * (t2 - t0):.0f} ms",
                    flush=True,
                )
                time.sleep(args.gap)
    finally:
        stop_all(procs)
        log.close()
        api.delete(f"/api/vhosts/{vhost}")
        prefix = env["REDIS_KEY_PREFIX"]
        r = redis.Redis.from_url(env["REDIS_URL"])
        for k in r.scan_iter(f"{prefix}:*", count=1000):
            r.delete(k)


if __name__ == "__main__":
    main()
