"""The routing tree (config/routes.yaml): who handles a case. Data, not code.

Semantics follow Alertmanager's `route`:
- the root matches everything and sends to `station` (the street's grid station) for triage;
- a matching route descends into its children, checked in order; the first matching child
  wins, unless it has `continue: true`, in which case later siblings are checked too
  (fan-out: joint enforcement 联合执法, one order per department);
- when no child matches, the route itself handles the case with its own departments;
- children inherit `depts`, `sla_policy`, `mode` and `level` from their parent.

Re-routing after "not ours": departments in `exclude_depts` are removed from every route;
a route left without departments counts as not matching, so the search goes on to later
siblings and finally up to the parent's departments. With nothing left, the root answers
`station` with a reason that says the case is disputed (争议件).

The loader compiles the file once: category matchers are evaluated against the catalog at
load time, and each route keeps, per category, only the children that could match it, so
a decision touches a handful of routes whatever the size of the tree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.catalog import Catalog, load_catalog
from shared.config import get_settings
from shared.configfiles import ConfigError, error_at
from shared.departments import GRID_STATION, Department, load_departments

MODES = ("service", "management", "enforcement")
SEVERITIES = ("normal", "urgent")
ROOT = "root"
ALWAYS = "always"  # description of a route without matchers


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class RoutingInput:
    category: str
    category_kind: str
    grid: str
    severity: str
    attributes: Mapping[str, str]
    at: datetime  # aware
    exclude_depts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Receiver:
    dept: str
    sla_policy: str
    mode: str  # service | management | enforcement
    level: int  # grid level that first handles it, 1..5
    route: str  # path of the matched route, e.g. "root/telecom/cmcc"
    reason: str  # which matchers matched


# --------------------------------------------------------------------------- file format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _minutes(hhmm: str) -> int:
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
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError(f"start {self.start} must be before end {self.end} (split ranges that cross midnight)")
        return self


def _ranges(items: list[str], names: tuple[str, ...] | None, lo: int, hi: int, what: str) -> list[tuple[int, int]]:
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
        _ranges(v, WEEKDAYS, 0, 6, "weekday")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _dom(cls, v: list[str]) -> list[str]:
        _ranges(v, None, 1, 31, "day of month")
        return v

    @field_validator("months")
    @classmethod
    def _mon(cls, v: list[str]) -> list[str]:
        names = ("january", "february", "march", "april", "may", "june", "july", "august",
                 "september", "october", "november", "december")
        _ranges(v, names, 1, 12, "month")
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
            raise ValueError(f"{item!r}: quote category codes (\"01037\"), YAML drops leading zeros")
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


# --------------------------------------------------------------------------- compiled tree


@dataclass(frozen=True)
class _Interval:
    minutes: tuple[tuple[int, int], ...]  # [start, end) in minutes of the local day
    weekdays: tuple[tuple[int, int], ...]
    days: tuple[tuple[int, int], ...]
    months: tuple[tuple[int, int], ...]
    tz: ZoneInfo

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        if self.minutes:
            m = local.hour * 60 + local.minute
            if not any(a <= m < b for a, b in self.minutes):
                return False
        if self.weekdays and not any(a <= local.weekday() <= b for a, b in self.weekdays):
            return False
        if self.days and not any(a <= local.day <= b for a, b in self.days):
            return False
        if self.months and not any(a <= local.month <= b for a, b in self.months):
            return False
        return True


def _compile_interval(spec: TimeIntervalSpec) -> _Interval:
    months = ("january", "february", "march", "april", "may", "june", "july", "august",
              "september", "october", "november", "december")
    return _Interval(
        minutes=tuple((_minutes(r.start), _minutes(r.end)) for r in spec.times),
        weekdays=tuple(_ranges(spec.weekdays, WEEKDAYS, 0, 6, "weekday")),
        days=tuple(_ranges(spec.days_of_month, None, 1, 31, "day of month")),
        months=tuple(_ranges(spec.months, months, 1, 12, "month")),
        tz=ZoneInfo(spec.location),
    )


@dataclass(eq=False)
class _Node:
    name: str
    path: str
    depts: tuple[str, ...]
    sla_policy: str
    mode: str
    level: int
    continue_: bool
    desc: str  # this route's matchers, for reasons and `routes show`
    reason: str  # the whole path's matchers
    note: str = ""
    # runtime matchers (category and kind are folded into the parent's child index)
    cats: frozenset[tuple[str, str]] | None = None
    grid_prefixes: tuple[str, ...] = ()
    severities: frozenset[str] = frozenset()
    attrs: tuple[tuple[str, frozenset[str]], ...] = ()
    attrs_regex: tuple[tuple[str, re.Pattern[str]], ...] = ()
    attrs_absent: tuple[str, ...] = ()
    active: tuple[tuple[str, tuple[_Interval, ...]], ...] = ()
    inactive: tuple[tuple[str, tuple[_Interval, ...]], ...] = ()
    children: tuple["_Node", ...] = ()
    by_cat: dict[tuple[str, str], tuple["_Node", ...]] = field(default_factory=dict)
    uncategorised: tuple["_Node", ...] = ()
    receivers: tuple[Receiver, ...] = ()
    has_runtime_matchers: bool = False

    def matches(self, inp: RoutingInput) -> bool:
        """Everything but the category, which the parent's index already checked."""
        if not self.has_runtime_matchers:
            return True
        if self.grid_prefixes and not inp.grid.startswith(self.grid_prefixes):
            return False
        if self.severities and inp.severity not in self.severities:
            return False
        attrs = inp.attributes
        for key, values in self.attrs:
            if attrs.get(key) not in values:
                return False
        for key, pattern in self.attrs_regex:
            value = attrs.get(key)
            if value is None or not pattern.fullmatch(value):
                return False
        for key in self.attrs_absent:
            if attrs.get(key):
                return False
        for _, intervals in self.active:
            if any(i.contains(inp.at) for i in intervals):
                break
        else:
            if self.active:
                return False
        for _, intervals in self.inactive:
            if any(i.contains(inp.at) for i in intervals):
                return False
        return True

    def candidates(self, key: tuple[str, str]) -> tuple["_Node", ...]:
        return self.by_cat.get(key, self.uncategorised)


