"""Departments' RabbitMQ users, on the real broker: each reads only its own queue and
replies only as itself (permissions, topic permissions, validated user_id)."""

from __future__ import annotations

import json

import amqp
import pytest

from shared import topology
from shared.amqpclient import AccessRefused, channel, message
from shared.amqpclient import connect as amqp_connect
from shared.broker_users import apply_users


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
