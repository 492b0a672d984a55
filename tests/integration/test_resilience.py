"""Faults on the real broker and a real, throwaway Redis: a service holds its messages
while Redis is gone and handles them when it is back (nothing dead-lettered), reports
it on /healthz, and exits non-zero when it can no longer do its job.

Each test runs the service as a process (`python -m services.serve …`) on a fresh vhost;
the Redis that is stopped and restarted is our own `redis-server` on a free port (never
the machine's)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote, urlparse

import httpx
import pytest
import redis

from shared import amqpclient, topology
from shared.amqpclient import ConfirmChannel, connection
from tests.conftest import REPO, Vhosts, free_port, service_ports, wait_for

pytestmark = pytest.mark.integration


class ThrowawayRedis:
    """A redis-server of our own on a free loopback port, which tests kill and restart."""

    def __init__(self, workdir: Path) -> None:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        assert wait_for(up, 10), "throwaway redis-server did not start"
        client.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.kill()


class Service:
    """One gridbus service as a process, with its log kept for the assertion messages."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, argv: list[str] | None = None) -> None:
        self.name = name
        self.metrics_port = int(env[f"{name.upper()}_METRICS_PORT"])
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "services.serve", name],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=self.log,
            cwd=REPO,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5)
        except httpx.HTTPError:
            return 0, {}
        return r.status_code, r.json()

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self, tail: int = 6000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def count(self, event: str) -> int:
        return self.logs(tail=10**9).count(f'"event": "{event}"')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def service_env(vhost: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "AMQP_URI": vhost,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"res{uuid.uuid4().hex[:8]}",
        "LOG_FORMAT": "json",
        **service_ports(),
        **extra,
    }


def queue_depth(vhost: str, queue: str) -> int:
    with connection(vhost) as conn:
        depth = amqpclient.queue_depth(conn, queue)
    assert depth is not None, f"{queue} is not declared"
    return depth


def report(n: int) -> dict[str, Any]:
    return {
        "report_id": f"res-{uuid.uuid4().hex[:10]}",
        "category": "01037",
        "description": "穿山路连续三盏路灯不亮",
        "severity": "normal",
        "filing_condition": "连续3盏以上不亮",
        "location": {
            "lat": round(25.2 + n * 0.002, 6),
            "lon": 110.35,
            "address": "七星区辰山路",
            "grid": "450305001001001",
        },
        "reporter": {"id": "w-1024", "role": "grid_officer"},
        "observed_at": "2026-11-27T09:30:00+08:00",
    }


def publish_reports(vhost: str, n: int) -> None:
    publisher = ConfirmChannel(vhost)
    try:
        for i in range(n):
            publisher.publish_one(
                topology.EX_REPORTS,
                topology.RK_REPORT,
                json.dumps(report(i)).encode(),
                content_type="application/json",
                delivery_mode=2,
                message_id=uuid.uuid4().hex,
            )
    finally:
        publisher.close()


def close_connections(mgmt_api: httpx.Client, vhost: str) -> int:
    """Close every client connection of `vhost` from the broker side (as a broker restart
    or a network cut would)."""
    name = unquote(urlparse(vhost).path[1:])
    conns = mgmt_api.get(f"/api/vhosts/{quote(name, safe='')}/connections").json()
    for c in conns:
        mgmt_api.delete(f"/api/connections/{quote(c['name'], safe='')}")
    return len(conns)