class RoutingTree:
    """Immutable after loading: swap a whole new tree in to reload."""

    def __init__(
        self,
        root: _Node,
        intentionally_triaged: frozenset[str],
        source: str = "",
        time_intervals: Mapping[str, tuple[_Interval, ...]] | None = None,
    ) -> None:
        self.root = root
        self.intentionally_triaged = intentionally_triaged
        self.source = source
        self.time_intervals = dict(time_intervals or {})
        self._station = root.receivers[0] if root.receivers else Receiver(
            GRID_STATION, root.sla_policy, root.mode, root.level, ROOT, "no route matched: grid station triage"
        )

    # -- deciding

    def route(self, inp: RoutingInput) -> list[Receiver]:
        out: list[Receiver] = []
        excl = inp.exclude_depts
        self._walk(self.root, inp, (inp.category_kind, inp.category), excl, out, None)
        if not out:
            return [self._fallback(excl)]
        if len(out) > 1:  # two `continue` routes may name the same department: first wins
            seen: set[str] = set()
            out = [r for r in out if not (r.dept in seen or seen.add(r.dept))]
        return out

    def explain(self, inp: RoutingInput) -> list[str]:
        trail: list[str] = [f"✓ {ROOT}  (matches everything)"]
        out: list[Receiver] = []
        self._walk(self.root, inp, (inp.category_kind, inp.category), inp.exclude_depts, out, trail, depth=1)
        if not out:
            fb = self._fallback(inp.exclude_depts)
            trail.append(f"→ {ROOT}: {fb.reason}")
        return trail

    def _fallback(self, excl: frozenset[str]) -> Receiver:
        if not excl:
            return self._station
        s = self._station
        reason = (
            f"disputed (争议件): rejected by {', '.join(sorted(excl))} and no other route remains; "
            "grid station arbitrates"
        )
        return Receiver(GRID_STATION, s.sla_policy, s.mode, s.level, ROOT, reason)

    def _walk(
        self,
        node: _Node,
        inp: RoutingInput,
        key: tuple[str, str],
        excl: frozenset[str],
        out: list[Receiver],
        trail: list[str] | None,
        depth: int = 0,
    ) -> bool:
        """Append the receivers of `node` (already matched) or of its matching children."""
        handled = False
        for child in node.candidates(key):
            if not child.matches(inp):
                if trail is not None:
                    trail.append(f"{'  ' * depth}✗ {child.path}  ({child.desc})")
                continue
            if trail is not None:
                flag = ", continue" if child.continue_ else ""
                trail.append(f"{'  ' * depth}✓ {child.path}  ({child.desc}{flag})")
            if self._walk(child, inp, key, excl, out, trail, depth + 1):
                handled = True
                if not child.continue_:
                    break
            elif trail is not None:
                trail.append(f"{'  ' * depth}  ↩ {child.path}: every department excluded, keep looking")
        if handled:
            return True
        if node is self.root:
            return False  # the caller decides between triage and dispute
        if not excl:
            out.extend(node.receivers)
            if trail is not None:
                trail.append(f"{'  ' * depth}→ {node.path}: {', '.join(node.depts)}")
            return True
        kept = [r for r in node.receivers if r.dept not in excl]
        if not kept:
            return False
        note = f"; re-routed excluding {', '.join(sorted(excl))}"
        out.extend(Receiver(r.dept, r.sla_policy, r.mode, r.level, r.route, r.reason + note) for r in kept)
        if trail is not None:
            trail.append(f"{'  ' * depth}→ {node.path}: {', '.join(r.dept for r in kept)}")
        return True

    # -- inspecting

    def nodes(self) -> Iterable[_Node]:
        stack = [self.root]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def describe(self) -> list[str]:
        """Human-readable tree for `gridbus routes show`."""
        lines: list[str] = []

        def visit(n: _Node, depth: int) -> None:
            pad = "  " * depth
            flag = "  [continue]" if n.continue_ else ""
            lines.append(
                f"{pad}{n.name}{flag}: {n.desc} → {','.join(n.depts)} "
                f"(sla={n.sla_policy}, mode={n.mode}, level={n.level})"
            )
            if n.note:
                lines.append(f"{pad}  # {n.note}")
            for c in n.children:
                visit(c, depth + 1)

        visit(self.root, 0)
        return lines


