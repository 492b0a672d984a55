"""A consumer's first deliveries on a new channel are settled like any other (the cluster
run's stalled notifier.events, issue 10).

kombu starts each consumer of a channel in turn (basic.consume, then wait for its
consume-ok). The broker delivers to the first consumer at once, and those messages are
handled while the next consumer's round trip is in flight, before the channel is
recorded as the consumer's current one. The old `channel_alive` compared a message's
channel with that record, found them different, skipped the ack ("channel closed: the
broker delivers it again") — on a channel that was open: the broker never delivered them
again, they stayed unacknowledged, a full prefetch of them stopped the queue, and
/healthz said 200.

Here the race is made certain rather than likely: the service reaches the real broker
through a loopback link that adds latency to what the broker sends (a remote broker, a
loaded machine), and both queues have a backlog when it starts."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urlparse

import httpx
import pytest

from shared import topology
from shared.amqpclient import ConfirmChannel
from tests.conftest import Vhosts, wait_for
from tests.integration.test_resilience import Service, service_env
from tests.integration.two_queue_service import QUEUES

pytestmark = pytest.mark.integration

BACKLOG = 60  # per queue: more than the prefetch (max_workers), so a stalled prefetch stops the queue
LATENCY_S = 0.15  # added to each chunk the broker sends

# The test declared the topology itself (over the direct link): through the slow link the
# service's own declaration would take a minute.
TWO_QUEUES = """
import eventlet
eventlet.monkey_patch()
import sys
from shared import topology
topology.apply = lambda uri: None
from services import runner
runner.SERVICE_CLASSES["router"] = "tests.integration.two_queue_service:TwoQueueService"
sys.exit(runner.run_service("router"))
"""


class SlowLink:
    """A loopback TCP relay to the broker that holds every chunk from the broker for
    `latency` seconds before passing it on, in order (client → broker is not delayed)."""

    def __init__(self, upstream: tuple[str, int], latency: float) -> None:
        self.upstream, self.latency = upstream, latency
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.latency), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, latency: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if latency:
                    time.sleep(latency)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for s in self.sockets:
            s.close()


@pytest.fixture()
def slow_vhost(vhost_factory: Vhosts) -> Iterator[tuple[str, str]]:
    """(direct URI, URI through the slow link) of a fresh vhost with the topology declared."""
    direct = vhost_factory.make("setup")
    topology.apply(direct)
    u = urlparse(direct)
    link = SlowLink((u.hostname or "127.0.0.1", u.port or 5672), LATENCY_S)
    slow = direct.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{link.port}", 1)
    yield direct, slow
    link.close()
    vhost_factory.drop(direct)


def queue_counts(mgmt_api: httpx.Client, vhost: str) -> dict[str, tuple[int, int]]:
    """(ready, unacknowledged) of each queue of QUEUES, from the management API."""
    name = quote(unquote(urlparse(vhost).path[1:]), safe="")
    out = {}
    for q in QUEUES:
        info = mgmt_api.get(f"/api/queues/{name}/{quote(q, safe='')}").json()
        out[q] = (int(info.get("messages_ready", -1)), int(info.get("messages_unacknowledged", -1)))
    return out


def test_messages_delivered_while_the_next_consumer_starts_are_acked(
    slow_vhost: tuple[str, str], mgmt_api: httpx.Client, tmp_path: Path
) -> None:
    direct, slow = slow_vhost
    publisher = ConfirmChannel(direct)
    try:
        publisher.publish(
            [
                ("", queue, json.dumps({"n": i}).encode(), {"delivery_mode": 2})
                for queue in QUEUES
                for i in range(BACKLOG)
            ],
            timeout=60,
        )
    finally:
        publisher.close()
    env = service_env(slow, "redis://127.0.0.1:6379/0")
    service = Service("router", env, tmp_path / "two.log", argv=[sys.executable, "-c", TWO_QUEUES])
    try:
        assert wait_for(lambda: service.health()[0] == 200, 60), service.logs()
        # settled: every message acked (0 ready, 0 unacknowledged), within a bound
        done = wait_for(lambda: set(queue_counts(mgmt_api, direct).values()) == {(0, 0)}, 45, interval=1)
        assert done, (queue_counts(mgmt_api, direct), service.count("ack_skipped"), service.logs())
        assert service.count("ack_skipped") == 0
    finally:
        service.stop()


def _publish(vhost: str, queue: str, body: dict) -> None:
    publisher = ConfirmChannel(vhost)
    try:
        publisher.publish_one("", queue, json.dumps(body).encode(), delivery_mode=2, content_type="application/json")
    finally:
        publisher.close()


def test_a_message_held_past_the_bound_fails_healthz_and_a_hung_one_ends_the_process(
    vhost_factory: Vhosts, mgmt_api: httpx.Client, tmp_path: Path
) -> None:
    """/healthz tells the truth about the messages a consumer took: one held longer than
    CONSUMER_STUCK_SECONDS fails `held` (readiness; liveness stays 200 and the process
    stays up, as it must through a long outage), and one whose handler hangs fails
    `messages` and ends the process (exit 1), after which the broker has it back."""
    vhost = vhost_factory.make("stuck")
    topology.apply(vhost)
    env = service_env(vhost, "redis://127.0.0.1:6379/0", CONSUMER_STUCK_SECONDS="3", CONSUMER_RETRY_MAX_SECONDS="0.5")
    service = Service("router", env, tmp_path / "stuck.log", argv=[sys.executable, "-c", TWO_QUEUES])
    try:
        assert wait_for(lambda: service.health()[0] == 200, 60), service.logs()
        _publish(vhost, QUEUES[0], {"peer_down": True})
        status, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(service.health()), 20) or (0, {})
        assert status == 503 and body.get("failing") == ["held"], (status, body)
        assert "held for http" in body["checks"]["held"]["detail"], body
        assert body["checks"]["messages"]["ok"], body  # tried every 0.5 s: not idle
        local = httpx.get(f"http://127.0.0.1:{service.metrics_port}/healthz?local=1", timeout=5)
        assert local.status_code == 200, local.text
        time.sleep(2)
        assert service.proc.poll() is None

        _publish(vhost, QUEUES[0], {"hang": True})
        service.proc.wait(30)
        assert service.proc.returncode == 1, service.logs()
        failed = [line for line in service.logs(tail=10**9).splitlines() if '"service_failed"' in line]
        assert failed and "messages: 1 message(s) (router.cases) without a try" in failed[0], failed
        # both are the broker's again (ready), nothing lost
        assert wait_for(lambda: queue_counts(mgmt_api, vhost)[QUEUES[0]] == (2, 0), 15), queue_counts(mgmt_api, vhost)
    finally:
        service.stop()
        vhost_factory.drop(vhost)
