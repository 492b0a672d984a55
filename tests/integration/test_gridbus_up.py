"""`gridbus up` as a real process with its four real children: a child killed with -9 is
restarted (and healthy again), and `kill -TERM <gridbus up>` leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, Vhosts, free_port, wait_for

pytestmark = pytest.mark.integration


def processes_with(marker: str) -> list[int]:
    """PIDs of processes whose environment holds `marker` (our stack, and nothing else)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_up_restarts_a_dead_child_and_leaves_nothing_behind_on_sigterm(
    vhost_factory: Vhosts, redis_url: str, tmp_path: Path
) -> None:
    vhost = vhost_factory.make("up")
    marker = f"upt{uuid.uuid4().hex[:10]}"
    ports = {
        k: str(free_port())
        for k in (
            "INTAKE_HTTP_PORT",
            "INTAKE_METRICS_PORT",
            "ROUTER_METRICS_PORT",
            "SLA_METRICS_PORT",
            "NOTIFIER_METRICS_PORT",
            "ARCHIVER_METRICS_PORT",
            "BRIDGE_METRICS_PORT",
        )
    }
    env = {
        **os.environ,
        "AMQP_URI": vhost,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": marker,
        "LOG_FORMAT": "json",
        **ports,
    }
    log_path = tmp_path / "up.log"
    log = open(log_path, "w")
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--log-file", str(tmp_path / "services.log")],
        env=env,
        stdout=log,
        stderr=log,
        cwd=REPO,
    )
    text = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        assert wait_for(lambda: "gridbus is up" in text(), 90), text()[-4000:]
        started = dict(re.findall(r"(\w+) \(pid (\d+)\)", text().split("started ", 1)[1].splitlines()[0]))
        # the bridge only runs where a city platform is configured
        assert set(started) == {"intake", "router", "sla", "notifier", "archiver"}
        assert sorted(int(p) for p in started.values()) == sorted(p for p in processes_with(marker) if p != up.pid)

        os.kill(int(started["router"]), signal.SIGKILL)
        assert wait_for(lambda: "router restarted" in text(), 30), text()[-4000:]
        assert re.search(rf"router \(pid {started['router']}\) exited with -9 after \d+ s; restarting in 1 s", text())
        new_pid = int(re.search(r"router restarted \(pid (\d+), restart 1\)", text()).group(1))
        router_health = f"http://127.0.0.1:{ports['ROUTER_METRICS_PORT']}/healthz"

        def healthy() -> bool:
            try:
                return httpx.get(router_health, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(healthy, 60), text()[-4000:]
        assert up.poll() is None

        up.send_signal(signal.SIGTERM)
        assert up.wait(40) == 0, text()[-4000:]
        assert "stopped" in text()
        assert processes_with(marker) == [], f"left behind: {processes_with(marker)}"
        for pid in [new_pid, *map(int, started.values())]:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    finally:
        if up.poll() is None:
            up.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        log.close()
        time.sleep(0.5)
        vhost_factory.drop(vhost)
