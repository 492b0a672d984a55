"""A local notification sink (`gridbus sink`): one HTTP server that answers like a
department's webhook, the WeCom and DingTalk group robots and the SMS provider, and
prints each message as the person would read it — so a newcomer sees what gridbus
sends without any real channel.

Paths: `/hooks/<dept>` (department webhooks, via WEBHOOK_URL_TEMPLATE), `/ops` (the
operations centre's webhook), `/gridapp` (the grid app's webhook: reporters' updates),
`/wecom`, `/dingtalk` (robots), `/sms` (the SMS provider API). Webhook signatures are
checked with WEBHOOK_SECRET (docs/webhooks.md), as a department's receiver would.
Phone numbers are masked in what it prints.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from services.notifier import signing
from shared.logs import mask_phone


@dataclass(frozen=True)
class Received:
    path: str
    kind: str  # webhook | wecom | dingtalk | sms
    text: str  # what the person reads
    signed: bool | None  # webhooks: signature valid


def environment(base: str) -> dict[str, str]:
    """The variables that point every channel of a stack at this sink."""
    return {
        "WEBHOOK_URL_TEMPLATE": f"{base}/hooks/{{dept}}",
        "GRIDBUS_OPS_WEBHOOK_URL": f"{base}/ops",
        "GRID_APP_WEBHOOK_URL": f"{base}/gridapp",
        "GRIDBUS_WECOM_ROBOT_URL": f"{base}/wecom",
        "GRIDBUS_DINGTALK_ROBOT_URL": f"{base}/dingtalk",
        "GRIDBUS_SMS_URL": f"{base}/sms",
    }


def describe(path: str, body: bytes, headers: dict[str, str], secret: str) -> tuple[Received, bytes]:
    """What arrived, as text, and the answer the real receiver would give."""
    try:
        doc: Any = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    route = path.split("?", 1)[0].rstrip("/")
    if route in ("/wecom", "/dingtalk"):
        kind = route[1:]
        msg = doc.get("markdown") or doc.get("text") or {}
        text = msg.get("content") or msg.get("text") or json.dumps(doc, ensure_ascii=False)
        return Received(route, kind, text, None), json.dumps({"errcode": 0, "errmsg": "ok"}).encode()
    if route == "/sms":
        params = ", ".join(f"{k}={v}" for k, v in (doc.get("params") or {}).items())
        text = (
            f"to {mask_phone(str(doc.get('phone', '')))} [{doc.get('sign_name', '')}] "
            f"template {doc.get('template_id')}: {params}"
        )
        return Received(route, "sms", text, None), json.dumps({"code": "OK", "message_id": "sink"}).encode()
    signed = signing.verify(secret, headers, body, time.time()) if secret else None
    event = doc.get("event") if isinstance(doc, dict) else None
    if isinstance(event, dict):
        parts = [str(event.get("event", "?")), str(event.get("case_id", ""))]
        for key in ("status", "to_status", "dept", "deadline", "due", "reason", "note"):
            if event.get(key) not in (None, "", []):
                parts.append(f"{key}={event[key]}")
        text = " ".join(parts)
    else:
        text = json.dumps(doc, ensure_ascii=False)[:400]
    return Received(route, "webhook", text, signed), b""


def serve(host: str, port: int, secret: str, show: Callable[[Received], None]) -> ThreadingHTTPServer:
    """Start the sink in a background thread; returns the server (`shutdown()` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received, answer = describe(self.path, body, dict(self.headers), secret)
            show(received)
            ok = received.signed is not False
            self.send_response((200 if answer else 204) if ok else 401)
            if answer:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if answer:
                self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="gridbus-sink").start()
    return server
