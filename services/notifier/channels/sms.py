"""SMS through an HTTP provider: pre-registered template id + parameters, not free text.

Chinese SMS providers only send texts whose template and signature (签名) were approved
beforehand, so the rendered `text` is for logs and the dead-letter record; the
provider gets the template id and parameters. The request, kept provider-neutral
(an adapter or gateway maps it onto Aliyun/Tencent if needed):

    POST {sms_url}
    Authorization: Bearer {sms_api_key}
    {"phone": "13800001111", "sign_name": "七星城管", "template_id": "SMS_465320001",
     "params": {"case_id": "…", …}, "out_id": "<delivery id>"}

Answer: 2xx with `{"code": "OK", …}`; any other `code` is the provider refusing.
`out_id` is the delivery id, which providers echo in receipts and can de-duplicate on.
"""

from __future__ import annotations

import json
import re

from services.notifier.channels.base import (
    ChannelSettings,
    DeliveryOutcome,
    OutgoingMessage,
    classify_status,
    http_post,
    require_http_url,
)
from shared.logs import mask_phone, redact_text

_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
# Codes a provider uses for "slow down / busy", across common gateways.
TRANSIENT_CODES = {"BUSY", "THROTTLED", "RATE_LIMITED", "isv.BUSINESS_LIMIT_CONTROL", "LimitExceeded"}


def normalise_phone(raw: str) -> str | None:
    match = _MOBILE.match(re.sub(r"[\s\-]", "", raw))
    return match.group(1) if match else None


def build(message: OutgoingMessage, phone: str, settings: ChannelSettings) -> dict:
    return {
        "phone": phone,
        "sign_name": settings.sms_sign,
        "template_id": message.sms_template,
        "params": {str(k): str(v) for k, v in message.sms_params.items()},
        "out_id": message.delivery_id,
    }


def deliver(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    phone = normalise_phone(message.to)
    if phone is None:
        return DeliveryOutcome.fail(f"not a mainland mobile number: {mask_phone(message.to)}")
    if not message.sms_template:
        return DeliveryOutcome.fail("no SMS template id for this message")
    if not settings.sms_url:
        return DeliveryOutcome.fail("SMS provider URL not configured (GRIDBUS_SMS_URL)")
    bad_url = require_http_url(settings.sms_url)
    if bad_url:
        return bad_url
    headers = {"Content-Type": "application/json; charset=utf-8"}
    api_key = settings.sms_api_key.get_secret_value()
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = json.dumps(build(message, phone, settings), ensure_ascii=False).encode("utf-8")
    response = http_post(settings.sms_url, content=body, headers=headers, timeout=settings.timeout)
    if isinstance(response, DeliveryOutcome):
        return response
    by_status = classify_status(response)
    if by_status:
        return by_status
    try:
        answer = response.json()
        code = str(answer.get("code", ""))
    except (ValueError, AttributeError):
        return DeliveryOutcome.fail(f"sms: unexpected answer: {redact_text(response.text[:200])}", response.status_code)
    message_text = redact_text(str(answer.get("message", "")))[:200]
    if code.upper() == "OK":
        ref = answer.get("message_id") or answer.get("biz_id") or ""
        return DeliveryOutcome.delivered(response.status_code, f"sms accepted {ref}".strip())
    detail = f"sms provider code {code}: {message_text}"
    if code in TRANSIENT_CODES:
        return DeliveryOutcome.retry(detail, response.status_code)
    return DeliveryOutcome.fail(detail, response.status_code)
