"""Every channel delivering to a real local server that checks the request the way the
real service would (webhook receiver, WeCom and DingTalk robots, SMTP, SMS provider),
plus how HTTP answers and transport failures become outcomes.

No RabbitMQ or Redis needed: the servers run in threads on 127.0.0.1.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.notifier import signing
from services.notifier.channels import ChannelName, ChannelSettings, DeliveryOutcome, OutgoingMessage, send

CASE_ID = "450305-20261127-000123"
EVENT = {
    "event": "case_dispatched",
    "message_id": "m-1",
    "case_id": CASE_ID,
    "correlation_id": "r-1",
    "case": {"category": "01037", "street": "450305003", "address": "七星区穿山路12号"},
}


# --------------------------------------------------------------------------- local HTTP server


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Request], Reply]


def json_reply(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode()


@dataclass
class LocalHTTP:
    """A real HTTP server in a thread; `responder` plays the remote service."""

    responder: Responder
    received: list[Request] = field(default_factory=list)

    def start(self) -> LocalHTTP:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", "0"))
                parts = urllib.parse.urlsplit(self.path)
                request = Request(
                    method="POST",
                    path=parts.path,
                    query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                    headers={k: v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                outer.received.append(request)
                status, headers, body = outer.responder(request)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture
def http_server() -> Iterator[Callable[[Responder], LocalHTTP]]:
    started: list[LocalHTTP] = []

    def start(responder: Responder) -> LocalHTTP:
        server = LocalHTTP(responder).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def settings(**kw: Any) -> ChannelSettings:
    return ChannelSettings(timeout=2.0, **kw)


def message(channel: ChannelName, to: str, **kw: Any) -> OutgoingMessage:
    defaults: dict[str, Any] = {
        "delivery_id": "dlv-0001",
        "subject": f"【派遣】{CASE_ID} 路灯不亮",
        "text": f"**案件 {CASE_ID}**\n路灯不亮，请于 2026-11-27 13:30 前签收。",
        "payload": EVENT,
    }
    defaults.update(kw)
    return OutgoingMessage(channel=channel, to=to, **defaults)


# --------------------------------------------------------------------------- webhook

WEBHOOK_SECRET = "whsec-7f3a"


def webhook_receiver(request: Request) -> Reply:
    """What docs/webhooks.md tells a receiver to do."""
    if request.headers.get("Content-Type", "").split(";")[0] != "application/json":
        return json_reply({"error": "json expected"}, 415)
    if not signing.verify(WEBHOOK_SECRET, request.headers, request.body):
        return json_reply({"error": "bad signature"}, 401)
    body = request.json()
    if set(body) != {"delivery_id", "event"} or body["delivery_id"] != request.headers["X-Gridbus-Delivery"]:
        return json_reply({"error": "bad body"}, 400)
    return json_reply({"ok": True}, 200)


def test_webhook_delivers_signed_json(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    outcome = send(message(ChannelName.webhook, server.base + "/hooks/gas", secret=WEBHOOK_SECRET), settings())
    assert outcome == DeliveryOutcome(True, False, None, 200, "HTTP 200")
    [request] = server.received
    assert request.path == "/hooks/gas"
    assert request.headers["X-Gridbus-Delivery"] == "dlv-0001"
    assert request.headers["X-Gridbus-Signature"].startswith("sha256=")
    assert request.json() == {"delivery_id": "dlv-0001", "event": EVENT}


def test_webhook_uses_settings_secret_when_message_has_none(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    outcome = send(message(ChannelName.webhook, server.base + "/h"), settings(webhook_secret=WEBHOOK_SECRET))
    assert outcome.ok


def test_webhook_with_wrong_secret_is_refused_permanently(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    outcome = send(message(ChannelName.webhook, server.base + "/h", secret="wrong"), settings())
    assert (outcome.ok, outcome.transient, outcome.status) == (False, False, 401)
    assert "bad signature" in outcome.detail


def test_webhook_without_any_secret_is_not_sent(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    outcome = send(message(ChannelName.webhook, server.base + "/h"), settings())
    assert not outcome.ok and not outcome.transient
    assert server.received == []


def test_resend_carries_the_same_delivery_id(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    msg = message(ChannelName.webhook, server.base + "/h", secret=WEBHOOK_SECRET)
    assert send(msg, settings()).ok and send(msg, settings()).ok
    assert [r.headers["X-Gridbus-Delivery"] for r in server.received] == ["dlv-0001", "dlv-0001"]


# --------------------------------------------------------------------------- HTTP outcomes


@pytest.mark.parametrize(
    ("status", "headers", "transient", "retry_after"),
    [
        (503, {}, True, None),
        (503, {"Retry-After": "7"}, True, 7.0),
        (502, {}, True, None),
        (429, {"Retry-After": "30"}, True, 30.0),
        (408, {}, True, None),
        (400, {}, False, None),
        (401, {}, False, None),
        (404, {}, False, None),
        (410, {}, False, None),
        (301, {"Location": "http://elsewhere.invalid/"}, False, None),
    ],
)
def test_http_status_becomes_outcome(
    http_server: Callable[[Responder], LocalHTTP],
    status: int,
    headers: dict[str, str],
    transient: bool,
    retry_after: float | None,
) -> None:
    server = http_server(lambda _r: json_reply({"error": "nope"}, status, headers))
    outcome = send(message(ChannelName.webhook, server.base + "/h", secret="s"), settings())
    assert (outcome.ok, outcome.transient, outcome.retry_after, outcome.status) == (
        False,
        transient,
        retry_after,
        status,
    )
    assert str(status) in outcome.detail


def test_retry_after_as_http_date(http_server: Callable[[Responder], LocalHTTP]) -> None:
    from email.utils import formatdate

    server = http_server(lambda _r: json_reply({}, 429, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}))
    outcome = send(message(ChannelName.webhook, server.base + "/h", secret="s"), settings())
    assert outcome.transient and outcome.retry_after is not None and 100 < outcome.retry_after <= 120


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = send(message(ChannelName.webhook, f"http://127.0.0.1:{port}/h", secret="s"), settings())
    assert (outcome.ok, outcome.transient, outcome.status) == (False, True, None)
    assert "connection failed" in outcome.detail


def test_timeout_is_transient(http_server: Callable[[Responder], LocalHTTP]) -> None:
    release = threading.Event()

    def stall(_request: Request) -> Reply:
        release.wait(10)
        return json_reply({})

    server = http_server(stall)
    try:
        outcome = send(message(ChannelName.webhook, server.base + "/h", secret="s"), ChannelSettings(timeout=0.2))
    finally:
        release.set()
    assert (outcome.ok, outcome.transient) == (False, True)
    assert "timeout" in outcome.detail


def test_not_a_url_is_permanent() -> None:
    outcome = send(message(ChannelName.webhook, "ftp://example.org/x", secret="s"), settings())
    assert (outcome.ok, outcome.transient) == (False, False)


# --------------------------------------------------------------------------- WeCom robot

WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


def wecom_robot(request: Request) -> Reply:
    """The checks qyapi.weixin.qq.com/cgi-bin/webhook/send makes, answered its way."""

    def err(code: int, msg: str) -> Reply:
        return json_reply({"errcode": code, "errmsg": msg})

    if request.path != "/cgi-bin/webhook/send" or request.query.get("key") != [WECOM_KEY]:
        return err(93000, "invalid webhook url")
    try:
        body = request.json()
    except ValueError:
        return err(40058, "Warning: wrong json format.")
    kind = body.get("msgtype")
    if set(body) != {"msgtype", kind} or kind not in ("text", "markdown"):
        return err(40008, "invalid message type")
    part = body[kind]
    content = part.get("content")
    if not isinstance(content, str) or not content:
        return err(44004, "empty content")
    limit = 4096 if kind == "markdown" else 2048
    if len(content.encode("utf-8")) > limit:
        return err(40058, "content exceed max length")
    allowed = {"content"} if kind == "markdown" else {"content", "mentioned_list", "mentioned_mobile_list"}
    if set(part) - allowed:
        return err(40058, f"unknown field in {kind}")
    for key in ("mentioned_list", "mentioned_mobile_list"):
        if key in part and not (isinstance(part[key], list) and all(isinstance(x, str) for x in part[key])):
            return err(40058, f"{key} must be a list of strings")
    return err(0, "ok")


def test_wecom_markdown_with_userid_mentions(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(wecom_robot)
    url = f"{robot.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
    outcome = send(message(ChannelName.wecom, url, mentions=("zhangwei", "liqiang")), settings())
    assert outcome.ok and outcome.status == 200, outcome
    [request] = robot.received
    body = request.json()
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"content"}
    content = body["markdown"]["content"]
    assert content.startswith(f"**案件 {CASE_ID}**")
    assert "<@zhangwei><@liqiang>" in content
    assert "投递编号 dlv-0001" in content


def test_wecom_phone_mentions_go_as_text(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(wecom_robot)
    url = f"{robot.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
    outcome = send(message(ChannelName.wecom, url, mentions=("13800001111", "zhangwei")), settings())
    assert outcome.ok, outcome
    body = robot.received[0].json()
    assert body["msgtype"] == "text"
    assert body["text"]["mentioned_mobile_list"] == ["13800001111"]
    assert body["text"]["mentioned_list"] == ["zhangwei"]
    assert "**" not in body["text"]["content"] and f"案件 {CASE_ID}" in body["text"]["content"]


def test_wecom_long_text_is_cut_to_the_limit(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(wecom_robot)
    url = f"{robot.base}/cgi-bin/webhook/send?key={WECOM_KEY}"
    assert send(message(ChannelName.wecom, url, text="井盖缺失" * 2000), settings()).ok
    assert send(message(ChannelName.wecom, url, text="井盖缺失" * 2000, mentions=("13800001111",)), settings()).ok
    assert all("投递编号 dlv-0001" in json.dumps(r.json(), ensure_ascii=False) for r in robot.received)


def test_wecom_bad_key_is_permanent(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(wecom_robot)
    outcome = send(message(ChannelName.wecom, f"{robot.base}/cgi-bin/webhook/send?key=nope"), settings())
    assert (outcome.ok, outcome.transient, outcome.status) == (False, False, 200)
    assert "93000" in outcome.detail


@pytest.mark.parametrize(("code", "retry_after"), [(45009, 60.0), (-1, None)])
def test_wecom_busy_or_rate_limited_is_transient(
    http_server: Callable[[Responder], LocalHTTP], code: int, retry_after: float | None
) -> None:
    robot = http_server(lambda _r: json_reply({"errcode": code, "errmsg": "api freq out of limit"}))
    outcome = send(message(ChannelName.wecom, f"{robot.base}/cgi-bin/webhook/send?key=k"), settings())
    assert (outcome.ok, outcome.transient, outcome.retry_after) == (False, True, retry_after)


def test_robot_answer_that_is_not_json_is_permanent(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(lambda _r: (200, {"Content-Type": "text/html"}, b"<html>portal</html>"))
    outcome = send(message(ChannelName.wecom, f"{robot.base}/cgi-bin/webhook/send?key=k"), settings())
    assert (outcome.ok, outcome.transient) == (False, False)


# --------------------------------------------------------------------------- DingTalk robot

DING_TOKEN = "e9a8118c8a3dc"
DING_SECRET = "SEC10d6e79b42bd94be0d0d603843651aa2"


def dingtalk_robot(request: Request) -> Reply:
    """The checks oapi.dingtalk.com/robot/send makes for a robot with 加签 enabled."""
    import base64
    import hashlib
    import hmac

    def err(code: int, msg: str) -> Reply:
        return json_reply({"errcode": code, "errmsg": msg})

    if request.path != "/robot/send" or request.query.get("access_token") != [DING_TOKEN]:
        return err(300001, "token is not exist")
    [timestamp] = request.query.get("timestamp", [""])
    [sign] = request.query.get("sign", [""])
    if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 3600 * 1000:
        return err(310000, "sign not match, timestamp is invalid")
    expected = base64.b64encode(
        hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    if sign != expected:
        return err(310000, "sign not match")
    body = request.json()
    if body.get("msgtype") != "markdown" or set(body) - {"msgtype", "markdown", "at"}:
        return err(40035, "invalid msgtype")
    md = body["markdown"]
    if set(md) != {"title", "text"} or not all(isinstance(md[k], str) and md[k] for k in md):
        return err(40035, "markdown needs title and text")
    at = body.get("at", {})
    if set(at) - {"atMobiles", "atUserIds", "isAtAll"} or not isinstance(at.get("isAtAll", False), bool):
        return err(40035, "bad at")
    for who in at.get("atMobiles", []) + at.get("atUserIds", []):
        if f"@{who}" not in md["text"]:
            return err(40035, f"@{who} listed but not named in text")  # would silently not notify
    return err(0, "ok")


def test_dingtalk_signed_markdown_with_mentions(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(dingtalk_robot)
    url = f"{robot.base}/robot/send?access_token={DING_TOKEN}"
    outcome = send(
        message(ChannelName.dingtalk, url, secret=DING_SECRET, mentions=("13800001111", "manager4921")), settings()
    )
    assert outcome.ok, outcome
    [request] = robot.received
    body = request.json()
    assert body["at"] == {"atMobiles": ["13800001111"], "atUserIds": ["manager4921"], "isAtAll": False}
    assert body["markdown"]["title"] == f"【派遣】{CASE_ID} 路灯不亮"
    assert "@13800001111 @manager4921" in body["markdown"]["text"]
    assert "投递编号 dlv-0001" in body["markdown"]["text"]


def test_dingtalk_wrong_secret_is_permanent(http_server: Callable[[Responder], LocalHTTP]) -> None:
    robot = http_server(dingtalk_robot)
    url = f"{robot.base}/robot/send?access_token={DING_TOKEN}"
    outcome = send(message(ChannelName.dingtalk, url, secret="SECwrong"), settings())
    assert (outcome.ok, outcome.transient) == (False, False)
    assert "310000" in outcome.detail


@pytest.mark.parametrize(("code", "transient", "retry_after"), [(130101, True, 60.0), (-1, True, None), (300001, False, None)])
def test_dingtalk_errcodes(
    http_server: Callable[[Responder], LocalHTTP], code: int, transient: bool, retry_after: float | None
) -> None:
    robot = http_server(lambda _r: json_reply({"errcode": code, "errmsg": "send too fast"}))
    outcome = send(message(ChannelName.dingtalk, f"{robot.base}/robot/send?access_token=t"), settings())
    assert (outcome.ok, outcome.transient, outcome.retry_after) == (False, transient, retry_after)
