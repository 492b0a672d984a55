"""Bounded load over HTTP, behaving like the grid app: N reports offered at R/s, each
sent again with the same report id (the idempotency key) after a connection error, a
timeout, a 5xx or a 429, with back-off, until intake answers 200/202 or `give_up_s` has
passed. Every answer is recorded, so the checks can tell a 503 (retry later: fine) from a
500, and a report answered with two different case ids (a double registration)."""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import make_report, sample_reports


@dataclass
class ReportResult:
    report_id: str
    case_ids: list[str] = field(default_factory=list)  # from every 200/202 answer
    statuses: list[str] = field(default_factory=list)  # every attempt: "202", "503", "ConnectError", …
    accepted_at: float | None = None
    refused: str = ""  # a 4xx other than 429: the body

    @property
    def case_id(self) -> str | None:
        return self.case_ids[0] if self.case_ids else None


class HttpLoad:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        count: int,
        rate: float,
        run_tag: str,
        workers: int = 48,
        give_up_s: float = 300.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url, self.api_key = base_url, api_key
        self.count, self.rate, self.workers, self.give_up_s = count, rate, workers, give_up_s
        templates = sample_reports()
        self.bodies = [make_report(templates[i % len(templates)], run_tag, i) for i in range(count)]
        self.results = [ReportResult(b["report_id"]) for b in self.bodies]
        self.statuses: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, str] = {}
        self._lock = threading.Lock()
        self._queue: list[int] = []
        self._cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._client = httpx.Client(
            base_url=base_url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )
        self._scheduled = 0
        self.t0 = 0.0
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self.t0 = time.monotonic()
        for _ in range(self.workers):
            t = threading.Thread(target=self._worker, daemon=True, name="chaos-load")
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._schedule, daemon=True, name="chaos-schedule")
        t.start()
        self._threads.append(t)

    def _schedule(self) -> None:
        i = 0
        while i < self.count and not self.stopped.is_set():
            due_n = min(self.count, int((time.monotonic() - self.t0) * self.rate) + 1)
            with self._cv:
                while i < due_n:
                    self._queue.append(i)
                    i += 1
                self._scheduled = i
                self._cv.notify_all()
            time.sleep(0.01)
        with self._cv:
            self._scheduled = self.count
            self._cv.notify_all()

    def _next(self) -> int | None:
        with self._cv:
            while not self._queue:
                if self._scheduled >= self.count or self.stopped.is_set():
                    return None
                self._cv.wait(0.1)
            return self._queue.pop(0)

    def _worker(self) -> None:
        while True:
            i = self._next()
            if i is None:
                return
            self._send(i)

    def _note(self, res: ReportResult, status: str, text: str = "") -> None:
        res.statuses.append(status)
        with self._lock:
            self.statuses[status] += 1
            if text and status not in self.samples:
                self.samples[status] = text[:300]

    def _send(self, i: int) -> None:
        res, body = self.results[i], json.dumps(self.bodies[i], ensure_ascii=False).encode()
        started = time.monotonic()
        delay = 0.5
        while not self.stopped.is_set():
            try:
                r = self._client.post("/v1/reports", content=body)
            except httpx.HTTPError as exc:
                self._note(res, type(exc).__name__, str(exc))
            else:
                self._note(res, str(r.status_code), r.text if r.status_code >= 300 else "")
                if r.status_code in (200, 201, 202):
                    try:
                        res.case_ids.append(r.json()["case_id"])
                    except (ValueError, KeyError):
                        res.refused = f"{r.status_code} without case_id: {r.text[:200]}"
                        return
                    if res.accepted_at is None:
                        res.accepted_at = time.monotonic()
                    return
                if 400 <= r.status_code < 500 and r.status_code != 429:
                    res.refused = f"{r.status_code}: {r.text[:200]}"
                    return
                retry_after = r.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 5.0))
            if time.monotonic() - started > self.give_up_s:
                return
            time.sleep(delay)
            delay = min(delay * 2, 4.0)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.done()

    def stop(self) -> None:
        self.stopped.set()
        with self._cv:
            self._cv.notify_all()
        self.join(15)
        self._client.close()

    # ------------------------------------------------------------------ figures
    def again(self, i: int) -> None:
        """One more POST of report i (after the run: must answer with the same case id)."""
        self._send(i)

    def summary(self) -> dict[str, Any]:
        accepted = [r for r in self.results if r.case_ids]
        return {
            "offered": self.count,
            "accepted": len(accepted),
            "refused": sum(1 for r in self.results if r.refused),
            "gave_up": sum(1 for r in self.results if not r.case_ids and not r.refused),
            "answers": dict(self.statuses),
            "http_5xx": sum(v for k, v in self.statuses.items() if k.isdigit() and k.startswith("5")),
            "http_500": self.statuses.get("500", 0),
            "http_503": self.statuses.get("503", 0),
            "connection_errors": sum(v for k, v in self.statuses.items() if not k.isdigit()),
            "retried_reports": sum(1 for r in self.results if len(r.statuses) > 1),
            "samples": self.samples,
            "seconds": round(time.monotonic() - self.t0, 1) if self.t0 else None,
        }
