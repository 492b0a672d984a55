"""Strict input of the grid app's report and a department's reply (issue 11): the same
rules over HTTP and AMQP (`parse` validates a decoded AMQP body as the JSON it came as)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.intake.validation import IDEMPOTENCY_KEY, InvalidInput, parse
from shared.models import Reply, Report
from tests.bad_input import BAD_REPORT_FIELDS, with_field


def good() -> dict[str, Any]:
    return {
        "report_id": "r-1",
        "category": "01037",
        "description": "路灯不亮\n第二行",
        "location": {"lat": 25.27, "lon": 110.32, "address": "七星区穿山路12号", "grid": "450305001001001"},
        "media_urls": ["https://x.example/a.jpg"],
        "attributes": {"asset_owner": "cmcc"},
        "reporter": {"id": "w-1", "role": "grid_officer", "phone": "13800001024"},
        "observed_at": "2026-11-27T09:30:00+08:00",
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    return with_field(good(), path, value)


@pytest.mark.parametrize(
    "path, value, field", [row[1:] for row in BAD_REPORT_FIELDS], ids=[row[0] for row in BAD_REPORT_FIELDS]
)
@pytest.mark.parametrize("channel", ["http", "amqp"])
def test_bad_report_names_the_field(path: str, value: Any, field: str, channel: str) -> None:
    body = changed(path, value)
    with pytest.raises(InvalidInput) as info:
        parse(Report, json.dumps(body).encode() if channel == "http" else body)
    assert any(e.field == field or e.field.startswith(field) for e in info.value.errors), info.value.errors


def test_good_report_passes_both_ways() -> None:
    assert parse(Report, json.dumps(good()).encode()) == parse(Report, good())
    assert parse(Report, changed("observed_at", "2026-11-27t01:30:00.123z")).observed_at.microsecond == 123000
    assert parse(Report, changed("location.lat", 25)).location.lat == 25.0  # an integer is a number


@pytest.mark.parametrize(
    "body, field",
    [
        ({"reply_id": "a\nb", "action": "acknowledge"}, "reply_id"),
        ({"reply_id": "r", "action": "reject", "reason": "x\r\ny"}, "reason"),
        (
            {"reply_id": "r", "action": "resolve", "mode": "service", "evidence_urls": ["https://e/x y"]},
            "evidence_urls[0]",
        ),
        ({"reply_id": "r", "action": "progress", "note": "a\x07"}, "note"),
    ],
)
def test_bad_reply_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(Reply, json.dumps(body))
    assert info.value.errors[0].field == field


@pytest.mark.parametrize(
    "key, ok",
    [
        ("abc-1:2.3_4", True),
        ("x" * 40, True),
        ("x" * 41, False),
        ("a b", False),
        ("", False),
        ("ü", False),
        ("a\r\nb", False),
    ],
)
def test_idempotency_key_rule(key: str, ok: bool) -> None:
    assert bool(IDEMPOTENCY_KEY.match(key)) is ok
