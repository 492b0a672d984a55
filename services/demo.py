"""The demo: a few realistic reports from the pilot communities, fed to a running stack,
and what happens to each printed as it happens. Also the checks `gridbus up` makes
before it starts anything."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from datetime import datetime, timedelta
from typing import Callable, Sequence, cast
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import httpx

from shared.config import Settings, reset_settings

DEMO_REPORTS: list[dict] = [
    {
        "category": "03005",
        "description": "辰山社区辰山路口垃圾箱满溢，垃圾散落地面",
        "filing_condition": "满溢",
        "severity": "normal",
        "location": {"lat": 25.2800, "lon": 110.3120, "address": "七星区辰山路口", "grid": "450305001001001"},
        "reporter": {"id": "w-1024", "role": "part_time", "name": "环卫工 李", "phone": "13800001024"},
    },
    {
        "category": "01037",
        "description": "羊角山社区穿山路连续三盏路灯不亮",
        "filing_condition": "连续3盏以上不亮",
        "severity": "normal",
        "location": {"lat": 25.2590, "lon": 110.3330, "address": "七星区穿山路12号", "grid": "450305003002001"},
        "reporter": {"id": "g-0007", "role": "grid_officer", "name": "网格员 黄", "phone": "13900000007"},
    },
    {
        "category": "01002",
        "description": "辰山社区人行道污水井盖缺失，行人有坠落危险",
        "filing_condition": "缺失、移位、开裂，存在安全隐患的",
        "severity": "urgent",
        "location": {"lat": 25.2800, "lon": 110.3160, "address": "七星区辰山路8号旁人行道", "grid": "450305001001002"},
        "reporter": {"id": "g-0003", "role": "grid_officer", "name": "网格员 莫", "phone": "13900000003"},
    },
    {
        "category": "09009",
        "description": "羊角山社区小区门口机动车乱停放，堵塞消防通道",
        "severity": "normal",
        "location": {
            "lat": 25.2590,
            "lon": 110.3390,
            "address": "七星区羊角山路3号小区门口",
            "grid": "450305003002002",
        },
        "reporter": {"id": "c-5521", "role": "citizen", "name": "", "phone": ""},
    },
]


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _endpoint(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


DEPENDENCY_HINTS = {
    "rabbitmq": "RabbitMQ is not answering at {}:{} (AMQP_URI).",
    "redis": "Redis is not answering at {}:{} (REDIS_URL).",
    "postgres": "PostgreSQL is not answering at {}:{} (DATABASE_URL).",
}


def dependency_endpoints(settings: Settings) -> dict[str, tuple[str, int]]:
    return {
        "rabbitmq": _endpoint(settings.amqp_uri, 5672),
        "redis": _endpoint(settings.redis_url, 6379),
        "postgres": _endpoint(settings.database_url, 5432),
    }


def missing_dependencies(settings: Settings) -> list[str]:
    """Which of rabbitmq, redis, postgres do not answer. Where Docker exists, the
    missing ones are started with Docker Compose first (and then not missing)."""
    needed = dependency_endpoints(settings)
    missing = [name for name, (h, p) in needed.items() if not _reachable(h, p)]
    if missing and shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        subprocess.run(["docker", "compose", "-p", "gridbus", "up", "-d", *missing], check=False)
        if "rabbitmq" in missing:
            # the compose broker imports deploy/rabbitmq/base-definitions.json: user gridbus, no guest
            os.environ["AMQP_URI"] = "amqp://gridbus:gridbus@127.0.0.1:5672/%2F"
            os.environ["RABBITMQ_MANAGEMENT_URL"] = "http://gridbus:gridbus@127.0.0.1:15672"
            reset_settings()
        for _ in range(90):
            missing = [n for n in missing if not _reachable(*needed[n])]
            if not missing:
                break
            time.sleep(1)
    return missing


def check_dependencies(settings: Settings) -> list[str]:
    """Empty when RabbitMQ, Redis and PostgreSQL answer (after Docker Compose where
    Docker exists); otherwise a line for each that does not."""
    needed = dependency_endpoints(settings)
    return [DEPENDENCY_HINTS[n].format(*needed[n]) for n in missing_dependencies(settings)]


def queues_without_consumer(amqp_uri: str, queues: Sequence[str]) -> list[str]:
    """The queues (of `queues`) that do not exist yet or have no consumer attached."""
    from shared.amqpclient import AMQPError, connection, queue_info

    waiting = []
    try:
        with connection(amqp_uri) as conn:
            for queue in queues:
                info = queue_info(conn, queue)
                if info is None or info[1] < 1:  # not declared yet, or nobody reading
                    waiting.append(queue)
    except (OSError, AMQPError):
        return list(queues)
    return waiting


def wait_until_ready(
    settings: Settings,
    procs: Sequence[subprocess.Popen],
    timeout: float = 60.0,
    services: Sequence[str] = ("intake", "router", "sla", "notifier", "archiver"),
) -> None:
    """Until intake answers /healthz, every service serves /metrics and every service's
    work queues have their consumer: /metrics answers before a service's consumers
    start, and a report sent then would wait in `router.cases` for the router."""
    from shared import topology

    base = f"http://{settings.intake_http_host}:{settings.intake_http_port}"
    ports = [settings.metrics_port(s) for s in services]
    work = {
        "intake": [topology.Q_INTAKE_REPORTS, topology.Q_INTAKE_EVENTS],
        "router": [topology.Q_ROUTER_CASES],
        "sla": [topology.Q_SLA_EVENTS],
        "notifier": [topology.Q_NOTIFIER_EVENTS, topology.Q_NOTIFIER_DELIVERIES],
    }
    queues = [q for s in services for q in work.get(s, [])]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a service failed to start; see its log above")
        try:
            if (
                httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                and all(_reachable(settings.metrics_host, port) for port in ports)
                and not queues_without_consumer(settings.amqp_uri, queues)
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the stack did not become ready within {timeout:.0f} s")


def _local(value: str | None, tz: ZoneInfo) -> str:
    if not value:
        return "?"
    return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _describe(case: dict, tz: ZoneInfo) -> str:
    if case.get("duplicate_of"):
        return f"duplicate of open case {case['duplicate_of']} nearby: linked, not dispatched again"
    active = [a for a in case.get("assignments", []) if a.get("active")]
    if not active:
        return case["status"]
    parts = []
    for a in active:
        parts.append(
            f"{a['dept']} (level {a['level']}, route {a['route']}, 721 mode {a['mode']}; "
            f"acknowledge by {_local(a.get('ack_due'), tz)}, handle by {_local(a.get('handle_due'), tz)})"
        )
    return f"{case['status']} → " + "; ".join(parts)


def _stashed_key(settings: Settings, role: str, stash_name: str, name: str) -> str:
    from services.intake.auth import AuthError, Role, authenticate_key, create_key
    from shared.redisdb import connect

    client = connect(settings)
    stash = f"{settings.redis_key_prefix}:demo:{stash_name}"
    key = cast(str | None, client.get(stash))
    if key:
        try:
            authenticate_key(key, client)
            return key
        except AuthError:  # revoked meanwhile: make a new one
            pass
    key, _ = create_key(client, Role(role), name=name, prefix=settings.redis_key_prefix)
    client.set(stash, key)
    return key


def demo_key(settings: Settings) -> str:
    """The grid app's key for the demo: GRIDBUS_API_KEY, or a grid_app key created once
    and kept in Redis, so repeated demos do not pile up keys."""
    if settings.gridbus_api_key.get_secret_value():
        return settings.gridbus_api_key.get_secret_value()
    return _stashed_key(settings, "grid_app", "apikey", "gridbus demo")


def console_key(settings: Settings) -> str:
    """An ops key for the console and the Try-it commands, created once like demo_key."""
    return _stashed_key(settings, "ops", "opskey", "gridbus demo console")


def _previous_cases(settings: Settings) -> list[str]:
    from shared.redisdb import connect

    return list(cast(set[str], connect(settings).smembers(f"{settings.redis_key_prefix}:demo:cases")))


def _remember_cases(settings: Settings, case_ids: list[str]) -> None:
    from shared.redisdb import connect

    client, name = connect(settings), f"{settings.redis_key_prefix}:demo:cases"
    pipe = client.pipeline()
    pipe.delete(name)
    if case_ids:
        pipe.sadd(name, *case_ids)
    pipe.execute()


def withdraw_previous(settings: Settings, client: httpx.Client, ops_key: str) -> int:
    """Cancel the previous demo's cases that are still open, through the API's
    cancellation endpoint: otherwise the same reports at the same places would be linked
    to them as duplicates and not dispatched again."""
    withdrawn = 0
    auth = {"Authorization": f"Bearer {ops_key}"}
    for case_id in _previous_cases(settings):
        r = client.post(
            f"/v1/cases/{case_id}/cancellation",
            json={"reason": "演示数据：新一轮演示前撤销"},
            headers={**auth, "Idempotency-Key": f"demo-reset:{case_id}"},
        )
        withdrawn += r.status_code == 200 and r.json().get("applied", False)
    return withdrawn


def run_demo(
    settings: Settings, echo: Callable[[str], None] = print, wait_s: float = 10.0, reset: bool = True
) -> list[dict]:
    """POST the demo reports and follow each case until it is dispatched. With `reset`,
    the previous demo's open cases are withdrawn first, so each run dispatches anew."""
    base = f"http://{settings.intake_http_host}:{settings.intake_http_port}"
    tz = ZoneInfo(settings.timezone)
    now = datetime.now(tz)
    results = []
    headers = {"Authorization": f"Bearer {demo_key(settings)}"}
    with httpx.Client(base_url=base, timeout=5, headers=headers) as client:
        if reset:
            withdrawn = withdraw_previous(settings, client, console_key(settings))
            if withdrawn:
                echo(f"(withdrew {withdrawn} open case(s) of the previous demo run)")
        for i, template in enumerate(DEMO_REPORTS):
            report = {
                **template,
                "report_id": f"demo-{uuid.uuid4().hex[:12]}",
                "observed_at": (now - timedelta(minutes=5 * (i + 1))).isoformat(),
            }
            r = client.post("/v1/reports", json=report)
            if r.status_code >= 400:
                echo(f"✗ {report['description'][:24]}…: HTTP {r.status_code} {r.text}")
                continue
            case_id = r.json()["case_id"]
            echo(f"→ {case_id}  {report['category']} {report['description']}")
            results.append({"case_id": case_id, "report": report})
        _remember_cases(settings, [item["case_id"] for item in results])
        for item in results:
            deadline = time.monotonic() + wait_s
            case: dict = {}
            while time.monotonic() < deadline:
                case = client.get(f"/v1/cases/{item['case_id']}").json()
                if case.get("status") != "registered":
                    break
                time.sleep(0.2)
            item["case"] = case
    echo("")
    echo(f"Demo summary (times in {settings.timezone}, UTC{now.strftime('%z')[:3]}):")
    for item in results:
        echo(f"  {item['case_id']}: {_describe(item['case'], tz) if item.get('case') else 'not found'}")
    return results


