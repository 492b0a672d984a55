"""Reading every case registered in a period: from intake's store (Redis, the hot cases)
and, when the store has the PostgreSQL archive, from the archive too — cases older than
the hot window live there only. A case in both is taken from Redis (the newer copy)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

import psycopg
import structlog

from services.intake.queries import CaseFilter, scan
from services.intake.store import CaseStore
from shared.models import Case

PAGE = 500
log = structlog.get_logger("gridbus.intake.reports")


def cases_between(store: CaseStore, start: datetime, end: datetime) -> Iterator[Case]:
    """Every case registered in [start, end), oldest first."""
    hot = {c.case_id: c for c in _hot_between(store, start, end)}
    cold: list[Case] = []
    if store.archive is not None:
        try:
            cold = store.archive.registered_between(start, end)
        except psycopg.Error as exc:  # the report still shows the hot cases; the log says what is missing
            log.warning("archive_unavailable", error=str(exc)[:200], effect="report from Redis only")
    merged = list(hot.values()) + [c for c in cold if c.case_id not in hot]
    yield from sorted(merged, key=lambda c: (c.registered_at, c.case_id))


def _hot_between(store: CaseStore, start: datetime, end: datetime) -> Iterator[Case]:
    f = CaseFilter(since=start, until=end)
    after = None
    while True:
        found, after, _ = scan(store, f, after, limit=PAGE, max_scan=10 * PAGE)
        for case in found:
            if case.registered_at < end:
                yield case
        if after is None:
            return
