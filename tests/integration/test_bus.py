"""The bus on the real broker: confirmed mandatory publishes, unroutable detection, and
the audit stream keeping every event."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from shared import topology
from shared.amqpclient import channel, connection, props
from shared.audit import read_audit
from shared.bus import Bus, Unroutable
from shared.models import CaseUpdated


def test_events_reach_the_audit_stream(stack_env: dict[str, str]) -> None:
    topology.apply(stack_env["AMQP_URI"])
    bus = Bus(stack_env["AMQP_URI"], service="test")
    event = CaseUpdated(
        case_id="450305-20261127-999999",
        correlation_id="r",
        from_status="registered",
        to_status="cancelled",
        actor="test",
        note="audit me",
    )
    bus.publish_event(event)
    found = [e for e in read_audit(stack_env["AMQP_URI"], "first", event.case_id, idle_timeout=1.5)]
    assert [e["message_id"] for e in found][-1] == event.message_id
    assert found[-1]["note"] == "audit me"


def test_a_message_nobody_would_receive_raises(stack_env: dict[str, str]) -> None:
    topology.apply(stack_env["AMQP_URI"])
    bus = Bus(stack_env["AMQP_URI"], service="test")
    with pytest.raises(Unroutable):
        bus.publish(topology.EX_DISPATCH, "dept.nosuchdept.450305001", {"case_id": "x"})
    # and a routable one is confirmed and lands in the queue, persistent
    bus.publish(
        topology.EX_DISPATCH, topology.dispatch_routing_key("gas", "450305001"), {"case_id": "y"}, message_id="m-y"
    )
    with connection(stack_env["AMQP_URI"]) as conn:
        msg = channel(conn).basic_get("dept.gas", no_ack=True)
        assert msg is not None and props(msg)["message_id"] == "m-y" and props(msg)["delivery_mode"] == 2


def test_a_batch_is_confirmed_in_order_and_an_unroutable_member_raises(stack_env: dict[str, str]) -> None:
    from shared.bus import Outgoing

    topology.apply(stack_env["AMQP_URI"])
    bus = Bus(stack_env["AMQP_URI"], service="test")
    key = topology.dispatch_routing_key("water", "450305001")
    bus.publish_batch(
        [Outgoing(topology.EX_DISPATCH, key, {"case_id": f"c{i}"}, message_id=f"m{i}") for i in range(200)]
    )
    with connection(stack_env["AMQP_URI"]) as conn:
        ch = channel(conn)
        got = []
        while (msg := ch.basic_get("dept.water", no_ack=True)) is not None:
            got.append(props(msg)["message_id"])
            assert props(msg)["delivery_mode"] == 2
        assert got == [f"m{i}" for i in range(200)]
    with pytest.raises(Unroutable):
        bus.publish_batch(
            [
                Outgoing(topology.EX_DISPATCH, key, {"case_id": "ok"}),
                Outgoing(topology.EX_DISPATCH, "dept.nosuch.450305001", {"case_id": "lost"}),
            ]
        )
    # the channel stays usable after a failed batch
    bus.publish_batch([Outgoing(topology.EX_DISPATCH, key, {"case_id": "after"}, message_id="after")])


def _queue_ids(uri: str, queue: str) -> list[str]:
    """The message ids in `queue`, in order, read off (other tests' messages included)."""
    with connection(uri) as conn:
        ch = channel(conn)
        got = []
        while (msg := ch.basic_get(queue, no_ack=True)) is not None:
            got.append(str(props(msg).get("message_id")))
        return got


def _held_first_round(bus: Bus, release: "threading.Event") -> list[int]:
    """Make the bus's first confirm round wait for `release` (the callers that come
    meanwhile queue for the next round); the sizes of every round, in messages."""
    rounds: list[int] = []
    publish = bus._batch_channel.publish

    def held(batch: Any, timeout: float, mandatory: bool = True) -> None:
        rounds.append(len(batch))
        if len(rounds) == 1:
            release.wait(10)
        publish(batch, timeout, mandatory)

    bus._batch_channel.publish = held  # type: ignore[method-assign]
    return rounds


def test_concurrent_batches_share_a_confirm_round_each_in_its_order(stack_env: dict[str, str]) -> None:
    """Group commit: the batches of callers that wait while a round is out go in the next
    round together, each caller returns once its own messages are confirmed, and each
    batch keeps its order."""
    from shared.bus import Outgoing

    topology.apply(stack_env["AMQP_URI"])
    bus = Bus(stack_env["AMQP_URI"], service="test")
    key = topology.dispatch_routing_key("water", "450305001")
    release = threading.Event()
    rounds = _held_first_round(bus, release)

    def caller(n: int) -> None:
        bus.publish_batch([Outgoing(topology.EX_DISPATCH, key, {"n": n}, message_id=f"c{n}-{i}") for i in range(3)])

    first = threading.Thread(target=caller, args=(0,))
    first.start()
    while not rounds:  # the first round is out
        time.sleep(0.01)
    others = [threading.Thread(target=caller, args=(n,)) for n in range(1, 9)]
    for t in others:
        t.start()
    time.sleep(0.3)  # all eight queued behind the first round
    release.set()
    for t in [first, *others]:
        t.join(15)
    assert rounds == [3, 24]  # two confirm rounds for nine callers
    got = [m for m in _queue_ids(stack_env["AMQP_URI"], "dept.water") if m.startswith("c")]
    assert sorted(got) == sorted(f"c{n}-{i}" for n in range(9) for i in range(3))
    for n in range(9):
        assert [m for m in got if m.startswith(f"c{n}-")] == [f"c{n}-{i}" for i in range(3)]


def test_an_unroutable_batch_in_a_shared_round_fails_its_caller_only(stack_env: dict[str, str]) -> None:
    from shared.bus import Outgoing

    topology.apply(stack_env["AMQP_URI"])
    bus = Bus(stack_env["AMQP_URI"], service="test")
    key = topology.dispatch_routing_key("gas", "450305001")
    release = threading.Event()
    rounds = _held_first_round(bus, release)
    errors: dict[str, BaseException | None] = {}

    def caller(name: str, routing_key: str) -> None:
        try:
            bus.publish_batch([Outgoing(topology.EX_DISPATCH, routing_key, {"n": name}, message_id=name)])
            errors[name] = None
        except Exception as exc:
            errors[name] = exc

    first = threading.Thread(target=caller, args=("first", key))
    first.start()
    while not rounds:
        time.sleep(0.01)
    threads = [
        threading.Thread(target=caller, args=(name, rk))
        for name, rk in (("a", key), ("bad", "dept.nosuch.450305001"), ("c", key))
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    release.set()
    for t in [first, *threads]:
        t.join(15)
    assert rounds[:2] == [1, 3]  # a, bad and c shared the second round, which failed
    assert errors["first"] is None and errors["a"] is None and errors["c"] is None
    assert isinstance(errors["bad"], Unroutable)
    got = _queue_ids(stack_env["AMQP_URI"], "dept.gas")
    assert {"first", "a", "c"} <= set(
        got
    ) and "bad" not in got  # a and c may be there twice: a repeat, as a retry would make


def test_a_batch_goes_to_the_socket_in_one_write(stack_env: dict[str, str]) -> None:
    """ConfirmChannel.publish writes the frames of a whole batch with one sendall (one
    loopback send instead of one per message); the broker still gets every message."""
    from shared.amqpclient import ConfirmChannel

    topology.apply(stack_env["AMQP_URI"])
    pub = ConfirmChannel(stack_env["AMQP_URI"])
    pub.open()
    assert pub.connection is not None
    transport = pub.connection.transport
    real, writes = transport._write, []

    def counted(data: Any) -> None:
        writes.append(len(data))
        real(data)

    transport._write = counted
    key = topology.dispatch_routing_key("power", "450305001")
    props_ = {"content_type": "application/json", "delivery_mode": 2}
    pub.publish(
        [(topology.EX_DISPATCH, key, b'{"n": %d}' % i, {**props_, "message_id": f"w{i}"}) for i in range(50)], 10
    )
    assert len(writes) == 1 and writes[0] > 50 * 8
    assert transport._write is counted  # put back as it was
    pub.close()
    got = [m for m in _queue_ids(stack_env["AMQP_URI"], "dept.power") if m.startswith("w")]
    assert got == [f"w{i}" for i in range(50)]
