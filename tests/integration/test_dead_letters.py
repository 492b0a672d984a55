"""`gridbus dead list|show|replay` on the real broker: dead letters put there the two real
ways (a consumer's `dead_letter` with its reason, and the quorum queue's delivery limit),
read without being taken away, replayed with their message ids, and removed from the
dead queue only once the copy is confirmed."""

from __future__ import annotations

import json
from typing import Any, Iterator

import amqp
import pytest
from click.testing import CliRunner

from services.cli import main
from shared import deadletters, topology
from shared.amqpclient import ConfirmChannel, body_bytes, channel, connect, props
from shared.bus import Bus
from shared.config import reset_settings
from shared.nameko_ext import dead_letter
from tests.conftest import Vhosts, wait_for

pytestmark = pytest.mark.integration

Q = topology.Q_ROUTER_CASES
DEAD = topology.dead_queue(Q)


@pytest.fixture()
def uri(vhost_factory: Vhosts, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    uri = vhost_factory.make("dead")
    topology.apply(uri)
    monkeypatch.setenv("AMQP_URI", uri)
    reset_settings()
    yield uri
    reset_settings()
    vhost_factory.drop(uri)


def _channel(uri: str) -> tuple[amqp.Connection, Any]:
    conn = connect(uri)
    return conn, channel(conn)


def _depth(uri: str, queue: str) -> int:
    n = deadletters.depth(uri, queue)
    assert n is not None
    return n


def _poison(uri: str, message_id: str) -> None:
    """A message on router.cases that every consumer gives back, until the quorum queue's
    delivery limit moves it to router.cases.dead (the broker's way)."""
    publisher = ConfirmChannel(uri)
    try:
        publisher.publish_one(
            "",
            Q,
            json.dumps({"case_id": "450305-20261201-000777", "event": "case_registered"}).encode(),
            message_id=message_id,
            correlation_id="r-777",
            delivery_mode=2,
            content_type="application/json",
        )
    finally:
        publisher.close()
    conn, ch = _channel(uri)
    try:
        for _ in range(topology.DELIVERY_LIMIT + 5):
            msg = ch.basic_get(Q, no_ack=False)
            if msg is None:
                break
            ch.basic_reject(msg.delivery_tag, requeue=True)
    finally:
        conn.close()
    assert wait_for(lambda: _depth(uri, DEAD) >= 1, 10), "the delivery limit did not dead-letter the message"


def _refused(uri: str, message_id: str) -> None:
    """A message a consumer refused as invalid (the service's way)."""
    dead_letter(
        Bus(uri, service="router"),
        Q,
        b'{"case_id": "450305-20261201-000888", "bogus": true}',
        "application/json",
        "not a lifecycle event: event: field required",
        "invalid_event",
        headers={"x-custom": "kept"},
        message_id=message_id,
    )


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, ["dead", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_and_show_read_dead_letters_without_taking_them(uri: str) -> None:
    _poison(uri, "m-limit")
    _refused(uri, "m-invalid")
    assert _depth(uri, DEAD) == 2

    listed = _run("list")
    line = next(x for x in listed.splitlines() if x.startswith(DEAD))
    assert line.split()[1] == "2" and "delivery_limit=1" in line and "invalid_event=1" in line
    assert "notifier.events.dead" not in listed  # empty queues only with --all
    assert "notifier.events.dead" in _run("list", "--all")

    shown = [json.loads(x) for x in _run("show", Q, "--json").splitlines()]
    assert [m["message_id"] for m in shown] == ["m-limit", "m-invalid"]  # oldest first
    limit, invalid = shown
    assert limit["kind"] == "delivery_limit" and limit["source"] == Q
    assert limit["headers"]["x-death"][0]["queue"] == Q and limit["correlation_id"] == "r-777"
    assert invalid["kind"] == "invalid_event" and "field required" in invalid["reason"]
    assert invalid["headers"]["x-custom"] == "kept" and invalid["headers"]["x-gridbus-service"] == "router"
    assert json.loads(invalid["body"])["bogus"] is True
    # reading took nothing away, and kept the order
    assert _depth(uri, DEAD) == 2
    assert [m["message_id"] for m in (json.loads(x) for x in _run("show", DEAD, "--json").splitlines())] == [
        "m-limit",
        "m-invalid",
    ]
    only = [json.loads(x) for x in _run("show", Q, "--json", "--reason", "delivery_limit").splitlines()]
    assert [m["message_id"] for m in only] == ["m-limit"]
    text = _run("show", Q, "--limit", "1")
    assert "m-limit" in text and "m-invalid" not in text and "x-death" in text


def test_replay_moves_matching_letters_back_with_their_ids(uri: str) -> None:
    _poison(uri, "m-limit")
    _refused(uri, "m-invalid")

    out = _run("replay", Q, "--reason", "delivery_limit")
    assert "replayed 1 to router.cases; 1 not matching" in out
    conn, ch = _channel(uri)
    try:
        msg = ch.basic_get(Q, no_ack=True)
        assert msg is not None
        p = props(msg)
        assert p["message_id"] == "m-limit" and p["correlation_id"] == "r-777"
        assert p["delivery_mode"] == 2 and json.loads(body_bytes(msg))["case_id"] == "450305-20261201-000777"
        headers = p["headers"]
        assert "x-death" not in headers and headers[deadletters.REPLAYED_HEADER] == 1
        assert ch.basic_get(Q, no_ack=True) is None  # one copy, no other queue touched
    finally:
        conn.close()
    assert [d.message_id for d in deadletters.peek(uri, DEAD)] == ["m-invalid"]
    # again: nothing left that matches, nothing moved twice
    assert "replayed 0" in _run("replay", Q, "--reason", "delivery_limit")
    assert _depth(uri, Q) == 0 and _depth(uri, DEAD) == 1
    assert "replayed 1" in _run("replay", DEAD, "--limit", "1")
    assert _depth(uri, DEAD) == 0 and _depth(uri, Q) == 1


def test_replay_keeps_the_dead_letter_when_the_copy_is_not_confirmed(uri: str) -> None:
    _refused(uri, "m-invalid")
    conn, ch = _channel(uri)
    try:
        ch.queue_delete(Q)  # the work queue is gone: the mandatory copy comes back unroutable
    finally:
        conn.close()
    result = CliRunner().invoke(main, ["dead", "replay", Q])
    assert result.exit_code != 0 and "Unroutable publishing to router.cases" in result.output
    assert [d.message_id for d in deadletters.peek(uri, DEAD)] == ["m-invalid"]


def test_an_unknown_queue_is_refused_by_name() -> None:
    result = CliRunner().invoke(main, ["dead", "show", "no.such.queue"])
    assert result.exit_code == 2 and "no.such.queue" in result.output and "router.cases" in result.output