def test_a_redis_outage_holds_messages_and_loses_none(
    vhost_factory: Vhosts, own_redis: ThrowawayRedis, mgmt_api: httpx.Client, tmp_path: Path
) -> None:
    """Held messages survive their channel too: the connections are cut while Redis is
    down, the broker hands the messages out again, the service holds them again and stays
    up (acking on the dead channel would have killed its container). Then its queue is
    deleted and comes back; finally the broker refuses it for good, and the process exits
    non-zero."""
    vhost = vhost_factory.make("resil")
    # CONSUMER_REATTACH_SECONDS above REDECLARE_EVERY_S (10 s): a consumer whose queue was
    # deleted declares the topology again at most every 10 s, and must not give up before that
    env = service_env(vhost, own_redis.url, CONSUMER_REATTACH_SECONDS="15")
    intake = Service("intake", env, tmp_path / "intake.log")
    try:
        assert wait_for(lambda: intake.health()[0] == 200, 60), intake.logs()
        own_redis.kill()
        status, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(intake.health()), 15) or (0, {})
        assert status == 503 and "redis" in body.get("failing", []), (status, body)

        publish_reports(vhost, 6)
        # far longer than the old requeue loop needed to burn the delivery limit (milliseconds)
        assert wait_for(lambda: intake.metric("gridbus_consumer_held_messages", queue="intake.reports") == 6, 15), (
            intake.logs()
        )
        # a negative: held messages never reach the dead-letter queue (the old requeue loop
        # burnt the delivery limit in milliseconds, so 2 s is ample)
        time.sleep(2)
        assert queue_depth(vhost, topology.dead_queue(topology.Q_INTAKE_REPORTS)) == 0
        assert intake.metric("gridbus_consumer_stalls_total", queue="intake.reports", dependency="redis") == 1
        assert queue_depth(vhost, topology.Q_ROUTER_CASES) == 0

        assert wait_for(lambda: close_connections(mgmt_api, vhost), 10)
        assert wait_for(lambda: intake.health()[1].get("checks", {}).get("consumers", {}).get("ok"), 30), intake.logs()
        assert wait_for(lambda: intake.metric("gridbus_consumer_held_messages", queue="intake.reports") == 6, 20), (
            intake.logs()
        )  # the same six, delivered again on the new channel, held again
        assert "held_message_released" in intake.logs()

        own_redis.start()  # same port, same AOF directory
        assert wait_for(lambda: queue_depth(vhost, topology.Q_ROUTER_CASES) == 6, 30), intake.logs()
        assert wait_for(lambda: intake.metric("gridbus_consumer_held_messages", queue="intake.reports") == 0, 10)
        assert queue_depth(vhost, topology.dead_queue(topology.Q_INTAKE_REPORTS)) == 0
        assert queue_depth(vhost, topology.Q_INTAKE_REPORTS) == 0
        assert wait_for(lambda: intake.health()[0] == 200, 15), intake.health()
        lines = [json.loads(line) for line in intake.logs(tail=10**9).splitlines() if line.startswith("{")]
        assert sum(1 for line in lines if line.get("event") == "consumer_stalled") == 1
        assert any(line.get("event") == "consumer_recovered" for line in lines)
        assert intake.proc.poll() is None

        # A queue deleted under the consumer (a broker that came back without its data):
        # the service declares the topology again when it reconnects and consumes on.
        attached = intake.count("consumers_attached")
        with connection(vhost) as conn:
            amqpclient.channel(conn).queue_delete(topology.Q_INTAKE_EVENTS)
        assert wait_for(lambda: intake.count("consumers_attached") > attached, 30), intake.logs()
        assert wait_for(lambda: intake.health()[0] == 200, 30), (intake.health(), intake.logs())
        assert queue_depth(vhost, topology.Q_INTAKE_EVENTS) == 0  # it exists again

        # Then a consumer that cannot get its channel back: the broker refuses it reading.
        # kombu reconnects forever and consumes nothing; /healthz says so, and after
        # CONSUMER_REATTACH_SECONDS the process exits non-zero for its supervisor to restart.
        name = quote(unquote(urlparse(vhost).path[1:]), safe="")
        mgmt_api.put(
            f"/api/permissions/{name}/guest", json={"configure": "^$", "write": ".*", "read": "^$"}
        ).raise_for_status()
        # (the management API lists a new connection a few seconds late: close until it is gone)
        assert wait_for(
            lambda: close_connections(mgmt_api, vhost) < 0 or intake.proc.poll() is not None, 45, interval=1
        ), intake.logs()
        intake.proc.wait(5)
        assert intake.proc.returncode == 1, intake.logs()
        assert "service_failed" in intake.logs()
    finally:
        intake.stop()
        vhost_factory.drop(vhost)


CRASHY = """
import eventlet
eventlet.monkey_patch()
import sys
from services import runner
runner.SERVICE_CLASSES["router"] = "tests.integration.crashing_service:CrashingService"
sys.exit(runner.run_service("router"))
"""


