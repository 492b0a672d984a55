"""The five services (the dispatch path and the archiver) as OS processes against the
private servers, supervised like a container runtime would: a service that exits (or is
killed) is started again after a short back-off. Each runs in its own process group so
that `kill -9` reaches it whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Callable

import httpx

from bench.chaos.nodes import kill_group, port_open
from bench.common import REPO, service_ports

SERVICES = ("intake", "router", "sla", "notifier", "archiver")

#: the queues each service consumes: attached consumers are its health until /healthz exists
SERVICE_QUEUES: dict[str, tuple[str, ...]] = {
    "intake": ("intake.reports", "intake.replies", "intake.events"),
    "router": ("router.cases",),
    "sla": ("sla.events",),
    "notifier": ("notifier.events", "notifier.deliveries"),
    "archiver": (),  # reads the stream gridbus.audit, whose consumers a broker does not count
}


#: what a webhook, an SMS provider and a WeCom/DingTalk robot each take as "sent"
OK_ANSWER = b'{"code": "OK", "errcode": 0, "errmsg": "ok", "message": "ok"}'


class WebhookSink:
    """Every channel's far end (webhooks, SMS provider, robots): answers 200 with what each
    takes as success, and counts (in this process)."""

    def __init__(self) -> None:
        self.hits = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(OK_ANSWER)))
                self.end_headers()
                self.wfile.write(OK_ANSWER)
                sink.hits += 1

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a notifier killed mid-request resets its connection: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook-sink").start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Service:
    name: str
    proc: subprocess.Popen | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes of exits we did not cause
    restart_at: float | None = None


class Stack:
    """Start, kill -9, restart and health-check the services.

    `supervise=True` restarts a service that exited on its own (what `restart: always`
    or a Deployment does) after `backoff_s`; `kill()` restarts after `restart_after_s`.
    """

    def __init__(
        self, env: dict[str, str], log: IO[bytes], mgmt: Callable[[], httpx.Client], backoff_s: float = 2.0
    ) -> None:
        self.env = env
        self.log = log
        self.mgmt = mgmt
        self.backoff_s = backoff_s
        self.services = {n: Service(n) for n in SERVICES}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[tuple[float, str, str]] = []  # (monotonic, service, what)

    # ------------------------------------------------------------------ processes
    def _spawn(self, svc: Service) -> None:
        svc.proc = subprocess.Popen(
            [sys.executable, "-m", "services.serve", svc.name],
            cwd=str(REPO),
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        svc.starts += 1
        svc.restart_at = None
        self.events.append((time.monotonic(), svc.name, f"started pid {svc.proc.pid}"))

    def start(self) -> None:
        with self._lock:
            for svc in self.services.values():
                self._spawn(svc)
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="chaos-supervisor")
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                for svc in self.services.values():
                    if svc.proc is not None and svc.restart_at is None and svc.proc.poll() is not None:
                        code = svc.proc.returncode
                        svc.exits.append(code)
                        self.events.append((now, svc.name, f"exited {code}"))
                        svc.restart_at = now + self.backoff_s
                    if svc.restart_at is not None and now >= svc.restart_at:
                        self._spawn(svc)

    def kill(self, name: str, restart_after_s: float) -> int:
        """kill -9 of the service's process group; it is started again after the delay."""
        with self._lock:
            svc = self.services[name]
            pid = svc.proc.pid if svc.proc else -1
            kill_group(svc.proc, signal.SIGKILL)
            svc.kills += 1
            svc.restart_at = time.monotonic() + restart_after_s
            self.events.append((time.monotonic(), name, f"killed pid {pid}"))
        return pid

    def stop(self, graceful_s: float = 0.0) -> None:
        """End every service (and whatever it left in its process group). The run's data
        is thrown away, so by default no graceful stop: SIGKILL at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if graceful_s > 0:
                for svc in self.services.values():
                    if svc.proc is not None and svc.proc.poll() is None:
                        try:
                            os.killpg(svc.proc.pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                deadline = time.monotonic() + graceful_s
                for svc in self.services.values():
                    if svc.proc is not None:
                        try:
                            svc.proc.wait(max(0.1, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            pass
            for svc in self.services.values():
                kill_group(svc.proc, signal.SIGKILL)

    # ------------------------------------------------------------------ health
    def health(self, name: str) -> tuple[bool, str]:
        """(healthy, why). `GET /healthz` on the metrics port when the service has one;
        otherwise: the process runs, its metrics port answers, and every queue it reads
        has a consumer attached (management API)."""
        svc = self.services[name]
        if svc.proc is None or svc.proc.poll() is not None:
            return False, "process not running"
        port = int(self.env[f"{name.upper()}_METRICS_PORT"])
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
        except httpx.HTTPError as exc:
            return False, f"metrics port: {type(exc).__name__}"
        if r.status_code == 200:
            return True, "healthz 200"
        if r.status_code != 404:
            return False, f"healthz {r.status_code}: {r.text[:200]}"
        if name == "intake" and not port_open(int(self.env["INTAKE_HTTP_PORT"])):
            return False, "intake HTTP port closed"
        try:
            with self.mgmt() as api:
                for q in SERVICE_QUEUES[name]:
                    info = api.get(f"/api/queues/%2F/{q}").json()
                    if not info.get("consumers"):
                        return False, f"no consumer on {q}"
        except (httpx.HTTPError, ValueError) as exc:
            return False, f"management API: {type(exc).__name__}"
        return True, "consumers attached (no /healthz)"

    def wait_healthy(self, timeout: float, names: tuple[str, ...] = SERVICES) -> dict[str, str]:
        """Wait until every named service is healthy; {service: why} of those still not."""
        deadline = time.monotonic() + timeout
        bad: dict[str, str] = {}
        while True:
            bad = {}
            for n in names:
                ok, why = self.health(n)
                if not ok:
                    bad[n] = why
            if not bad or time.monotonic() > deadline:
                return bad
            time.sleep(0.5)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            n: {"starts": s.starts, "kills": s.kills, "exits_on_its_own": s.exits} for n, s in self.services.items()
        }


def service_env(
    amqp_uri: str,
    mgmt_url: str,
    redis_env: dict[str, str],
    prefix: str,
    config_dir: Path,
    sink_port: int,
    log_level: str = "WARNING",
    database_url: str = "",
) -> dict[str, str]:
    """The environment of a chaos stack: private servers, free ports, its own config copy
    and PostgreSQL database (the archiver's). `redis_env`: REDIS_URL, or REDIS_SENTINELS
    (and REDIS_SENTINEL_MASTER)."""
    return {
        "DATABASE_URL": database_url,
        "AMQP_URI": amqp_uri,
        "RABBITMQ_MANAGEMENT_URL": mgmt_url,
        **redis_env,
        "REDIS_KEY_PREFIX": prefix,
        "CONFIG_DIR": str(config_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": log_level,
        **service_ports(),
        "WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{sink_port}/hooks/{{dept}}",
        "GRIDBUS_SMS_URL": f"http://127.0.0.1:{sink_port}/sms",
        "GRIDBUS_WECOM_ROBOT_URL": f"http://127.0.0.1:{sink_port}/wecom",
        "GRIDBUS_DINGTALK_ROBOT_URL": f"http://127.0.0.1:{sink_port}/dingtalk",
        "GRIDBUS_OPS_WEBHOOK_URL": f"http://127.0.0.1:{sink_port}/ops",
        "GRID_APP_WEBHOOK_URL": "",
        "PROMETHEUS_DISABLE_CREATED_SERIES": "1",
    }