# --------------------------------------------------------------------------- loading


def _describe(m: MatchSpec) -> str:
    parts: list[str] = []
    cat: list[str] = []
    if len(m.category) == 1:
        cat.append(m.category[0])
    elif 1 < len(m.category) <= 8:
        cat.append("{" + ",".join(m.category) + "}")
    elif m.category:  # reasons are stored on every case: keep them short
        cat.append("{" + ",".join(m.category[:4]) + f",… {len(m.category)} codes}}")
    cat += [f"{p}*" for p in m.category_prefix]
    if m.category_regex:
        cat.append(f"~/{m.category_regex}/")
    if cat:
        parts.append("category " + " | ".join(cat))
    if m.kind:
        parts.append(f"kind={m.kind}")
    if m.grid_prefix:
        parts.append("grid " + "|".join(f"{p}*" for p in m.grid_prefix))
    if m.severity:
        parts.append("severity=" + "|".join(m.severity))
    for k, v in m.attrs.items():
        parts.append(f"{k}=" + (v if isinstance(v, str) else "|".join(v)))
    for k, v in m.attrs_regex.items():
        parts.append(f"{k}~/{v}/")
    for k in m.attrs_absent:
        parts.append(f"no {k}")
    if m.active_time_intervals:
        parts.append("during " + "|".join(m.active_time_intervals))
    if m.inactive_time_intervals:
        parts.append("outside " + "|".join(m.inactive_time_intervals))
    return ", ".join(parts) or ALWAYS


