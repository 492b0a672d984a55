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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.notifier import signing
from services.notifier.channels import ChannelName, ChannelSettings, DeliveryOutcome, OutgoingMessage, send
from tests.localhttp import LocalHTTP, Reply, Request, Responder, json_reply

CASE_ID = "450305-20261127-000123"
EVENT = {
    "event": "case_dispatched",
    "message_id": "m-1",
    "case_id": CASE_ID,
    "correlation_id": "r-1",
    "case": {"category": "01037", "street": "450305003", "address": "七星区穿山路12号"},
}


# --------------------------------------------------------------------------- local HTTP server
# (tests/localhttp.py: LocalHTTP, Request, Reply, json_reply; the e2e sinks use it too)


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
    kw.setdefault("smtp_host", "127.0.0.1")  # the local test SMTP servers (unset: email is disabled)
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


@pytest.mark.parametrize(
    ("code", "transient", "retry_after"), [(130101, True, 60.0), (-1, True, None), (300001, False, None)]
)
def test_dingtalk_errcodes(
    http_server: Callable[[Responder], LocalHTTP], code: int, transient: bool, retry_after: float | None
) -> None:
    robot = http_server(lambda _r: json_reply({"errcode": code, "errmsg": "send too fast"}))
    outcome = send(message(ChannelName.dingtalk, f"{robot.base}/robot/send?access_token=t"), settings())
    assert (outcome.ok, outcome.transient, outcome.retry_after) == (False, transient, retry_after)


# --------------------------------------------------------------------------- e-mail (aiosmtpd)

import email as email_lib  # noqa: E402
import email.policy  # noqa: E402
import shutil  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from pathlib import Path  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402
from pydantic import SecretStr  # noqa: E402


