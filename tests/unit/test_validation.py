"""Reports: one error per bad field, with its path; never an exception other than InvalidInput."""

import json

import pytest

from services.intake.validation import InvalidInput, parse
from shared.models import Report


def good() -> dict:
    return {
        "report_id": "r-1",
        "category": "01037",
        "description": "路灯不亮",
        "severity": "normal",
        "location": {"lat": 25.27, "lon": 110.32, "address": "七星区穿山路12号", "grid": "450305001001001"},
        "reporter": {"id": "w-1", "role": "grid_officer", "name": "黄", "phone": "13800001234"},
        "observed_at": "2026-11-27T09:30:00+08:00",
    }


def test_good_report_parses_from_bytes_and_dict() -> None:
    assert parse(Report, json.dumps(good()).encode()).category == "01037"
    assert parse(Report, good()).location.grid == "450305001001001"


def test_each_bad_field_is_named() -> None:
    body = good()
    body["location"]["lat"] = 123
    body["category"] = "lamp"
    body["observed_at"] = "2026-11-27T09:30:00"  # no time zone
    body["surprise"] = 1
    with pytest.raises(InvalidInput) as info:
        parse(Report, json.dumps(body))
    fields = {e.field for e in info.value.errors}
    assert fields == {"location.lat", "category", "observed_at", "surprise"}
    assert info.value.as_json()["errors"][0].keys() == {"field", "message"}


@pytest.mark.parametrize("raw", [b"", b"   ", b"{not json", b"[1,2]", b"null", "\x00".encode()])
def test_garbage_is_a_clear_error(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(Report, raw)
    assert info.value.errors and all(isinstance(e.message, str) and e.message for e in info.value.errors)


def test_list_index_in_path() -> None:
    body = good()
    body["media_urls"] = ["https://x/1.jpg", "ftp://nope"]
    with pytest.raises(InvalidInput) as info:
        parse(Report, body)
    assert info.value.errors[0].field == "media_urls[1]"


def test_control_characters_refused() -> None:
    body = good()
    body["description"] = "bad\x07bell"
    with pytest.raises(InvalidInput) as info:
        parse(Report, body)
    assert info.value.errors[0].field == "description"
