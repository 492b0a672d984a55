"""Signed JSON webhook: body `{"delivery_id": …, "event": <event JSON>}`, 2xx = delivered."""

from __future__ import annotations

import json

from services.notifier import signing
from services.notifier.channels.base import (
    ChannelSettings,
    DeliveryOutcome,
    OutgoingMessage,
    classify_status,
    http_post,
    require_http_url,
)


def body_of(message: OutgoingMessage) -> bytes:
    # `default=str` so an event still carrying datetimes (not yet JSON-dumped) goes out.
    document = {"delivery_id": message.delivery_id, "event": dict(message.payload)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def deliver(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    bad_url = require_http_url(message.to)
    if bad_url:
        return bad_url
    secret = message.secret or settings.webhook_secret.get_secret_value()
    if not secret:
        # An unsigned request would be refused by any receiver following docs/webhooks.md.
        return DeliveryOutcome.fail("no webhook secret configured")
    body = body_of(message)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        **signing.sign_headers(secret, message.delivery_id, body),
    }
    response = http_post(message.to, content=body, headers=headers, timeout=settings.timeout)
    if isinstance(response, DeliveryOutcome):
        return response
    return classify_status(response) or DeliveryOutcome.delivered(response.status_code, f"HTTP {response.status_code}")
