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

The file's model is routes_file.py; compiler.py compiles it once: category matchers are evaluated against the catalog at
load time, and each route keeps, per category, only the children that could match it, so
a decision touches a handful of routes whatever the size of the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

from shared.departments import GRID_STATION

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
        self._station = (
            root.receivers[0]
            if root.receivers
            else Receiver(
                GRID_STATION, root.sla_policy, root.mode, root.level, ROOT, "no route matched: grid station triage"
            )
        )

    # -- deciding

    def route(self, inp: RoutingInput) -> list[Receiver]:
        out: list[Receiver] = []
        excl = inp.exclude_depts
        self._walk(self.root, inp, (inp.category_kind, inp.category), excl, out, None)
        if not out:
            return [self._fallback(excl)]
        if len(out) > 1:  # two `continue` routes may name the same department: first wins
            first: dict[str, Receiver] = {}
            for r in out:
                first.setdefault(r.dept, r)
            out = list(first.values())
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
