"""Reading every case registered in a period from intake's store (Redis, the hot cases).

Cases older than the hot window live in the PostgreSQL archive only; a report over a
period older than that reads what Redis still holds (say so where it matters)."""
from __future__ import annotations

from datetime import datetime
from typing import Iterator

from services.intake.queries import CaseFilter, scan
from services.intake.store import CaseStore
from shared.models import Case

PAGE = 500


def cases_between(store: CaseStore, start: datetime, end: datetime) -> Iterator[Case]:
    """Every case registered in [start, end), oldest first."""
    f = CaseFilter(since=start, until=end)
    after = None
    while True:
        found, after, _ = scan(store, f, after, limit=PAGE, max_scan=10 * PAGE)
        for case in found:
            if case.registered_at < end:
                yield case
        if after is None:
            return
