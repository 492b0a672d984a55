"""DingTalk (钉钉) custom robot: POST to `https://oapi.dingtalk.com/robot/send?access_token=…`.

With the robot's "加签" security setting the URL also carries `timestamp` (ms) and
`sign` = urlencode(base64(HMAC-SHA256(key=secret, "timestamp\\nsecret"))); DingTalk
refuses a timestamp more than an hour off. A person is @-mentioned only when listed in
`at.atMobiles`/`at.atUserIds` *and* named as `@<mobile or id>` in the markdown text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

from services.notifier.channels.base import (
    ChannelSettings,
    DeliveryOutcome,
    OutgoingMessage,
    http_post,
    require_http_url,
)
from services.notifier.channels.robot import json_body, robot_outcome, split_mentions, truncate_utf8

TEXT_LIMIT = 20000  # bytes; DingTalk documents 20000 for markdown text
# -1 system busy; 130101 more than 20 messages a minute; 410100 send rate throttled.
# 130102 means the robot was suspended for 10 minutes after flooding.
# 310000 (keyword / signature / IP whitelist), 300001 (bad token), 400013 (group gone)
# and the rest are configuration faults: permanent.
TRANSIENT = {-1}
RATE_LIMITED = {130101: 60.0, 410100: 60.0, 130102: 600.0}


def sign(secret: str, timestamp_ms: int) -> str:
    """The base64 signature, before URL encoding."""
    to_sign = f"{timestamp_ms}\n{secret}".encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), to_sign, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_url(url: str, secret: str, now: float | None = None) -> str:
    timestamp_ms = int((time.time() if now is None else now) * 1000)
    extra = urllib.parse.urlencode({"timestamp": timestamp_ms, "sign": sign(secret, timestamp_ms)})
    return url + ("&" if urllib.parse.urlsplit(url).query else "?") + extra


def build(message: OutgoingMessage) -> dict:
    phones, users = split_mentions(message.mentions)
    at_line = " ".join(f"@{who}" for who in phones + users)
    tail = (f"\n\n{at_line}" if at_line else "") + f"\n\n###### 投递编号 {message.delivery_id}"
    text = truncate_utf8(message.text, TEXT_LIMIT - len(tail.encode())) + tail
    return {
        "msgtype": "markdown",
        "markdown": {"title": truncate_utf8(message.subject, 128) or "gridbus", "text": text},
        "at": {"atMobiles": phones, "atUserIds": users, "isAtAll": False},
    }


def deliver(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    bad_url = require_http_url(message.to)
    if bad_url:
        return bad_url
    # Signed per attempt: a retry an hour later needs a fresh timestamp.
    url = signed_url(message.to, message.secret) if message.secret else message.to
    response = http_post(
        url,
        content=json_body(build(message)),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=settings.timeout,
    )
    if isinstance(response, DeliveryOutcome):
        return response
    return robot_outcome(response, "dingtalk", TRANSIENT, RATE_LIMITED)
