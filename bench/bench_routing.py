"""Routing decisions per second, in-process, for the shipped tree (issue 3: ≥ 50,000/s on
one core).

    python -m bench.bench_routing [--seconds 3] [--routes config/routes.yaml]

The inputs are a realistic mix: mostly street-order and cityscape matters and facility
components, with carrier attributes, urgent reports, night-time reports, pilot and rural
grids and a few re-routings. The same inputs also go through a trivial router (one dict
lookup by category) measured in the same run, so the figure comes with a ratio that does
not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from services.router.compiler import load_routing_tree
from services.router.tree import Receiver, RoutingInput, RoutingTree
from shared.catalog import load_catalog

CST = timezone(timedelta(hours=8))
GRIDS = [
    "450305001001001",
    "450305001001002",
    "450305001002001",
    "450305002001001",
    "450305002002001",
    "450305003001001",
    "450305003002001",
    "450305004001001",
    "450305200201001",
    "450305400001001",
]
# share of reports by class (kind, class): events dominate, as on a real grid platform
CLASS_WEIGHTS = {
    ("matter", "06"): 30,
    ("matter", "09"): 22,
    ("matter", "07"): 8,
    ("matter", "08"): 8,
    ("matter", "10"): 2,
    ("component", "01"): 14,
    ("component", "02"): 5,
    ("component", "03"): 6,
    ("component", "04"): 3,
    ("component", "05"): 1,
    ("matter", "01"): 1,
}
OWNERS = ["cmcc", "unicom", "telecom", "cable", "中国移动"]


def make_inputs(n: int, seed: int = 47678) -> list[RoutingInput]:
    rng = random.Random(seed)
    catalog = load_catalog()
    by_class: dict[tuple[str, str], list[str]] = {}
    for c in catalog:
        by_class.setdefault((c.kind, c.class_code), []).append(c.code)
    classes = list(CLASS_WEIGHTS)
    weights = [CLASS_WEIGHTS[k] for k in classes]
    base = datetime(2026, 11, 23, 0, 0, tzinfo=CST)
    out = []
    for _ in range(n):
        kind, cls = rng.choices(classes, weights)[0]
        code = rng.choice(by_class[(kind, cls)])
        attrs: dict[str, str] = {}
        if cls == "01" and rng.random() < 0.5:
            attrs["asset_owner"] = rng.choice(OWNERS)
        if rng.random() < 0.05:
            attrs["hazard"] = "漏电"
        at = base + timedelta(minutes=rng.randrange(7 * 24 * 60))  # any hour of a week
        severity = "urgent" if rng.random() < 0.08 else "normal"
        exclude: frozenset[str] = frozenset()
        if rng.random() < 0.03:
            exclude = frozenset({rng.choice(["police", "cityman", "lighting", "market"])})
        out.append(RoutingInput(code, kind, rng.choice(GRIDS), severity, attrs, at, exclude))
    return out


def dict_router(inputs: list[RoutingInput]) -> Callable[[RoutingInput], list[Receiver]]:
    """The baseline: a flat table from category to a fixed receiver list."""
    table: dict[tuple[str, str], list[Receiver]] = {}
    for inp in inputs:
        table.setdefault(
            (inp.category_kind, inp.category), [Receiver("station", "default", "service", 3, "root", "table")]
        )

    def route(inp: RoutingInput) -> list[Receiver]:
        return table.get((inp.category_kind, inp.category)) or []

    return route


def rate(fn: Callable[[RoutingInput], list[Receiver]], inputs: list[RoutingInput], seconds: float) -> float:
    """Decisions per second: whole passes over the inputs until `seconds` have run."""
    gc.collect()
    done, start = 0, time.perf_counter()
    while True:
        for inp in inputs:
            fn(inp)
        done += len(inputs)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--inputs", type=int, default=20_000, help="distinct routing inputs in the mix")
    ap.add_argument("--routes", type=Path, default=None, help="routing tree (default: config/routes.yaml)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tree: RoutingTree = load_routing_tree(args.routes)
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    load_routing_tree(args.routes)  # what a reload on SIGHUP costs (catalog, grid, departments cached)
    reload_ms = (time.perf_counter() - t0) * 1000
    inputs = make_inputs(args.inputs)
    receivers = sum(len(tree.route(i)) for i in inputs)
    triaged = sum(tree.route(i)[0].dept == "station" for i in inputs)
    nodes = sum(1 for _ in tree.nodes())

    baseline = rate(dict_router(inputs), inputs, args.seconds)
    routed = rate(tree.route, inputs, args.seconds)
    print(f"tree: {tree.source} ({nodes} routes; first load {load_ms:.0f} ms, reload {reload_ms:.0f} ms)")
    print(
        f"mix: {len(inputs)} inputs, {receivers / len(inputs):.2f} receivers per decision, "
        f"{triaged / len(inputs):.1%} to the grid station"
    )
    print(f"baseline dict lookup : {baseline:>12,.0f} decisions/s")
    print(
        f"routing tree         : {routed:>12,.0f} decisions/s  ({routed / baseline:.3f} × baseline, "
        f"{1e6 / routed:.2f} µs per decision; target ≥ 50,000/s: {'met' if routed >= 50_000 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
