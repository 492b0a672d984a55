"""The bad-input table of a grid-app report, one for both boundaries: tests/unit/test_strict_input.py
checks each row against `parse` (the rules, HTTP body and AMQP body alike), tests/e2e/test_hostile.py
against the running intake (422 naming the field)."""

from __future__ import annotations

import copy
from typing import Any

PHONE = "13912345678"


def with_field(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `path` set to `value` (the original is left alone)."""
    out = copy.deepcopy(body)
    target = out
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    target[last] = value
    return out


#: (what, dotted path, value, the field the refusal must name)
BAD_REPORT_FIELDS: list[tuple[str, str, Any, str]] = [
    ("observed_at as a number (Unix time)", "observed_at", 7, "observed_at"),
    ("observed_at as a numeric string", "observed_at", "1700000000", "observed_at"),
    ("observed_at without offset", "observed_at", "2026-11-27T09:30:00", "observed_at"),
    ("observed_at with a space, no T", "observed_at", "2026-11-27 09:30:00+08:00", "observed_at"),
    ("lat as a boolean", "location.lat", True, "location.lat"),
    ("lon as a boolean", "location.lon", False, "location.lon"),
    ("lat as a string", "location.lat", "25.27", "location.lat"),
    ("lon as a string", "location.lon", "110.3", "location.lon"),
    ("CR/LF in a media URL", "media_urls", ["https://x.example/a.jpg\r\nX-Evil: 1"], "media_urls[0]"),
    ("control character in a media URL", "media_urls", ["https://x.example/\x07.jpg"], "media_urls[0]"),
    ("NUL in a media URL", "media_urls", ["https://x.example/\x00"], "media_urls[0]"),
    ("space in a media URL", "media_urls", ["https://x.example/a b.jpg"], "media_urls[0]"),
    ("a javascript: media URL", "media_urls", ["javascript:alert(1)"], "media_urls[0]"),
    ("LF in the reporter id", "reporter.id", "w-1\nINFO forged log line", "reporter.id"),
    ("CR in the reporter name", "reporter.name", "黄\r三", "reporter.name"),
    ("CR in the description", "description", "路灯不亮\r伪造", "description"),
    ("blank description", "description", "   ", "description"),
    ("only a newline as description", "description", " \n ", "description"),
    ("LF in the address", "location.address", "七星区\n穿山路", "location.address"),
    ("TAB in the address", "location.address", "a\tb", "location.address"),
    ("TAB in an attribute value", "attributes", {"asset_owner": "cm\tcc"}, "attributes.asset_owner"),
    ("a phone number as attribute key", "attributes", {f"tel:{PHONE}": "x"}, "attributes"),
    ("an attribute key too long", "attributes", {"_": "x", "a" * 41: "y"}, "attributes"),
    ("an escape sequence in the filing condition", "filing_condition", "x\x1b[31m", "filing_condition"),
]