class _Compiler:
    def __init__(self, path: Path, node: Any, catalog: Catalog, dept_codes: set[str],
                 intervals: dict[str, tuple[_Interval, ...]], grid: Any) -> None:
        self.path, self.yaml_node, self.catalog = path, node, catalog
        self.dept_codes, self.intervals, self.grid = dept_codes, intervals, grid
        self.keys = [c.key for c in catalog]
        self.taken_by: dict[tuple[str, str], str] = {}  # first unconditional route of each category

    def err(self, loc: tuple[Any, ...], msg: str) -> ConfigError:
        return error_at(self.path, self.yaml_node, loc, msg)

    def cats(self, m: MatchSpec, loc: tuple[Any, ...]) -> frozenset[tuple[str, str]] | None:
        """The catalog entries a route can match, or None when it does not look at the category."""
        ml = loc + ("match",)
        if not (m.category or m.category_prefix or m.category_regex or m.kind):
            return None
        keys = self.keys if m.kind is None else [k for k in self.keys if k[0] == m.kind]
        chosen: set[tuple[str, str]] = set()
        any_category = bool(m.category or m.category_prefix or m.category_regex)
        for i, code in enumerate(m.category):
            hit = {k for k in keys if k[1] == code}
            if not hit:
                what = f"{m.kind} " if m.kind else ""
                raise self.err(ml + ("category", i), f"{code} is not a {what}code of the catalog")
            chosen |= hit
        for i, prefix in enumerate(m.category_prefix):
            hit = {k for k in keys if k[1].startswith(prefix)}
            if not hit:
                raise self.err(ml + ("category_prefix", i), f"prefix {prefix!r} matches no catalog entry")
            chosen |= hit
        if m.category_regex:
            try:
                pattern = re.compile(m.category_regex)
            except re.error as exc:
                raise self.err(ml + ("category_regex",), f"invalid regex: {exc}") from exc
            hit = {k for k in keys if pattern.fullmatch(k[1])}
            if not hit:
                raise self.err(ml + ("category_regex",), f"regex {m.category_regex!r} matches no catalog entry")
            chosen |= hit
        if not any_category:
            chosen = set(keys)
        return frozenset(chosen)

    def compile(self, spec: RouteSpec, loc: tuple[Any, ...], parent: _Node | None,
                reach: frozenset[tuple[str, str]] | None = None) -> _Node:
        """Compile one route; `reach` is what earlier routes leave for it (None: everything)."""
        m = spec.match
        ml = loc + ("match",)
        if parent is None:
            if not m.is_empty():
                raise self.err(ml, "the root route matches everything: it takes no matchers")
            if spec.continue_:
                raise self.err(loc + ("continue",), "the root route cannot continue")
            for field_name in ("depts", "sla_policy", "mode", "level"):
                if getattr(spec, field_name) is None:
                    raise self.err(loc, f"the root route must set {field_name} (children inherit it)")
            if spec.depts != [GRID_STATION]:
                raise self.err(loc + ("depts",), f"the root route sends to [{GRID_STATION}] (grid station triage)")
        depts = tuple(spec.depts) if spec.depts is not None else parent.depts  # type: ignore[union-attr]
        if spec.depts is not None:
            if not spec.depts:
                raise self.err(loc + ("depts",), "give at least one department, or leave depts out to inherit")
            for i, d in enumerate(spec.depts):
                if d not in self.dept_codes:
                    raise self.err(loc + ("depts", i), f"unknown department {d!r} (not in departments.yaml)")
            if len(set(spec.depts)) != len(spec.depts):
                raise self.err(loc + ("depts",), "a department is listed twice")
        for i, name in enumerate(m.active_time_intervals):
            if name not in self.intervals:
                raise self.err(ml + ("active_time_intervals", i), f"unknown time interval {name!r}")
        for i, name in enumerate(m.inactive_time_intervals):
            if name not in self.intervals:
                raise self.err(ml + ("inactive_time_intervals", i), f"unknown time interval {name!r}")
        for i, prefix in enumerate(m.grid_prefix):
            if self.grid is not None and not self.grid.is_known(prefix):
                raise self.err(ml + ("grid_prefix", i), f"{prefix} is not a code of the grid registry")
        attrs_regex = []
        for key, rx in m.attrs_regex.items():
            try:
                attrs_regex.append((key, re.compile(rx)))
            except re.error as exc:
                raise self.err(ml + ("attrs_regex", key), f"invalid regex: {exc}") from exc
        cats = self.cats(m, loc) if parent is not None else None
        if parent is not None and cats is not None and parent.cats is not None and not (cats & parent.cats):
            raise self.err(ml, f"can never match: no category of this route is matched by its parent {parent.path}")
        path = ROOT if parent is None else f"{parent.path}/{spec.name}"
        desc = _describe(m)
        own = "joint dispatch" if desc == ALWAYS and spec.continue_ else desc
        if parent is None:
            reason = "no route matched: grid station triage"
        elif parent.path == ROOT or desc == ALWAYS and not spec.continue_:
            reason = own if parent.path == ROOT else parent.reason
        else:
            reason = f"{parent.reason}; {own}"
        node = _Node(
            name=spec.name,
            path=path,
            depts=depts,
            sla_policy=spec.sla_policy or parent.sla_policy,  # type: ignore[union-attr]
            mode=spec.mode or parent.mode,  # type: ignore[union-attr]
            level=spec.level or parent.level,  # type: ignore[union-attr]
            continue_=spec.continue_,
            desc=desc,
            reason=reason,
            note=spec.note,
            # a child only ever sees what its ancestors let through: keep the intersection
            cats=cats if parent is None or parent.cats is None or cats is None else cats & parent.cats,
            grid_prefixes=tuple(m.grid_prefix),
            severities=frozenset(m.severity),
            attrs=tuple((k, frozenset([v] if isinstance(v, str) else v)) for k, v in m.attrs.items()),
            attrs_regex=tuple(attrs_regex),
            attrs_absent=tuple(m.attrs_absent),
            active=tuple((n, self.intervals[n]) for n in m.active_time_intervals),
            inactive=tuple((n, self.intervals[n]) for n in m.inactive_time_intervals),
        )
        if node.cats is None and parent is not None:
            node.cats = parent.cats
        node.has_runtime_matchers = bool(
            node.grid_prefixes or node.severities or node.attrs or node.attrs_regex or node.attrs_absent
            or node.active or node.inactive
        )
        node.receivers = tuple(
            Receiver(d, node.sla_policy, node.mode, node.level, node.path, node.reason) for d in node.depts
        )
        my_reach = node.cats if reach is None else (reach if node.cats is None else node.cats & reach)
        if parent is not None and my_reach is not None and not my_reach:
            some = next(iter(sorted(node.cats or ())), None)
            raise self.err(
                loc,
                f"route {spec.name!r} is never reached: earlier routes take every case it matches"
                + (f" (e.g. {some[1]} goes to {self.taken_by.get(some, 'an earlier route')})" if some else "")
                + "; narrow them or give them continue: true",
            )
        child_reach = my_reach
        names: dict[str, int] = {}
        children: list[_Node] = []
        for i, child in enumerate(spec.routes):
            if child.name in names:
                raise self.err(loc + ("routes", i, "name"),
                               f"route name {child.name!r} repeats sibling #{names[child.name]}")
            names[child.name] = i
            children.append(self.compile(child, loc + ("routes", i), node, child_reach))
            taker = children[-1]
            if not taker.continue_ and not taker.has_runtime_matchers:
                # an unconditional route takes its categories from every later sibling
                taken = taker.cats if taker.cats is not None else frozenset(self.keys)
                for key in taken:
                    self.taken_by.setdefault(key, taker.path)
                child_reach = (frozenset(self.keys) if child_reach is None else child_reach) - taken
        node.children = tuple(children)
        self._index(node, spec)
        return node

    def _index(self, node: _Node, spec: RouteSpec) -> None:
        """Per category, the children that can match it, in their order."""
        own = [c for c, s in zip(node.children, spec.routes, strict=True) if not _looks_at_category(s.match)]
        node.uncategorised = tuple(own)
        relevant = node.cats if node.cats is not None else frozenset(self.keys)
        for key in relevant:
            cands = tuple(
                c for c, s in zip(node.children, spec.routes, strict=True)
                if not _looks_at_category(s.match) or key in c.cats  # type: ignore[operator]
            )
            if cands != node.uncategorised:
                node.by_cat[key] = cands


