"""The bus on the real broker: confirmed mandatory publishes, unroutable detection, and
the audit stream keeping every event."""

from __future__ import annotations

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
