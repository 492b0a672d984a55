"""The routes file (config/routes.yaml) as a model: its format and the checks that need
nothing but the file itself. What the names in it refer to (catalog codes, departments,
grid codes, interval names) is checked when it is compiled (compiler.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.configfiles import ConfigError, error_at


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def minutes_of_day(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class TimeRangeSpec(_Strict):
    start: str
    end: str

    @model_validator(mode="after")
    def _valid(self) -> "TimeRangeSpec":
        for name in ("start", "end"):
            if not _HHMM.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r} is not HH:MM (00:00–24:00)")
        if minutes_of_day(self.start) >= minutes_of_day(self.end):
            raise ValueError(f"start {self.start} must be before end {self.end} (split ranges that cross midnight)")
        return self


def parse_ranges(items: list[str], names: tuple[str, ...] | None, lo: int, hi: int, what: str) -> list[tuple[int, int]]:
    """'monday:friday' / '1:15' / 'saturday' → inclusive (lo, hi) pairs."""
    out = []
    for item in items:
        parts = item.lower().split(":")
        if len(parts) > 2:
            raise ValueError(f"{what} {item!r}: use a single value or 'first:last'")
        vals = []
        for p in parts:
            p = p.strip()
            if names is not None and p in names:
                vals.append(names.index(p) + lo)
            elif p.isdigit() and lo <= int(p) <= hi:
                vals.append(int(p))
            else:
                raise ValueError(f"{what} {item!r} is not valid")
        a, b = vals[0], vals[-1]
        if a > b:
            raise ValueError(f"{what} range {item!r} runs backwards")
        out.append((a, b))
    return out


class TimeIntervalSpec(_Strict):
    """Like Alertmanager's time_intervals: every given field must match (AND)."""

    times: list[TimeRangeSpec] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    location: str = "Asia/Shanghai"

    @field_validator("weekdays")
    @classmethod
    def _wd(cls, v: list[str]) -> list[str]:
        parse_ranges(v, WEEKDAYS, 0, 6, "weekday")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _dom(cls, v: list[str]) -> list[str]:
        parse_ranges(v, None, 1, 31, "day of month")
        return v

    @field_validator("months")
    @classmethod
    def _mon(cls, v: list[str]) -> list[str]:
        names = (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        )
        parse_ranges(v, names, 1, 12, "month")
        return v

    @field_validator("location")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


def _quoted_codes(v: Any) -> Any:
    # YAML reads an unquoted 01037 as the octal int 543: insist on quoting, clearly
    if isinstance(v, (str, int)):
        v = [v]
    for item in v or []:
        if not isinstance(item, str):
            raise ValueError(f'{item!r}: quote category codes ("01037"), YAML drops leading zeros')
    return v


class MatchSpec(_Strict):
    """All given matchers must match (AND); the three category forms are alternatives (OR)."""

    category: list[str] = Field(default_factory=list, description="exact type codes")
    category_prefix: list[str] = Field(default_factory=list)
    category_regex: str | None = Field(None, description="anchored at both ends, like Alertmanager")
    kind: Literal["component", "matter"] | None = None
    grid_prefix: list[str] = Field(default_factory=list, description="street/community/patch code prefixes")
    severity: list[Literal["normal", "urgent"]] = Field(default_factory=list)
    attrs: dict[str, str | list[str]] = Field(default_factory=dict, description="attribute equals one of")
    attrs_regex: dict[str, str] = Field(default_factory=dict)
    attrs_absent: list[str] = Field(default_factory=list, description="attributes that must not be set")
    active_time_intervals: list[str] = Field(default_factory=list, description="matches inside any of them")
    inactive_time_intervals: list[str] = Field(default_factory=list, description="matches outside all of them")

    @field_validator("severity", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("category", "category_prefix", mode="before")
    @classmethod
    def _codes_as_str(cls, v: Any) -> Any:
        return _quoted_codes(v)

    @field_validator("category")
    @classmethod
    def _code_format(cls, v: list[str]) -> list[str]:
        for code in v:
            if not re.fullmatch(r"\d{5}", code):
                raise ValueError(f"{code!r} is not a 5-digit type code")
        return v

    @field_validator("category_prefix")
    @classmethod
    def _prefix_format(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"\d{1,4}", p):
                raise ValueError(f"{p!r} is not a 1–4 digit code prefix")
        return v

    @field_validator("grid_prefix", mode="before")
    @classmethod
    def _grid_format(cls, v: Any) -> Any:
        if isinstance(v, (str, int)):
            v = [v]
        for p in v or []:
            if not isinstance(p, str) or not re.fullmatch(r"\d{6}(\d{3}){0,3}", p):
                raise ValueError(f"{p!r}: grid prefixes are quoted 6/9/12/15-digit codes")
        return v

    @field_validator("attrs")
    @classmethod
    def _attr_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, val in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_]{1,40}", key):
                raise ValueError(f"attribute name {key!r} must be alphanumeric/underscore")
            if val == [] or val == "":
                raise ValueError(f"attribute {key!r} needs a value")
        return v

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in type(self).model_fields)


class RouteSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,39}$")
    note: str = ""
    match: MatchSpec = Field(default_factory=MatchSpec)
    depts: list[str] | None = None
    sla_policy: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_\-]{0,39}$")
    mode: Literal["service", "management", "enforcement"] | None = None
    level: int | None = Field(None, ge=1, le=5)
    continue_: bool = Field(False, alias="continue")
    routes: list["RouteSpec"] = Field(default_factory=list)

    @field_validator("depts", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class RoutesFile(_Strict):
    version: Literal[1] = 1
    time_intervals: dict[str, list[TimeIntervalSpec]] = Field(default_factory=dict)
    intentionally_triaged: list[str] = Field(
        default_factory=list, description="type codes that deliberately fall through to station triage"
    )
    route: RouteSpec

    @field_validator("intentionally_triaged", mode="before")
    @classmethod
    def _codes(cls, v: Any) -> Any:
        return _quoted_codes(v)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_routes(path: Path) -> tuple[RoutesFile, yaml.Node | None]:
    """Parse once with libyaml when present (the pure-Python parser takes ~0.5 s for the
    shipped tree, too slow for a reload), keeping the node tree for line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.SafeLoader("").construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(path, mark.line + 1 if mark else None, "", f"not valid YAML: {exc}") from exc
    try:
        return RoutesFile.model_validate(data if data is not None else {}), node
    except ValidationError as exc:
        first = exc.errors()[0]
        raise error_at(path, node, tuple(first["loc"]), first["msg"]) from exc