class MailSink:
    """aiosmtpd handler: keeps what it accepts, refuses some recipients like a real MTA."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.tls_seen: list[bool] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address.startswith("full@"):
            return "452 4.2.2 Mailbox full, try later"
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = email_lib.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        self.tls_seen.append(session.ssl is not None)
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[MailSink, int]]]:
    controllers: list[Controller] = []

    def start(**smtp_kwargs: Any) -> tuple[MailSink, int]:
        sink, port = MailSink(), free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port, **smtp_kwargs)
        controller.start()
        controllers.append(controller)
        return sink, port

    yield start
    for controller in controllers:
        controller.stop()


def test_email_plain_smtp(smtp_server: Callable[..., tuple[MailSink, int]]) -> None:
    sink, port = smtp_server()
    cfg = settings(smtp_port=port, mail_from="notify@gridbus.qixing.gov.cn")
    outcome = send(message(ChannelName.email, "liaison.gas@example.cn"), cfg)
    assert outcome.ok and outcome.status == 250, outcome
    [(mail_from, rcpts, mail)] = sink.messages
    assert (mail_from, rcpts) == ("notify@gridbus.qixing.gov.cn", ["liaison.gas@example.cn"])
    assert mail["Subject"] == f"【派遣】{CASE_ID} 路灯不亮"
    assert mail["Message-ID"] == "<dlv-0001@gridbus.qixing.gov.cn>"
    assert mail["X-Gridbus-Delivery"] == "dlv-0001"
    assert mail.get_content_type() == "text/plain"
    assert f"案件 {CASE_ID}" in mail.get_content()


def test_email_starttls_with_login(
    smtp_server: Callable[..., tuple[MailSink, int]], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"pa55", handled=False)  # False: server sends the 535

    sink, port = smtp_server(
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    cfg = settings(
        smtp_port=port, smtp_starttls=True, smtp_ca_file=str(cert), smtp_user="gridbus", smtp_password="pa55"
    )
    assert send(message(ChannelName.email, "a@example.cn"), cfg).ok
    assert sink.tls_seen == [True] and logins == [("gridbus", "pa55")]

    wrong_password = cfg.model_copy(update={"smtp_password": SecretStr("nope")})
    wrong = send(message(ChannelName.email, "a@example.cn"), wrong_password)
    assert (wrong.ok, wrong.transient, wrong.status) == (False, False, 535)

    untrusted = send(message(ChannelName.email, "a@example.cn"), cfg.model_copy(update={"smtp_ca_file": ""}))
    assert (untrusted.ok, untrusted.transient) == (False, False)
    assert "certificate" in untrusted.detail

    clear = send(message(ChannelName.email, "a@example.cn"), cfg.model_copy(update={"smtp_starttls": False}))
    assert not clear.ok and len(sink.messages) == 1  # the server insists on TLS first


def test_email_starttls_demanded_but_not_offered(smtp_server: Callable[..., tuple[MailSink, int]]) -> None:
    sink, port = smtp_server()
    outcome = send(message(ChannelName.email, "a@example.cn"), settings(smtp_port=port, smtp_starttls=True))
    assert (outcome.ok, outcome.transient) == (False, False) and sink.messages == []


@pytest.mark.parametrize(
    ("to", "transient", "status"), [("full@example.cn", True, 452), ("nobody@example.cn", False, 550)]
)
def test_email_refused_recipient(
    smtp_server: Callable[..., tuple[MailSink, int]], to: str, transient: bool, status: int
) -> None:
    _sink, port = smtp_server()
    outcome = send(message(ChannelName.email, to), settings(smtp_port=port))
    assert (outcome.ok, outcome.transient, outcome.status) == (False, transient, status)


def test_email_server_down_is_transient() -> None:
    outcome = send(message(ChannelName.email, "a@example.cn"), settings(smtp_port=free_port()))
    assert (outcome.ok, outcome.transient) == (False, True)


def test_email_bad_address_is_permanent() -> None:
    outcome = send(message(ChannelName.email, "a@example.cn\r\nBcc: x@evil.example"), settings())
    assert (outcome.ok, outcome.transient) == (False, False)


# --------------------------------------------------------------------------- SMS provider

SMS_KEY = "sk-" + "a1B2" * 8
SMS_TEMPLATES = {"SMS_465320001": {"case_id", "category", "deadline"}}


def sms_provider(request: Request) -> Reply:
    """A provider the way Chinese SMS gateways behave: approved signature and template only."""
    import re

    if request.path != "/v1/sms/send":
        return json_reply({"code": "NotFound"}, 404)
    if not re.fullmatch(r"Bearer sk-[A-Za-z0-9]{32}", request.headers.get("Authorization", "")):
        return json_reply({"code": "InvalidApiKey", "message": "bad key format"}, 401)
    if request.headers["Authorization"] != f"Bearer {SMS_KEY}":
        return json_reply({"code": "Unauthorized", "message": "unknown key"}, 401)
    body = request.json()
    if set(body) != {"phone", "sign_name", "template_id", "params", "out_id"}:
        return json_reply({"code": "isv.INVALID_PARAMETERS", "message": f"fields {sorted(body)}"}, 400)
    if not re.fullmatch(r"1[3-9]\d{9}", body["phone"]):
        return json_reply({"code": "isv.MOBILE_NUMBER_ILLEGAL", "message": "phone"})
    if body["sign_name"] != "七星城管":
        return json_reply({"code": "isv.SMS_SIGNATURE_ILLEGAL", "message": "signature not approved"})
    expected = SMS_TEMPLATES.get(body["template_id"])
    if expected is None:
        return json_reply({"code": "isv.SMS_TEMPLATE_ILLEGAL", "message": "template not approved"})
    params = body["params"]
    if set(params) != expected or not all(isinstance(v, str) and 0 < len(v) <= 35 for v in params.values()):
        return json_reply({"code": "isv.TEMPLATE_PARAMS_ILLEGAL", "message": "params"})
    if not isinstance(body["out_id"], str) or not 0 < len(body["out_id"]) <= 64:
        return json_reply({"code": "isv.INVALID_PARAMETERS", "message": "out_id"})
    return json_reply({"code": "OK", "message": "OK", "biz_id": "900619746936498440^0"})


SMS_PARAMS = {"case_id": CASE_ID, "category": "路灯", "deadline": "11月27日13:30"}


def sms_message(to: str = "+86 138-0000-1111", **kw: Any) -> OutgoingMessage:
    defaults: dict[str, Any] = {"sms_template": "SMS_465320001", "sms_params": SMS_PARAMS}
    defaults.update(kw)
    return message(ChannelName.sms, to, **defaults)


def test_sms_delivers_template_and_params(http_server: Callable[[Responder], LocalHTTP]) -> None:
    provider = http_server(sms_provider)
    cfg = settings(sms_url=provider.base + "/v1/sms/send", sms_api_key=SMS_KEY)
    outcome = send(sms_message(), cfg)
    assert outcome.ok and "900619746936498440" in outcome.detail, outcome
    assert provider.received[0].json() == {
        "phone": "13800001111",
        "sign_name": "七星城管",
        "template_id": "SMS_465320001",
        "params": SMS_PARAMS,
        "out_id": "dlv-0001",
    }


@pytest.mark.parametrize(
    ("change", "code", "transient"),
    [
        ({"sms_template": "SMS_1"}, "isv.SMS_TEMPLATE_ILLEGAL", False),
        ({"sms_params": {"case_id": CASE_ID}}, "isv.TEMPLATE_PARAMS_ILLEGAL", False),
    ],
)
def test_sms_provider_refusal_is_permanent(
    http_server: Callable[[Responder], LocalHTTP], change: dict[str, Any], code: str, transient: bool
) -> None:
    provider = http_server(sms_provider)
    cfg = settings(sms_url=provider.base + "/v1/sms/send", sms_api_key=SMS_KEY)
    outcome = send(sms_message(**change), cfg)
    assert (outcome.ok, outcome.transient) == (False, transient) and code in outcome.detail


def test_sms_bad_api_key_is_permanent(http_server: Callable[[Responder], LocalHTTP]) -> None:
    provider = http_server(sms_provider)
    outcome = send(sms_message(), settings(sms_url=provider.base + "/v1/sms/send", sms_api_key="secret"))
    assert (outcome.ok, outcome.transient, outcome.status) == (False, False, 401)
    assert "secret" not in outcome.detail


def test_sms_provider_throttling_is_transient(http_server: Callable[[Responder], LocalHTTP]) -> None:
    provider = http_server(lambda _r: json_reply({"code": "isv.BUSINESS_LIMIT_CONTROL", "message": "触发分钟级流控"}))
    outcome = send(sms_message(), settings(sms_url=provider.base + "/v1/sms/send", sms_api_key=SMS_KEY))
    assert (outcome.ok, outcome.transient) == (False, True)


def test_sms_refuses_what_it_cannot_send_without_calling_the_provider(
    http_server: Callable[[Responder], LocalHTTP],
) -> None:
    provider = http_server(sms_provider)
    cfg = settings(sms_url=provider.base + "/v1/sms/send", sms_api_key=SMS_KEY)
    for msg in (sms_message(to="0773-1234567"), sms_message(sms_template=None)):
        outcome = send(msg, cfg)
        assert (outcome.ok, outcome.transient) == (False, False)
    assert "1234567" not in send(sms_message(to="13800001111x"), cfg).detail.replace("****", "")
    assert provider.received == []


# --------------------------------------------------------------------------- gridbus notify test

from click.testing import CliRunner  # noqa: E402

from services.cli import main as gridbus  # noqa: E402

SMS_TEMPLATES["SMS_465320002"] = {"case_id", "category", "place", "deadline"}  # the CLI's default params


def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(gridbus, ["notify", "test", *args], env=env, catch_exceptions=False)


def test_cli_webhook_delivered(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    result = run_cli("--channel", "webhook", "--to", server.base + "/hook", "--secret", WEBHOOK_SECRET)
    assert result.exit_code == 0, result.output
    assert "outcome:     delivered" in result.output and "status:      200" in result.output
    delivery = server.received[0].headers["X-Gridbus-Delivery"]
    assert f"delivery id: {delivery}" in result.output
    assert server.received[0].json()["event"]["test"] is True


def test_cli_failure_exits_non_zero(http_server: Callable[[Responder], LocalHTTP]) -> None:
    server = http_server(webhook_receiver)
    result = run_cli("--channel", "webhook", "--to", server.base + "/hook", "--secret", "wrong")
    assert result.exit_code == 1
    assert "permanent" in result.output and "status:      401" in result.output


def test_cli_robots(http_server: Callable[[Responder], LocalHTTP]) -> None:
    wecom = http_server(wecom_robot)
    result = run_cli(
        "--channel",
        "wecom",
        "--to",
        f"{wecom.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
        "--event",
        "deadline_breached",
        "--mention",
        "zhangwei",
    )
    assert result.exit_code == 0, result.output
    assert WECOM_KEY not in result.output  # the robot key is a secret
    ding = http_server(dingtalk_robot)
    result = run_cli(
        "--channel",
        "dingtalk",
        "--to",
        f"{ding.base}/robot/send?access_token={DING_TOKEN}",
        "--secret",
        DING_SECRET,
        "--mention",
        "13800001111",
    )
    assert result.exit_code == 0, result.output


def test_cli_email(smtp_server: Callable[..., tuple[MailSink, int]]) -> None:
    sink, port = smtp_server()
    result = run_cli(
        "--channel",
        "email",
        "--to",
        "ops@example.cn",
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(port),
        "--mail-from",
        "gridbus@qixing.example.cn",
        "--event",
        "case_escalated",
    )
    assert result.exit_code == 0, result.output
    assert sink.messages[0][2]["Subject"].startswith("【升级】450305-TEST-000001")


def test_cli_sms_reads_api_key_from_file(http_server: Callable[[Responder], LocalHTTP], tmp_path: Path) -> None:
    provider = http_server(sms_provider)
    key_file = tmp_path / "sms_key"
    key_file.write_text(SMS_KEY + "\n")
    result = run_cli(
        "--channel",
        "sms",
        "--to",
        "13800001111",
        "--sms-url",
        provider.base + "/v1/sms/send",
        "--sms-template",
        "SMS_465320002",
        env={"GRIDBUS_SMS_API_KEY_FILE": str(key_file)},
    )
    assert result.exit_code == 0, result.output
    assert "138****1111" in result.output and "13800001111" not in result.output
    assert set(provider.received[0].json()["params"]) == {"case_id", "category", "place", "deadline"}
