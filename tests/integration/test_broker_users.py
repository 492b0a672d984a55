"""Departments' RabbitMQ users, on the real broker: each reads only its own queue and
replies only as itself (permissions, topic permissions, validated user_id)."""

from __future__ import annotations

import json

import pika
import pika.exceptions
import pytest

from shared import topology
from shared.broker_users import apply_users


@pytest.fixture()
def users(stack_env: dict[str, str], broker_uris: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    topology.apply(stack_env["AMQP_URI"])
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_GAS", "gas-pass")
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_POWER", "power-pass")
    apply_users(broker_uris[1], stack_env["AMQP_URI"], ["gas", "power"])
    return {"gas": "gas-pass", "power": "power-pass"}


def connect(vhost_uri: str, user: str, password: str) -> pika.BlockingConnection:
    params = pika.URLParameters(vhost_uri)
    params.credentials = pika.PlainCredentials(user, password)
    return pika.BlockingConnection(params)


def test_department_reads_only_its_own_queue(stack_env: dict[str, str], users: dict[str, str]) -> None:
    conn = connect(stack_env["AMQP_URI"], "dept-gas", users["gas"])
    try:
        ch = conn.channel()
        ch.basic_get("dept.gas", auto_ack=False)  # allowed: its own queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            conn.channel().basic_get("dept.power", auto_ack=False)
        assert info.value.reply_code == 403
    finally:
        conn.close()


def test_department_cannot_reply_as_another(stack_env: dict[str, str], users: dict[str, str]) -> None:
    conn = connect(stack_env["AMQP_URI"], "dept-gas", users["gas"])
    body = json.dumps({"case_id": "x", "reply_id": "1", "action": "acknowledge"}).encode()
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(
            topology.EX_REPLIES, "reply.gas", body, pika.BasicProperties(user_id="dept-gas", delivery_mode=2)
        )
        # another department's routing key: refused by the topic permission
        ch2 = conn.channel()
        ch2.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch2.basic_publish(topology.EX_REPLIES, "reply.power", body, pika.BasicProperties(user_id="dept-gas"))
        assert info.value.reply_code == 403
        # another department's user_id: refused by the broker's user_id validation
        ch3 = conn.channel()
        ch3.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch3.basic_publish(topology.EX_REPLIES, "reply.gas", body, pika.BasicProperties(user_id="dept-power"))
        assert info.value.reply_code == 406
        # nor can it declare anything
        ch4 = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch4.queue_declare("sneaky", durable=True)
        assert info.value.reply_code == 403
    finally:
        conn.close()
