"""`gridbus sink`: the real channel code delivers to it (webhook signed, robots, SMS) and
it shows what each person would read; a webhook with a bad signature is refused."""

from typing import Iterator

import httpx
import pytest

from services.notifier import sink
from services.notifier.channels.base import ChannelName, ChannelSettings, OutgoingMessage, send

SECRET = "sink-test-secret"


@pytest.fixture()
def running() -> Iterator[tuple[str, list[sink.Received]]]:
    got: list[sink.Received] = []
    server = sink.serve("127.0.0.1", 0, SECRET, got.append)
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()


def message(channel: ChannelName, to: str, **over: object) -> OutgoingMessage:
    fields = dict(
        delivery_id="d1",
        channel=channel,
        to=to,
        subject="案件派遣",
        text="**新案件** 450305-20261127-000123 路灯不亮",
        secret=SECRET,
        payload={"event": "case_dispatched", "case_id": "450305-20261127-000123", "dept": "lighting"},
        sms_template="SMS_1",
        sms_params={"case_id": "450305-20261127-000123"},
    )
    fields.update(over)
    return OutgoingMessage(**fields)  # type: ignore[arg-type]


def test_every_channel_is_delivered_and_shown(running: tuple[str, list[sink.Received]]) -> None:
    base, got = running
    env = sink.environment(base)
    settings = ChannelSettings(sms_url=env["GRIDBUS_SMS_URL"])
    assert send(message(ChannelName.webhook, env["WEBHOOK_URL_TEMPLATE"].format(dept="lighting")), settings).ok
    assert send(message(ChannelName.wecom, env["GRIDBUS_WECOM_ROBOT_URL"]), settings).ok
    assert send(message(ChannelName.dingtalk, env["GRIDBUS_DINGTALK_ROBOT_URL"], secret=None), settings).ok
    assert send(message(ChannelName.sms, "13800001024"), settings).ok
    by_kind = {r.kind: r for r in got}
    assert by_kind["webhook"].signed is True and by_kind["webhook"].path == "/hooks/lighting"
    assert by_kind["webhook"].text.startswith("case_dispatched 450305-20261127-000123 dept=lighting")
    assert "路灯不亮" in by_kind["wecom"].text and "路灯不亮" in by_kind["dingtalk"].text
    assert "138****1024" in by_kind["sms"].text and "13800001024" not in by_kind["sms"].text


def test_a_badly_signed_webhook_is_refused(running: tuple[str, list[sink.Received]]) -> None:
    base, got = running
    r = httpx.post(
        f"{base}/hooks/gas", content=b'{"event": {"event": "x"}}', headers={"X-Gridbus-Signature": "t=1,v1=00"}
    )
    assert r.status_code == 401 and got[-1].signed is False
