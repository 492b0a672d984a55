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
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