def _looks_at_category(m: MatchSpec) -> bool:
    return bool(m.category or m.category_prefix or m.category_regex or m.kind)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_routes(path: Path) -> tuple[RoutesFile, yaml.Node | None]:
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


def load_routing_tree(
    path: Path | None = None,
    catalog: Catalog | None = None,
    departments: Iterable[Department] | Iterable[str] | None = None,
    grid: Any = None,
) -> RoutingTree:
    """Read, validate and compile routes.yaml. Pure: no global state is touched, so the
    router may call it on SIGHUP and swap the result in atomically.

    `grid` (a GridRegistry) checks that grid prefixes are known codes; by default the
    registry from the same config folder is used when it exists.
    """
    settings = get_settings()
    path = Path(path or settings.config_dir / "routes.yaml")
    spec, yaml_node = _read_routes(path)
    catalog = catalog if catalog is not None else load_catalog()
    if departments is None:
        departments = load_departments()
    dept_codes = {d if isinstance(d, str) else d.code for d in departments}
    dept_codes.add(GRID_STATION)
    if grid is None:
        default_grid = settings.config_dir / "grid.yaml"
        if default_grid.exists():
            from shared.grid import load_grid

            grid = load_grid(default_grid)
    intervals: dict[str, tuple[_Interval, ...]] = {}
    for name, specs in spec.time_intervals.items():
        if not re.fullmatch(r"[a-z0-9_\-]{1,40}", name):
            raise error_at(path, yaml_node, ("time_intervals", name), f"interval name {name!r} must be lowercase ascii")
        if not specs:
            raise error_at(path, yaml_node, ("time_intervals", name), "an interval needs at least one entry")
        intervals[name] = tuple(_compile_interval(s) for s in specs)
    compiler = _Compiler(path, yaml_node, catalog, dept_codes, intervals, grid)
    root = compiler.compile(spec.route, ("route",), None)
    for i, code in enumerate(spec.intentionally_triaged):
        if code not in catalog:
            raise error_at(path, yaml_node, ("intentionally_triaged", i), f"{code} is not a code of the catalog")
    return RoutingTree(root, frozenset(spec.intentionally_triaged), str(path), intervals)