def test_a_dead_container_ends_the_process(vhost_factory: Vhosts, redis_url: str, tmp_path: Path) -> None:
    """An exception in an extension kills the nameko container (nameko: "any unhandled
    exception … in the worker lifecycle"): the process must not live on without it."""
    vhost = vhost_factory.make("resil")
    service = Service(
        "router", service_env(vhost, redis_url), tmp_path / "crashy.log", argv=[sys.executable, "-c", CRASHY]
    )
    try:
        assert wait_for(lambda: service.health()[0] == 200, 60), service.logs()
        publisher = ConfirmChannel(vhost)
        # first a bug: tried 5 times with back-off, then dead-lettered with the reason
        publisher.publish_one(
            topology.EX_EVENTS,
            topology.RK_CASE_REGISTERED,
            b'{"bug": true}',
            content_type="application/json",
            message_id="bug-1",
        )
        dead = topology.dead_queue(topology.Q_ROUTER_CASES)
        got = wait_for(lambda: publisher.channel.basic_get(dead, no_ack=True) if queue_depth(vhost, dead) else None, 20)
        assert got is not None, service.logs()
        headers = amqpclient.props(got)["headers"]
        reason = headers["x-gridbus-reason"]
        assert reason.startswith("handler failed 5 times: KeyError"), reason
        assert headers["x-gridbus-error"] == "handler_error"
        assert service.proc.poll() is None
        publisher.publish_one(
            topology.EX_EVENTS, topology.RK_CASE_REGISTERED, b'{"crash": true}', content_type="application/json"
        )
        publisher.close()
        service.proc.wait(30)
        assert service.proc.returncode == 1, service.logs()
        assert "container died" in service.logs()
    finally:
        service.stop()
        vhost_factory.drop(vhost)


