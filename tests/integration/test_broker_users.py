"""Departments' RabbitMQ users, on the real broker: each reads only its own queue and
replies only as itself (permissions, topic permissions, validated user_id); the example
department consumer (examples/department_consumer.py) does what docs/integrating.md says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import amqp
import pytest

from services.notifier.signing import sign_headers
from shared import topology
from shared.amqpclient import AccessRefused, body_bytes, channel, connection, message, props, queue_depth
from shared.amqpclient import connect as amqp_connect
from shared.broker_users import apply_users
from shared.bus import Bus
from tests.conftest import wait_for


@pytest.fixture()
def users(stack_env: dict[str, str], broker_uris: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    topology.apply(stack_env["AMQP_URI"])
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_GAS", "gas-pass")
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_POWER", "power-pass")
    apply_users(broker_uris[1], stack_env["AMQP_URI"], ["gas", "power"])
    return {"gas": "gas-pass", "power": "power-pass"}


def connect(vhost_uri: str, user: str, password: str) -> amqp.Connection:
    return amqp_connect(vhost_uri, userid=user, password=password)


def test_department_reads_only_its_own_queue(stack_env: dict[str, str], users: dict[str, str]) -> None:
    conn = connect(stack_env["AMQP_URI"], "dept-gas", users["gas"])
    try:
        ch = channel(conn)
        ch.basic_get("dept.gas", no_ack=False)  # allowed: its own queue
        with pytest.raises(AccessRefused) as info:
            channel(conn).basic_get("dept.power", no_ack=False)
        assert info.value.reply_code == 403
    finally:
        conn.close()


def test_department_cannot_reply_as_another(stack_env: dict[str, str], users: dict[str, str]) -> None:
    conn = connect(stack_env["AMQP_URI"], "dept-gas", users["gas"])
    body = json.dumps({"case_id": "x", "reply_id": "1", "action": "acknowledge"}).encode()
    try:
        ch = channel(conn)
        ch.basic_publish_confirm(message(body, user_id="dept-gas", delivery_mode=2), topology.EX_REPLIES, "reply.gas")
        # another department's routing key: refused by the topic permission
        ch2 = channel(conn)
        with pytest.raises(amqp.exceptions.ChannelError) as info:
            ch2.basic_publish_confirm(message(body, user_id="dept-gas"), topology.EX_REPLIES, "reply.power")
        assert info.value.reply_code == 403
        # another department's user_id: refused by the broker's user_id validation
        ch3 = channel(conn)
        with pytest.raises(amqp.exceptions.ChannelError) as info:
            ch3.basic_publish_confirm(message(body, user_id="dept-power"), topology.EX_REPLIES, "reply.gas")
        assert info.value.reply_code == 406
        # nor can it declare anything
        ch4 = channel(conn)
        with pytest.raises(amqp.exceptions.ChannelError) as info:
            ch4.queue_declare("sneaky", durable=True)
        assert info.value.reply_code == 403
    finally:
        conn.close()


def _example() -> Any:
    """examples/department_consumer.py, imported as a department would run it."""
    path = Path(__file__).resolve().parents[2] / "examples" / "department_consumer.py"
    spec = importlib.util.spec_from_file_location("department_consumer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_department_consumer_replies_once_per_order_and_rejects_the_unreadable(
    stack_env: dict[str, str], users: dict[str, str], tmp_path: Path
) -> None:
    """docs/integrating.md §5: the example consumes dept.<code>, acknowledges each new order
    with a confirmed reply as its own user, acks the order after; a redelivered order gets
    no second reply; an unreadable message goes to the dead-letter queue."""
    example = _example()
    vhost = stack_env["AMQP_URI"]
    u = urlparse(vhost)
    as_gas = u._replace(netloc=f"dept-gas:{users['gas']}@{u.hostname}:{u.port or 5672}").geturl()
    with connection(vhost) as conn:  # the session's vhost: replies of the tests above are still there
        for q in (topology.Q_INTAKE_REPLIES, "dept.gas", topology.dead_queue("dept.gas")):
            channel(conn).queue_purge(q)
    bus = Bus(vhost, service="test")
    order = {"kind": "dispatch_order", "order_id": "C1/1/gas", "case_id": "C1", "correlation_id": "r-1"}
    key = topology.dispatch_routing_key("gas", "450305001")
    bus.publish(topology.EX_DISPATCH, key, order, message_id="o-1")
    bus.publish(topology.EX_DISPATCH, key, b"not json", message_id="o-bad")
    state = tmp_path / "handled.json"

    assert example.DepartmentConsumer(as_gas, "gas", state).run(inactivity_timeout=1.0) == 1
    with connection(vhost) as conn:
        ch = channel(conn)
        reply = ch.basic_get(topology.Q_INTAKE_REPLIES, no_ack=True)
        assert reply is not None and ch.basic_get(topology.Q_INTAKE_REPLIES, no_ack=True) is None
        p = props(reply)
        assert p["user_id"] == "dept-gas" and p["message_id"] == "gas-C1/1/gas-acknowledge" and p["delivery_mode"] == 2
        assert json.loads(body_bytes(reply)) == {
            "reply_id": "gas-C1/1/gas-acknowledge",
            "case_id": "C1",
            "action": "acknowledge",
            "note": "已接单，派人处理",
        }
        assert wait_for(lambda: queue_depth(conn, topology.dead_queue("dept.gas")) == 1, 10)
        assert queue_depth(conn, "dept.gas") == 0

        # the same order again (at-least-once): acked, not answered twice
        bus.publish(topology.EX_DISPATCH, key, order, message_id="o-1")
        assert example.DepartmentConsumer(as_gas, "gas", state).run(inactivity_timeout=1.0) == 1
        assert queue_depth(conn, "dept.gas") == 0
        assert ch.basic_get(topology.Q_INTAKE_REPLIES, no_ack=True) is None


def test_the_example_verifies_webhook_signatures_as_the_notifier_signs_them() -> None:
    example = _example()
    body = b'{"event": {"case_id": "C1"}}'
    headers = sign_headers("s3cret", "d-1", body, now=1_800_000_000)
    assert example.verify_webhook("s3cret", headers, body, now=1_800_000_010)
    assert not example.verify_webhook("s3cret", headers, body + b" ", now=1_800_000_010)  # body changed
    assert not example.verify_webhook("other", headers, body, now=1_800_000_010)  # wrong secret
    assert not example.verify_webhook("s3cret", headers, body, now=1_800_000_000 + 301)  # too old: a replay
