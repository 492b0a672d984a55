"""Compiling the routes file into a RoutingTree: the names it uses are checked against the
catalog, departments and grid, category matchers are evaluated against the catalog once,
and each route keeps, per category, only the children that could match it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from services.router.routes_file import (
    WEEKDAYS,
    MatchSpec,
    RouteSpec,
    TimeIntervalSpec,
    minutes_of_day,
    parse_ranges,
    read_routes,
)
from services.router.tree import ALWAYS, ROOT, Receiver, RoutingTree, _Interval, _Node
from shared.catalog import Catalog, load_catalog
from shared.config import get_settings
from shared.configfiles import ConfigError, error_at
from shared.departments import GRID_STATION, Department, load_departments


def _compile_interval(spec: TimeIntervalSpec) -> _Interval:
    months = (
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
    return _Interval(
        minutes=tuple((minutes_of_day(r.start), minutes_of_day(r.end)) for r in spec.times),
        weekdays=tuple(parse_ranges(spec.weekdays, WEEKDAYS, 0, 6, "weekday")),
        days=tuple(parse_ranges(spec.days_of_month, None, 1, 31, "day of month")),
        months=tuple(parse_ranges(spec.months, months, 1, 12, "month")),
        tz=ZoneInfo(spec.location),
    )


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
    def __init__(
        self,
        path: Path,
        node: Any,
        catalog: Catalog,
        dept_codes: set[str],
        intervals: dict[str, tuple[_Interval, ...]],
        grid: Any,
    ) -> None:
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

    def compile(
        self,
        spec: RouteSpec,
        loc: tuple[Any, ...],
        parent: _Node | None,
        reach: frozenset[tuple[str, str]] | None = None,
    ) -> _Node:
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
            node.grid_prefixes
            or node.severities
            or node.attrs
            or node.attrs_regex
            or node.attrs_absent
            or node.active
            or node.inactive
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
                raise self.err(
                    loc + ("routes", i, "name"), f"route name {child.name!r} repeats sibling #{names[child.name]}"
                )
            names[child.name] = i
            children.append(self.compile(child, loc + ("routes", i), node, child_reach))
            taker = children[-1]
            if not taker.continue_ and not taker.has_runtime_matchers:
                # an unconditional route takes its categories from every later sibling
                taken = taker.cats if taker.cats is not None else frozenset(self.keys)
                for cat_key in taken:
                    self.taken_by.setdefault(cat_key, taker.path)
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
                c
                for c, s in zip(node.children, spec.routes, strict=True)
                if not _looks_at_category(s.match) or key in c.cats  # type: ignore[operator]
            )
            if cands != node.uncategorised:
                node.by_cat[key] = cands


def _looks_at_category(m: MatchSpec) -> bool:
    return bool(m.category or m.category_prefix or m.category_regex or m.kind)


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
    spec, yaml_node = read_routes(path)
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
