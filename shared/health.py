"""`GET /healthz` of a service, and the watchdog that ends a process that can no longer
do its job. Plain Python: the nameko extensions register checks here (consumers attached,
broker reachable, Redis answering, sla's tick loop running) and shared/metrics.py serves
the answer beside /metrics.

- `/healthz` runs every check and answers 200 `{"status": "ok", "checks": {...}}`, or 503
  with the failing checks named (`"failing": ["redis"]`, each with its detail).
  `/healthz?local=1` runs only the checks inside the process (liveness).
- A check may be *fatal after* a number of seconds: the watchdog (services/runner.py)
  exits the process non-zero once it has failed that long (a consumer that lost its
  channel and does not get it back, a tick loop that stopped), so that the supervisor
  (compose `restart:`, Kubernetes, `gridbus up`) restarts the service.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

CheckFn = Callable[[], tuple[bool, str]]


@dataclass
class Check:
    name: str
    fn: CheckFn
    fatal_after: float | None = None  # seconds failing before the process should exit
    cheap: bool = True  # no network round trip: the watchdog may run it every second
    failing_since: float | None = None

    def run(self, now: float) -> tuple[bool, str]:
        try:
            ok, detail = self.fn()
        except Exception as exc:  # a check that crashes is a failing check, with the reason
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        if ok:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = now
        return ok, detail


@dataclass
class Health:
    checks: dict[str, Check] = field(default_factory=dict)
    clock: Callable[[], float] = field(default=time.monotonic)
    cache_s: float = 1.0  # probes of several scrapers share one round of network checks
    _cached: dict[bool, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, name: str, fn: CheckFn, fatal_after: float | None = None, cheap: bool = True) -> None:
        """Add (or replace: a restarted extension registers again) a check."""
        self.checks[name] = Check(name, fn, fatal_after, cheap)
        self._cached.clear()

    def unregister(self, name: str) -> None:
        self.checks.pop(name, None)
        self._cached.clear()

    def report(self, local: bool = False) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /healthz; `local`: only the checks inside the process
        (no broker or Redis round trip) — what a liveness probe should look at, so that a
        Redis outage does not restart every replica."""
        now = self.clock()
        with self._lock:
            cached = self._cached.get(local)
            if cached is not None and now - cached[0] < self.cache_s:
                return cached[1], cached[2]
            results = {name: check.run(now) for name, check in list(self.checks.items()) if check.cheap or not local}
            failing = sorted(n for n, (ok, _) in results.items() if not ok)
            body: dict[str, Any] = {
                "status": "failing" if failing else "ok",
                "checks": {n: {"ok": ok, "detail": d} for n, (ok, d) in sorted(results.items())},
            }
            if failing:
                body["failing"] = failing
            status = 503 if failing else 200
            self._cached[local] = (now, status, body)
            return status, body

    def fatal(self) -> list[str]:
        """Checks (cheap, fatal-after) that have failed for longer than allowed: the
        process should end. Each is described as `name: detail (failing N s)`."""
        now = self.clock()
        dead = []
        for check in list(self.checks.values()):
            if check.fatal_after is None or not check.cheap:
                continue
            ok, detail = check.run(now)
            if not ok and check.failing_since is not None and now - check.failing_since >= check.fatal_after:
                dead.append(f"{check.name}: {detail} (failing {now - check.failing_since:.0f} s)")
        return dead

    def wsgi(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """`app` with `/healthz` answered in front of it."""

        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != "/healthz":
                return app(environ, start_response)
            local = "local=1" in (environ.get("QUERY_STRING") or "").split("&")
            status, body = self.report(local=local)
            payload = json.dumps(body, ensure_ascii=False).encode()
            start_response(
                f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                [
                    ("Content-Type", "application/json; charset=utf-8"),
                    ("Content-Length", str(len(payload))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [payload]

        return wrapped


class Heartbeat:
    """Something that must happen regularly (sla's tick): healthy while its last beat is
    younger than `stale_after` seconds."""

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def check(self) -> tuple[bool, str]:
        age = self.clock() - self.last
        return age < self.stale_after, f"last ran {age:.1f} s ago (limit {self.stale_after:g} s)"


#: the process's checks (one service per process; tests running several containers in
#: one process share it, and a re-registered check replaces the old one)
HEALTH = Health()