def test_a_hung_redis_is_an_outage_not_a_hang(own_redis: ThrowawayRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that stops answering (SIGSTOP) makes commands fail after
    REDIS_SOCKET_TIMEOUT_SECONDS with an error the consumers hold messages for."""
    from shared.config import reset_settings
    from shared.redisdb import connect
    from shared.resilience import transient_dependency

    monkeypatch.setenv("REDIS_URL", own_redis.url)
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_SECONDS", "0.5")
    reset_settings()
    client = connect()
    assert client.ping()
    assert own_redis.proc is not None
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError) as caught:
            client.set("gridbus-hung-probe", "1")
        assert time.monotonic() - started < 3
        assert transient_dependency(caught.value) == "redis"
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        client.close()
        reset_settings()


def test_a_stopped_tick_loop_ends_the_sla_process(
    vhost_factory: Vhosts, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """sla's watchdog tells a tick loop that fails from one that stopped. A real sla process
    (`python -m services.serve sla`) on the real broker and our own redis-server:

    - Redis killed: every tick fails at once (connection refused) but the loop runs, so the
      process stays up well past SLA_TICK_STALE_SECONDS (the `redis` check reports it);
    - Redis frozen (SIGSTOP, the server alive but answering nothing) with
      REDIS_SOCKET_TIMEOUT_SECONDS above the staleness limit: the tick hangs inside its
      Redis call, the loop stops, and the process exits non-zero within the limit (plus
      the watchdog's second and the kill's bound) for its supervisor to restart it."""
    stale_s = 3.0
    vhost = vhost_factory.make("tick")
    env = service_env(
        vhost,
        own_redis.url,
        SLA_TICK_STALE_SECONDS=str(stale_s),
        REDIS_SOCKET_TIMEOUT_SECONDS="120",
        LOG_LEVEL="INFO",
    )
    sla = Service("sla", env, tmp_path / "sla.log")
    assert own_redis.proc is not None
    try:
        assert wait_for(lambda: sla.health()[0] == 200, 60), sla.logs()

        own_redis.kill()
        time.sleep(3 * stale_s)
        assert sla.proc.poll() is None, sla.logs()
        status, body = sla.health()
        assert status == 503 and body["checks"]["tick"]["ok"], body  # failing on redis, ticking on

        own_redis.start()  # same port and AOF directory
        assert wait_for(lambda: sla.health()[0] == 200, 30), (sla.health(), sla.logs())

        own_redis.proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        code = sla.proc.wait(stale_s + 1.0 + 3.0 + 10.0)  # limit, watchdog period, kill bound, a loaded machine
        assert code == 1, sla.logs()
        assert time.monotonic() - frozen >= stale_s
        failed = [
            json.loads(line)
            for line in sla.logs(tail=10**9).splitlines()
            if line.startswith("{") and '"service_failed"' in line
        ]
        assert len(failed) == 1 and failed[0]["reason"].startswith("tick: last ran"), failed
    finally:
        if own_redis.proc is not None and own_redis.proc.poll() is None:
            own_redis.proc.send_signal(signal.SIGCONT)
        sla.stop()
        vhost_factory.drop(vhost)


def test_a_stall_with_nothing_held_ends_when_its_dependency_is_back(
    vhost_factory: Vhosts, own_redis: ThrowawayRedis, mgmt_api: httpx.Client, tmp_path: Path
) -> None:
    """A stall usually ends when a held message goes through. Here none can: while Redis is
    down the held messages' channel is cut and the broker hands them to another consumer
    (a replica; here the test's own, which keeps them). The stall still ends once Redis
    answers again (its /healthz check, tried every CONSUMER_RETRY_MAX_SECONDS), so that the
    next outage is a stall of its own: logged and counted again."""
    vhost = vhost_factory.make("idle")
    env = service_env(vhost, own_redis.url, CONSUMER_RETRY_MAX_SECONDS="1", LOG_LEVEL="INFO")
    intake = Service("intake", env, tmp_path / "intake.log")
    replica: Any = None

    def stalls() -> float:
        return intake.metric("gridbus_consumer_stalls_total", queue="intake.reports", dependency="redis")

    def held() -> float:
        return intake.metric("gridbus_consumer_held_messages", queue="intake.reports")

    try:
        assert wait_for(lambda: intake.health()[0] == 200, 60), intake.logs()
        own_redis.kill()
        publish_reports(vhost, 4)
        assert wait_for(lambda: held() == 4, 15), intake.logs()
        assert stalls() == 1

        # the other replica: a consumer of the same queue on a connection of its own
        replica = amqpclient.connect(vhost, client_properties={"connection_name": "the-other-replica"})
        channel = amqpclient.channel(replica)
        channel.basic_qos(0, 100, False)
        taken: list[int] = []
        tag = channel.basic_consume(topology.Q_INTAKE_REPORTS, callback=lambda m: taken.append(m.delivery_tag))
        name = quote(unquote(urlparse(vhost).path[1:]), safe="")

        def theirs() -> list[dict[str, Any]]:
            return [
                c
                for c in mgmt_api.get(f"/api/vhosts/{name}/connections").json()
                if (c.get("client_properties") or {}).get("connection_name") != "the-other-replica"
            ]

        def listed() -> bool:
            return any(
                (c.get("client_properties") or {}).get("connection_name") == "the-other-replica"
                for c in mgmt_api.get(f"/api/vhosts/{name}/connections").json()
            )

        assert wait_for(listed, 20, interval=0.5)
        for c in theirs():  # intake's connections cut: its held messages go to the other replica
            mgmt_api.delete(f"/api/connections/{quote(c['name'], safe='')}")

        def all_taken() -> bool:
            amqpclient.pump(replica, 0.2)
            return len(taken) == 4

        assert wait_for(all_taken, 20), (taken, intake.logs())
        assert wait_for(lambda: held() == 0, 15), intake.logs()
        assert wait_for(lambda: intake.health()[1].get("checks", {}).get("consumers", {}).get("ok"), 30)
        assert intake.count("consumer_recovered") == 0  # Redis is still down: still stalled

        own_redis.start()
        assert wait_for(lambda: intake.count("consumer_recovered") == 1, 15), intake.logs()
        assert stalls() == 1

        # the next outage is a stall of its own
        channel.basic_cancel(tag)  # the other replica takes no more (it keeps its four unacked)
        own_redis.kill()
        publish_reports(vhost, 1)
        assert wait_for(lambda: intake.count("consumer_stalled") == 2, 15), intake.logs()
        assert stalls() == 2
        own_redis.start()
        amqpclient.close_quietly(replica)  # its four go back to intake: nothing was lost
        replica = None
        assert wait_for(lambda: intake.count("case_registered") == 5, 30), intake.logs()
        assert held() == 0 and queue_depth(vhost, topology.Q_INTAKE_REPORTS) == 0
    finally:
        amqpclient.close_quietly(replica)
        intake.stop()
        vhost_factory.drop(vhost)
