"""WeCom (企业微信) group robot: POST to `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`.

Markdown messages mention people by user id with `<@userid>` inside the content.
Markdown cannot mention by mobile number; only the text message type has
`mentioned_mobile_list`. So a message that must @ a liaison known only by phone goes
out as text (markdown flattened), everything else as markdown.
"""

from __future__ import annotations

import re

from services.notifier.channels.base import (
    ChannelSettings,
    DeliveryOutcome,
    OutgoingMessage,
    http_post,
    require_http_url,
)
from services.notifier.channels.robot import json_body, robot_outcome, split_mentions, truncate_utf8

MARKDOWN_LIMIT = 4096  # bytes of markdown.content
TEXT_LIMIT = 2048  # bytes of text.content
# -1 system busy; 45009 API frequency limit (20 messages a minute per robot);
# 45033 too many concurrent calls. Anything else (93000 bad key, 40008 bad msgtype,
# 44004 empty content, …) will fail the same way next time.
TRANSIENT = {-1, 45033}
RATE_LIMITED = {45009: 60.0}


def markdown_to_plain(text: str) -> str:
    """Drop the markdown a text message would show literally."""
    text = re.sub(r"</?font[^>]*>", "", text)
    text = re.sub(r"\[([^\]]*)\]\(([^)]*)\)", r"\1 \2", text)
    text = re.sub(r"^\s{0,3}#{1,6}\s+", "", text, flags=re.MULTILINE)
    text = re.sub(r"^\s{0,3}>\s?", "", text, flags=re.MULTILINE)
    return text.replace("**", "")


def build(message: OutgoingMessage) -> dict:
    phones, users = split_mentions(message.mentions)
    if phones:
        tail = f"\n投递编号 {message.delivery_id}"
        content = truncate_utf8(markdown_to_plain(message.text), TEXT_LIMIT - len(tail.encode())) + tail
        text: dict = {"content": content, "mentioned_mobile_list": phones}
        if users:
            text["mentioned_list"] = users
        return {"msgtype": "text", "text": text}
    at = "".join(f"<@{user}>" for user in users)
    tail = (f"\n{at}" if at else "") + f'\n<font color="comment">投递编号 {message.delivery_id}</font>'
    content = truncate_utf8(message.text, MARKDOWN_LIMIT - len(tail.encode())) + tail
    return {"msgtype": "markdown", "markdown": {"content": content}}


def deliver(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    bad_url = require_http_url(message.to)
    if bad_url:
        return bad_url
    response = http_post(
        message.to,
        content=json_body(build(message)),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=settings.timeout,
    )
    if isinstance(response, DeliveryOutcome):
        return response
    return robot_outcome(response, "wecom", TRANSIENT, RATE_LIMITED)
