"""The bridge's pure parts and its delivery rules against a real local HTTP server: the
crosswalk, CloudEvents out (valid per the SDK), city tasks in, and which answers are
retried, held or refused for good."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from services.bridge import cloud
from services.bridge.forward import Forwarder, Targets
from shared.crosswalk import Crosswalk, load_crosswalk
from shared.nameko_ext import Rejected
from shared.resilience import DependencyUnavailable

REPO = Path(__file__).resolve().parents[2]
EVENT = {
    "message_id": "m-1",
    "event": "case_updated",
    "case_id": "450305-20261201-000007",
    "occurred_at": "2026-12-01T09:00:00+08:00",
    "correlation_id": "12345:T-1",
    "to_status": "resolved",
}


def test_crosswalk_longest_prefix_and_reverse() -> None:
    cw = load_crosswalk(REPO / "config" / "crosswalk.yaml")
    assert cw.to_city("450305001001002") == "GL-QX-01-0102"
    assert cw.to_city("450305002001009") == "GL-QX-02"  # an unlisted patch: its street
    assert cw.to_city("450306001001001") is None
    assert cw.from_city("GL-QX-03-0201") == "450305003002001" and cw.from_city("nope") is None
    with pytest.raises(ValueError, match="given for both"):
        Crosswalk(system="x", grids={"450305001": "A", "450305002": "A"})


def test_outbound_is_a_valid_cloudevent_with_the_city_identity() -> None:
    event = cloud.outbound(EVENT, "urn:gridbus:450305", "cn.gridbus.", "GL-QX-01", ("12345", "T-1"))
    headers, body = cloud.http_message(event)
    assert headers == {"content-type": "application/cloudevents+json"}
    back = cloud.parse(body)
    assert (back.get_id(), back.get_type(), back.get_subject()) == (
        "m-1",
        "cn.gridbus.case.updated",
        "450305-20261201-000007",
    )
    assert back.get_extension("externalid") == "T-1" and back.get_data()["citygrid"] == "GL-QX-01"
    with pytest.raises(ValueError, match="CloudEvents"):
        cloud.parse(b'{"id": "x"}')


def task(**data: Any) -> cloud.CloudEvent:
    body = {
        "task_id": "T-9",
        "category": "06010",
        "description": "市民来电",
        "lat": 25.28,
        "lon": 110.312,
        "grid": "GL-QX-01-0101",
        **data,
    }
    return cloud.CloudEvent({"type": "cn.gov.guilin.12345.task.created", "source": "urn:guilin:12345"}, body)


def test_city_task_in() -> None:
    cw = load_crosswalk(REPO / "config" / "crosswalk.yaml")
    report = cloud.report_of(task(citizen={"name": "张", "phone": "139-0773 0001"}), cw)
    assert report.report_id == "12345:T-9" and report.location.grid == "450305001001001"
    assert report.source is not None and (report.source.system, report.source.external_id) == ("12345", "T-9")
    assert report.reporter.role.value == "citizen" and report.reporter.phone == "139-0773 0001"
    with pytest.raises(ValueError, match="data.category"):
        cloud.report_of(task(category="abc"), cw)
    other = cloud.CloudEvent({"type": "cn.gov.guilin.12345.task.closed", "source": "urn:x"}, {})
    with pytest.raises(ValueError, match="only"):
        cloud.report_of(other, cw)


class Platform:
    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.bodies: list[bytes] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                platform.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(platform.answers.pop(0) if platform.answers else 500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def fake_redis() -> Iterator[Any]:
    class Mem:  # the identity store's three calls, in memory (this is a unit test)
        def __init__(self) -> None:
            self.h: dict[str, dict[str, str]] = {}

        def hset(self, key: str, mapping: dict[str, str]) -> None:
            self.h.setdefault(key, {}).update(mapping)

        def expire(self, key: str, s: int) -> None:
            pass

        def hgetall(self, key: str) -> dict[str, str]:
            return dict(self.h.get(key, {}))

    yield Mem()


@pytest.mark.parametrize(
    "answers,outcome,posts",
    [
        ([202], "delivered", 1),
        ([503, 502, 200], "delivered", 3),  # retried within the tries
        ([503, 503, 503], "held", 3),  # still down: held, tried again later
        ([429, 204], "delivered", 2),  # throttled is not a refusal
        ([400], "refused", 1),  # refused for good: dead-lettered with the answer
    ],
)
def test_delivery_rules(fake_redis: Any, answers: list[int], outcome: str, posts: int) -> None:
    platform = Platform(list(answers))
    fw = Forwarder(
        fake_redis,
        Crosswalk(system="x"),
        Targets("urn:gridbus:450305", "cn.gridbus.", http_url=platform.url, http_tries=3),
        sleep=lambda s: None,
    )
    try:
        if outcome == "delivered":
            fw.forward(EVENT)
        elif outcome == "held":
            with pytest.raises(DependencyUnavailable):
                fw.forward(EVENT)
        else:
            with pytest.raises(Rejected, match="400"):
                fw.forward(EVENT)
    finally:
        platform.server.shutdown()
    assert len(platform.bodies) == posts
    assert all(cloud.parse(b).get_id() == "m-1" for b in platform.bodies)  # the same event every time


def test_unreachable_platform_is_held(fake_redis: Any) -> None:
    fw = Forwarder(
        fake_redis,
        Crosswalk(system="x"),
        Targets("s", "p.", http_url="http://127.0.0.1:9/x", http_tries=2, timeout_s=1),
        sleep=lambda s: None,
    )
    with pytest.raises(DependencyUnavailable, match="ConnectError"):
        fw.forward(EVENT)


def test_the_bridge_runs_and_has_queues_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.runner import default_services
    from shared import topology

    for name in ("BRIDGE_HTTP_URL", "BRIDGE_AMQP_EXCHANGE"):
        monkeypatch.delenv(name, raising=False)
    assert "bridge" not in default_services()
    assert "bridge" in default_services({"BRIDGE_HTTP_URL": "http://city/events"})
    assert "bridge" in default_services({"BRIDGE_AMQP_EXCHANGE": "city.events"})
    off = {q.name for q in topology.build_topology(["station"]).queues}
    on = topology.build_topology(["station"], bridge=True)
    assert topology.Q_BRIDGE_EVENTS not in off and topology.Q_BRIDGE_INBOUND not in off
    bound = {(b.exchange, b.routing_key) for b in on.bindings if b.queue == topology.Q_BRIDGE_EVENTS}
    assert bound == {(topology.EX_EVENTS, k) for k in topology.BRIDGE_EVENT_KEYS}
    assert (topology.EX_REPORTS, topology.RK_CITY_TASK) in {
        (b.exchange, b.routing_key) for b in on.bindings if b.queue == topology.Q_BRIDGE_INBOUND
    }
