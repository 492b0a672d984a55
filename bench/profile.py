"""Profiling the services during a pipeline run with py-spy (sampling, no code change).

`py-spy record --format raw` writes collapsed stacks ("frame;frame;… count"); the summary
gives, per service, the samples (≈ CPU-busy time: idle threads are not sampled), the
functions that are on the CPU themselves ("self"), and how the samples split over a few
buckets that name the usual suspects: waiting for publisher confirms, Redis round trips,
pydantic, JSON, logging, HTTP parsing, the eventlet hub.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

#: bucket → substrings of a frame (function + file) that put a sample in it; first match
#: along the stack from the leaf upwards wins, so the most specific cause is counted.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "publish_confirm_wait",
        (
            "confirm_publish",
            "wait_confirm",
            "_wait_for_confirm",
            "basic_publish_confirm",
            "wait (amqp/",
            "drain_events",
        ),
    ),
    ("redis", ("redis/",)),
    ("pydantic", ("pydantic",)),
    ("json", ("json/", "orjson", "model_dump_json")),
    ("logging", ("structlog", "logging/")),
    ("metrics", ("prometheus_client",)),
    ("http_server", ("werkzeug", "eventlet/wsgi")),
    ("amqp_io", ("amqp/", "kombu/")),
    ("eventlet_hub", ("eventlet/hubs", "greenio", "greenthread")),
)


def executable() -> str | None:
    """py-spy on the PATH, or beside this Python (a venv's bin/ that is not on the PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def start(pid: int, seconds: float, out: Path, rate: int = 97) -> subprocess.Popen | None:
    exe = executable()
    if exe is None:
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_COUNT = re.compile(r"^(.*) (\d+)$")


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        m = _COUNT.match(line.strip())
        if m:
            stacks.append((m.group(1).split(";"), int(m.group(2))))
    return stacks


def _short(frame: str) -> str:
    # "publish (nameko/amqp/publish.py:201)" → keep the function and the file's tail
    m = re.match(r"^(.*?) \((.*?):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, line = m.groups()
    for marker in ("site-packages/", _REPO):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{func} ({path}:{line})"


def _function(frame: str) -> str:
    short = _short(frame)
    return re.sub(r":\d+\)$", ")", short)


def summarize(text: str, top: int = 12, bucket_keys: Sequence[tuple[str, Sequence[str]]] = BUCKETS) -> dict[str, Any]:
    stacks = parse_raw(text)
    total = sum(n for _, n in stacks)
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        self_counts[_function(frames[-1])] += n
        for fn in {_function(f) for f in frames}:
            inclusive[fn] += n
        bucket = "other"
        for frame in reversed(frames):
            hit = next((name for name, keys in bucket_keys if any(k in frame for k in keys)), None)
            if hit:
                bucket = hit
                break
        buckets[bucket] += n

    def share(c: collections.Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": k, "samples": v, "share": round(v / total, 3)} for k, v in c.most_common(top)]

    interesting = collections.Counter(
        {
            k: v
            for k, v in inclusive.items()
            if any(s in k for s in ("services/", "shared/", "nameko/", "redis/", "pydantic", "kombu/", "amqp/"))
        }
    )
    return {
        "samples": total,
        "buckets": {k: {"samples": v, "share": round(v / total, 3)} for k, v in buckets.most_common()} if total else {},
        "top_self": share(self_counts),
        "top_inclusive": share(interesting),
    }


def inclusive_shares(text: str, keys: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Share of the samples with a frame matching any of a name's substrings anywhere on
    the stack (what a function costs with everything it calls)."""
    stacks = parse_raw(text)
    total = sum(n for _, n in stacks) or 1
    out = {}
    for name, subs in keys.items():
        hit = sum(n for frames, n in stacks if any(any(s in f for s in subs) for f in frames))
        out[name] = round(hit / total, 3)
    return out
