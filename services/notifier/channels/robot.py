"""What the WeCom and DingTalk group robots have in common.

Both answer HTTP 200 even when they refuse a message; the verdict is the JSON body's
`errcode` (0 = sent). Both cap message size in UTF-8 bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

import httpx

from services.notifier.channels.base import DeliveryOutcome, classify_status
from shared.logs import redact_text

_PHONE = re.compile(r"^\+?(86)?(1\d{10})$")


def split_mentions(mentions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(mobile numbers, user ids): a mention is a phone when it looks like a mainland mobile."""
    phones: list[str] = []
    users: list[str] = []
    for mention in mentions:
        match = _PHONE.match(mention.replace(" ", "").replace("-", ""))
        if match:
            phones.append(match.group(2))
        elif mention:
            users.append(mention)
    return phones, users


def truncate_utf8(text: str, limit: int, marker: str = "…") -> str:
    """At most `limit` bytes, cut on a character boundary, marked when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    return data[:room].decode("utf-8", "ignore") + marker


def robot_outcome(
    response: httpx.Response,
    robot: str,
    transient_codes: Collection[int],
    rate_limit_codes: dict[int, float],
) -> DeliveryOutcome:
    """Outcome of a robot's answer. `rate_limit_codes` maps an errcode to seconds to wait."""
    by_status = classify_status(response)
    if by_status:
        return by_status
    try:
        answer = response.json()
        code = int(answer.get("errcode"))
    except (ValueError, TypeError, AttributeError):
        # A 200 that is not the robot's JSON: something in between (proxy, portal) answered.
        return DeliveryOutcome.fail(
            f"{robot}: unexpected answer: {redact_text(response.text[:200])}", response.status_code
        )
    errmsg = redact_text(str(answer.get("errmsg", "")))[:200]
    if code == 0:
        return DeliveryOutcome.delivered(response.status_code, f"{robot} errcode 0 {errmsg}".strip())
    detail = f"{robot} errcode {code}: {errmsg}"
    if code in rate_limit_codes:
        return DeliveryOutcome.retry(detail, response.status_code, rate_limit_codes[code])
    if code in transient_codes:
        return DeliveryOutcome.retry(detail, response.status_code)
    return DeliveryOutcome.fail(detail, response.status_code)


def json_body(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