def next_steps(settings: Settings, log_path: str | None) -> list[str]:
    """What a newcomer can do next with the running stack (printed after the demo)."""
    base = f"http://{settings.intake_http_host}:{settings.intake_http_port}"
    lines = [
        "Next steps (another terminal, from this folder; PATH=$PWD/.venv/bin:$PATH):",
        f"  console      {base}/console   log in with the demo's ops key {console_key(settings)}",
        "               (or your own: gridbus keys create --role ops)",
        f'  API          {base}/openapi.json   (README "Try it": a report, a case, a department reply)',
        "  messages     gridbus sink   shows the messages people would get (set WEBHOOK_URL_TEMPLATE as it says)",
        "  audit        gridbus audit show --case <case_id>",
    ]
    if log_path:
        lines.append(f"  service logs {log_path}")
    return lines


def wait_for_notifier(settings: Settings, timeout: float = 15.0) -> bool:
    """Until the notifier's work queues are empty (stopping earlier cuts deliveries off
    mid-way, and the next start replays them). False if they were not within `timeout`."""
    from shared import topology
    from shared.amqpclient import AMQPError, connection, queue_depth

    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        try:
            with connection(settings.amqp_uri) as conn:
                depths = [
                    queue_depth(conn, q)
                    for q in (topology.Q_NOTIFIER_EVENTS, topology.Q_NOTIFIER_DELIVERIES, topology.Q_SLA_EVENTS)
                ]
        except (OSError, AMQPError):
            return False
        if None in depths:  # a queue is not declared: the notifier is not there to wait for
            return False
        busy = sum(d or 0 for d in depths)
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:  # a delivery in flight is unacked, not counted: wait a beat
            return True
        time.sleep(0.2)
    return False


# -- ports ---------------------------------------------------------------------------
def port_holder(port: int) -> str | None:
    """Which process listens on a TCP port (Linux /proc), e.g. `pid 123 (python -m …)`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                        inodes.add(cols[9])
        except OSError:
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid} ({cmd[:120]})"
        except OSError:
            continue
    return "another user's process"


def busy_ports(settings: Settings) -> list[str]:
    """A line per port the stack needs that something already holds, naming the holder."""
    wanted = [("intake's HTTP API", "INTAKE_HTTP_PORT", settings.intake_http_host, settings.intake_http_port)]
    for s in ("intake", "router", "sla", "notifier", "archiver"):
        wanted.append((f"{s}'s /metrics", f"{s.upper()}_METRICS_PORT", settings.metrics_host, settings.metrics_port(s)))
    problems = []
    for what, variable, host, port in wanted:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
                continue
            except OSError:
                pass
        holder = port_holder(port) or "a process this user cannot see"
        problems.append(f"port {port} ({what}, {variable}) is in use by {holder}: stop it, or set {variable}.")
    return problems
