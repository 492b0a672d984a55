"""Transient or permanent (shared/resilience.py) and /healthz (shared/health.py), without a
broker: the health endpoint is served by the real metrics server on a free port."""

from __future__ import annotations

import amqp.exceptions
import httpx
import kombu.exceptions
import pytest
import redis.exceptions as rexc

from shared.amqpclient import BrokerUnreachable, PublishFailed, Unroutable
from shared.health import Health, Heartbeat
from shared.metrics import Known, serve_metrics
from shared.nameko_ext import Rejected
from shared.resilience import DependencyUnavailable, Ledger, Stall, backoff_delay, transient_dependency
from tests.conftest import free_port


@pytest.mark.parametrize(
    "exc, dependency",
    [
        (rexc.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "redis"),
        (rexc.TimeoutError("Timeout reading from socket"), "redis"),
        (rexc.BusyLoadingError("Redis is loading the dataset in memory"), "redis"),
        (rexc.ReadOnlyError("You can't write against a read only replica."), "redis"),
        (
            rexc.ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
            "redis",
        ),
        (rexc.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable"), "redis"),
        (PublishFailed("3 of 3 messages unconfirmed after 30 s"), "broker"),
        (PublishFailed("nacked by the broker (delivery tag 4)"), "broker"),
        (kombu.exceptions.OperationalError("[Errno 111] Connection refused"), "broker"),
        (amqp.exceptions.RecoverableConnectionError("connection already closed"), "broker"),
        (amqp.exceptions.ConnectionForced("CONNECTION_FORCED - broker forced connection closure"), "broker"),
        (amqp.exceptions.ChannelNotOpen("Channel is closed"), "broker"),
        (amqp.exceptions.UnexpectedFrame("Received 0x00 while expecting 0xce"), "broker"),
        (BrokerUnreachable("127.0.0.1:5672", ConnectionRefusedError(111, "Connection refused")), "broker"),
        (httpx.ConnectError("All connection attempts failed"), "http"),
        (ConnectionResetError(104, "Connection reset by peer"), "network"),
        (BrokenPipeError(32, "Broken pipe"), "network"),
        (TimeoutError("timed out"), "network"),
        (DependencyUnavailable("redis", "loading"), "redis"),
    ],
)
def test_a_failing_dependency_is_transient(exc: BaseException, dependency: str) -> None:
    assert transient_dependency(exc) == dependency


@pytest.mark.parametrize(
    "exc",
    [
        Rejected("not a lifecycle event", "invalid_event"),
        ValueError("invalid literal for int()"),
        KeyError("case_id"),
        TypeError("unsupported operand"),
        Unroutable("no queue bound for 'gridbus.dispatch' / 'dept.nosuchdept.450305001'"),
        rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rexc.DataError("Invalid input of type: 'dict'"),
        AssertionError(),
    ],
)
def test_invalid_input_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert transient_dependency(exc) is None


def test_a_wrapped_outage_is_still_an_outage() -> None:
    try:
        try:
            raise rexc.ConnectionError("refused")
        except rexc.ConnectionError as inner:
            raise RuntimeError("could not store the case") from inner
    except RuntimeError as outer:
        assert transient_dependency(outer) == "redis"
    # implicit context is not followed: a bug raised while handling an outage is a bug
    try:
        try:
            raise rexc.ConnectionError("refused")
        except rexc.ConnectionError:
            raise KeyError("oops")  # noqa: B904 - the implicit context is the point
    except KeyError as bug:
        assert transient_dependency(bug) is None


def test_backoff_doubles_and_is_capped() -> None:
    mid = lambda: 0.5  # noqa: E731 - no jitter
    assert [backoff_delay(n, 0.2, 5.0, mid) for n in (1, 2, 3, 4, 5, 6, 30)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )
    assert 0.8 * 5.0 <= backoff_delay(100, 0.2, 5.0) <= 1.2 * 5.0


def test_a_stall_logs_once_and_counts_held_messages() -> None:
    now = [100.0]
    changes: list[int] = []
    stall = Stall("intake", "intake.events", on_change=lambda s: changes.append(s.held), clock=lambda: now[0])
    assert stall.hold("redis", rexc.ConnectionError("refused")) is True
    assert stall.hold("redis", rexc.ConnectionError("refused")) is False
    assert stall.stalled and stall.held == 2 and stall.episodes == 1
    stall.release()
    now[0] = 103.0
    stall.recovered()
    assert not stall.stalled and stall.held == 1
    stall.release()
    assert changes == [1, 2, 1, 1, 0]
    assert stall.hold("broker", PublishFailed("x")) is True and stall.episodes == 2


def test_a_stall_with_nothing_held_is_idle_until_it_ends() -> None:
    """Idle: stalled, and no message left whose success would end the stall (the consumer
    then looks at the dependency itself: tests/integration/test_resilience.py)."""
    stall = Stall("intake", "intake.reports")
    assert not stall.idle
    stall.hold("redis", rexc.ConnectionError("refused"))
    assert stall.stalled and not stall.idle
    stall.release()  # its channel closed: the broker gave it to someone else
    assert stall.idle and stall.stalled
    stall.recovered("its dependency answers again (no message held)")
    assert not stall.idle and not stall.stalled
    assert stall.hold("redis", rexc.ConnectionError("refused")) is True and stall.episodes == 2


def test_health_names_the_failing_check_and_caches_network_checks() -> None:
    calls = {"redis": 0}
    state = {"redis": True}

    def redis_check() -> tuple[bool, str]:
        calls["redis"] += 1
        if not state["redis"]:
            raise rexc.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
        return True, "PONG"

    now = [0.0]
    health = Health(clock=lambda: now[0])
    health.register("consumers", lambda: (True, "consuming intake.events"), fatal_after=60)
    health.register("redis", redis_check, cheap=False)
    assert health.report() == (
        200,
        {
            "status": "ok",
            "checks": {
                "consumers": {"ok": True, "detail": "consuming intake.events"},
                "redis": {"ok": True, "detail": "PONG"},
            },
        },
    )
    state["redis"] = False
    assert health.report()[0] == 200 and calls["redis"] == 1  # cached for a second
    now[0] = 1.5
    status, body = health.report()
    assert status == 503 and body["failing"] == ["redis"]
    assert "Connection refused" in body["checks"]["redis"]["detail"]
    assert health.report(local=True)[0] == 200  # liveness does not restart a pod for Redis
    assert health.fatal() == []  # a network check never ends the process


def test_a_fatal_check_ends_the_process_only_after_its_grace() -> None:
    now = [0.0]
    attached = [True]
    health = Health(clock=lambda: now[0])
    health.register("consumers", lambda: (attached[0], "not connected to the broker"), fatal_after=120)
    tick = Heartbeat(30.0, clock=lambda: now[0])
    health.register("tick", tick.check, fatal_after=0.0)
    attached[0] = False
    assert health.fatal() == []
    now[0] = 119.0
    tick.beat()
    assert health.fatal() == []
    attached[0] = True
    now[0] = 200.0  # recovered meanwhile: the grace starts again next time
    assert health.fatal() == ["tick: last ran 81.0 s ago (limit 30 s) (failing 0 s)"]
    attached[0] = False
    now[0] = 250.0
    tick.beat()
    assert health.fatal() == []
    now[0] = 370.0
    tick.beat()
    assert health.fatal() == ["consumers: not connected to the broker (failing 120 s)"]


def test_healthz_is_served_beside_metrics() -> None:
    ok = [True]
    health = Health(cache_s=0)
    health.register("consumers", lambda: (ok[0], "consuming router.cases" if ok[0] else "consumer channel closed"))
    port = free_port()
    serve_metrics(Known("router"), port, "127.0.0.1", health=health)
    base = f"http://127.0.0.1:{port}"
    r = httpx.get(f"{base}/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    ok[0] = False
    r = httpx.get(f"{base}/healthz", timeout=5)
    assert r.status_code == 503
    assert r.json()["failing"] == ["consumers"]
    assert r.json()["checks"]["consumers"]["detail"] == "consumer channel closed"
    assert httpx.get(f"{base}/healthz?local=1", timeout=5).status_code == 503
    metrics = httpx.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200 and "gridbus_consumer_held_messages" in metrics.text


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_ledger_names_a_message_nobody_tries_any_more() -> None:
    """A message taken and then neither settled nor tried again (a hung handler, a retry
    that never woke, an ack skipped on an open channel) fails `messages`; one that is
    tried again, settled, or whose hold is refreshed does not."""
    clock = _Clock()
    ledger = Ledger(clock=clock)
    channel_open = {1: True, 2: False}
    ledger.trying(1, "notifier.events", lambda: channel_open[1])
    ledger.trying(2, "notifier.deliveries", lambda: channel_open[2])
    ledger.trying(3, "notifier.events", lambda: True)
    assert ledger.stuck(120)[0]
    clock.now += 60
    ledger.held(3, "redis")  # held messages are tried every few seconds: never idle
    ledger.settled(2)
    clock.now += 61
    ok, detail = ledger.stuck(120)
    assert not ok
    assert detail == "1 message(s) (notifier.events) without a try for 121 s (1 on an open channel, 0 on a closed one)"
    ledger.trying(1, "notifier.events", lambda: True)  # tried again: the same entry, active again
    assert ledger.stuck(120)[0]
    assert len(ledger.entries) == 2


def test_the_ledger_names_a_message_held_too_long() -> None:
    clock = _Clock()
    ledger = Ledger(clock=clock)
    ledger.trying(7, "sla.events", lambda: True)
    ledger.held(7, "redis")
    clock.now += 50
    ledger.trying(7, "sla.events", lambda: True)
    ledger.held(7, "broker")  # still the same hold: it started 50 s ago, for redis
    assert ledger.held_too_long(120) == (True, "1 held, none for 120 s")
    clock.now += 70
    assert ledger.stuck(120)[0]  # tried all along
    assert ledger.held_too_long(120) == (False, "1 message(s) (sla.events) held for redis for 120 s")
    ledger.settled(7)
    assert ledger.held_too_long(120)[0]
    ledger.settled(7)  # settling twice (ack after a skipped ack) is harmless
