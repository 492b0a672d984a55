"""Run one service like `python -m services.serve NAME`, with wall-clock timers around
the calls that a report's path goes through (no change to service code): publishing
(whole `Bus.publish`, the confirm round trip inside py-amqp, waiting for a pooled
producer), Redis commands / pipelines / scripts, pydantic parsing, registration, routing.

Used by `gridbus bench pipeline --trace`. Times are wall time inside green threads, so
they include waiting for the broker or Redis *and* for other green threads on the same
process; that is what a request experiences. Nested timers overlap (a Redis script runs
a command; a publish includes the confirm wait). Written as JSON to $BENCH_TRACE_OUT
when the service stops.
"""

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import collections  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

STATS: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])

#: (module, attribute path, label)
TARGETS = (
    ("shared.bus", "Bus.publish", "bus.publish (all)"),
    ("shared.bus", "to_json_bytes", "bus.to_json_bytes"),
    ("amqp.channel", "Channel.basic_publish_confirm", "amqp.basic_publish_confirm (send + wait for confirm)"),
    ("kombu.connection", "Resource.acquire", "kombu pool acquire (wait for a producer/connection)"),
    ("redis.client", "Redis.execute_command", "redis command"),
    ("redis.client", "Pipeline.execute", "redis pipeline/transaction"),
    ("redis.commands.core", "Script.__call__", "redis Lua script"),
    ("services.intake.validation", "parse", "intake parse (JSON + pydantic)"),
    ("services.intake.cases", "Registrar.register", "intake Registrar.register"),
    ("services.intake.service", "publish_stored", "intake publish_stored"),
    ("services.router.dispatch", "Dispatcher.plan", "router Dispatcher.plan"),
)


def _wrap(owner: Any, attr: str, label: str) -> None:
    orig = getattr(owner, attr)

    @functools.wraps(orig)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            d = time.perf_counter() - t
            s = STATS[label]
            s[0] += 1
            s[1] += d
            if d > s[2]:
                s[2] = d

    setattr(owner, attr, timed)


def install() -> list[str]:
    installed = []
    for module, path, label in TARGETS:
        try:
            owner: Any = importlib.import_module(module)
            *parents, attr = path.split(".")
            for p in parents:
                owner = getattr(owner, p)
            _wrap(owner, attr, label)
            installed.append(label)
        except (ImportError, AttributeError):
            continue
    return installed


def dump(path: str) -> None:
    out = {
        label: {
            "calls": int(c),
            "total_s": round(t, 4),
            "mean_ms": round(1000 * t / c, 3) if c else None,
            "max_ms": round(1000 * m, 2),
        }
        for label, (c, t, m) in sorted(STATS.items(), key=lambda kv: -kv[1][1])
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    from services.runner import SERVICE_CLASSES, run_service

    name = sys.argv[1]
    if name not in SERVICE_CLASSES:
        sys.exit(f"usage: python -m bench.trace {{{'|'.join(SERVICE_CLASSES)}}}")
    install()
    try:
        run_service(name)
    finally:
        target = os.environ.get("BENCH_TRACE_OUT")
        if target:
            dump(target.replace("{service}", name))
