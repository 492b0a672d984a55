"""Listing cases: `GET /v1/cases?status=&dept=&grid=&category=&since=&until=&cursor=&limit=`.

Order is registration time, then case id — exactly the order of the `cases_by_time`
sorted set (Redis orders equal scores by member), so paging needs no other index.

Cost: the sorted set narrows by time (`since`/`until`) in Redis; every other filter is
applied to the case documents read in batches of `BATCH`. A request therefore costs
O(log N + scanned) and reads at most `max_scan` cases (default `MAX_SCAN`). At district
scale (a few hundred cases a day) a page normally fills long before that; when a rare
filter does not, the page comes back short *with* a cursor at the last case looked at,
so the client simply continues — it never misses a case and never waits unboundedly.

The cursor is opaque to clients (base64 of the last examined position); it encodes a
position, not an offset, so cases registered meanwhile neither shift nor repeat a page.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from itertools import islice
from typing import Callable, Iterator, Mapping, cast

from pydantic import AwareDatetime, BaseModel, Field

from services.intake.store import CaseStore
from services.intake.validation import FieldError, InvalidInput
from shared import redis_keys as keys
from shared.models import Assignment, Case, CaseStatus, Location, Severity, clamp_instant

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_SCAN = 2000
BATCH = 200


class CaseListItem(BaseModel):
    """A case in a listing: everything but the timeline (GET /v1/cases/{id} has it)."""

    case_id: str
    report_id: str
    status: CaseStatus
    category: str
    severity: Severity
    grid: str
    street: str
    location: Location
    description: str
    registered_at: AwareDatetime
    updated_at: AwareDatetime
    assignments: list[Assignment] = Field(default_factory=list)

    @classmethod
    def of(cls, case: Case) -> "CaseListItem":
        return cls.model_validate({name: getattr(case, name) for name in cls.model_fields})


class CasePage(BaseModel):
    items: list[CaseListItem]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; absent when there is nothing more."
    )
    scanned: int = Field(description="Cases looked at for this page (at most the server's scan cap).")


@dataclass(frozen=True)
class CaseFilter:
    statuses: frozenset[CaseStatus] = frozenset()
    dept: str | None = None
    grid: str | None = None  # code prefix: a street, a community or one patch
    category: str | None = None  # code prefix: "01" is the whole class, "01037" one code
    since: datetime | None = None  # registered at or after
    until: datetime | None = None  # registered at or before

    def matches(self, case: Case) -> bool:
        if self.statuses and case.status not in self.statuses:
            return False
        if self.grid and not case.grid.startswith(self.grid):
            return False
        if self.category and not case.category.startswith(self.category):
            return False
        if self.dept and not any(a.dept == self.dept for a in case.assignments):
            return False
        return True


@dataclass(frozen=True)
class Position:
    """Where a scan stopped: the registration score and id of the last case examined."""

    score: float
    case_id: str

    def encode(self) -> str:
        raw = json.dumps([self.score, self.case_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> "Position":
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            score, case_id = json.loads(raw)
            return cls(float(score), str(case_id))
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput([FieldError("cursor", "not a cursor this API returned")]) from None


@dataclass(frozen=True)
class CaseQuery:
    filter: CaseFilter
    after: Position | None = None
    limit: int = DEFAULT_LIMIT


def parse_time(value: str, field: str, tz: tzinfo) -> datetime:
    """ISO 8601; a time without offset (or a bare date) is taken as district local time."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput([FieldError(field, f"{value!r} is not an ISO 8601 date-time")]) from None
    return clamp_instant(dt if dt.tzinfo else dt.replace(tzinfo=tz))  # year 1 / 9999: no overflow


def parse_query(args: Mapping[str, str], tz: tzinfo) -> CaseQuery:
    """Query-string parameters → CaseQuery; InvalidInput names every bad parameter."""
    errors: list[FieldError] = []
    statuses: set[CaseStatus] = set()
    for s in filter(None, (x.strip() for x in args.get("status", "").split(","))):
        try:
            statuses.add(CaseStatus(s))
        except ValueError:
            errors.append(FieldError("status", f"{s!r} is not one of {', '.join(x.value for x in CaseStatus)}"))
    grid = args.get("grid", "").strip() or None
    if grid and not (grid.isdigit() and len(grid) <= 15):
        errors.append(FieldError("grid", "a grid code prefix: up to 15 digits"))
    category = args.get("category", "").strip() or None
    if category and not (category.isdigit() and len(category) <= 5):
        errors.append(FieldError("category", "a category code prefix: up to 5 digits"))
    dept = args.get("dept", "").strip() or None
    if dept and not (dept.isascii() and dept.isalnum() and len(dept) <= 20):
        errors.append(FieldError("dept", "a department code"))
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        times[name] = None
        if args.get(name, "").strip():
            try:
                times[name] = parse_time(args[name], name, tz)
            except InvalidInput as exc:
                errors.extend(exc.errors)
    limit = DEFAULT_LIMIT
    if args.get("limit", "").strip():
        try:
            limit = int(args["limit"])
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            errors.append(FieldError("limit", f"an integer from 1 to {MAX_LIMIT}"))
    after = None
    if args.get("cursor", "").strip():
        try:
            after = Position.decode(args["cursor"].strip())
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInput(errors)
    return CaseQuery(
        CaseFilter(frozenset(statuses), dept, grid, category, times["since"], times["until"]), after, limit
    )


def _positions(store: CaseStore, f: CaseFilter, after: Position | None) -> Iterator[Position]:
    """Every case id in order after `after`, within since/until, read in batches."""
    lo = f.since.timestamp() if f.since else float("-inf")
    if after is not None:
        lo = max(lo, after.score)
    hi = f.until.timestamp() if f.until else "+inf"
    offset = 0
    while True:
        rows = cast(
            list[tuple[str, float]],
            store.r.zrangebyscore(keys.cases_by_time(), lo, hi, start=offset, num=BATCH, withscores=True),
        )
        if not rows:
            return
        for member, score in rows:
            member = member.decode() if isinstance(member, bytes) else member
            if after is not None and (score, member) <= (after.score, after.case_id):
                continue
            yield Position(score, member)
        last_score = rows[-1][1]
        if last_score == lo:  # a whole batch at one score: page within it
            offset += len(rows)
        else:  # restart at the last score, skipping the cases already seen there
            lo = last_score
            offset = sum(1 for _, s in rows if s == last_score)


def scan(
    store: CaseStore,
    f: CaseFilter,
    after: Position | None = None,
    limit: int = DEFAULT_LIMIT,
    max_scan: int = MAX_SCAN,
    extra: Callable[[Case], bool] | None = None,
) -> tuple[list[Case], Position | None, int]:
    """Matching cases in order: (cases, where to continue or None when done, scanned).

    `extra` is one more condition a case must meet (Open311's own filters)."""
    found: list[Case] = []
    scanned = 0
    last: Position | None = None
    positions = _positions(store, f, after)
    while scanned < max_scan:
        # read about what the page still needs (filters reject some), never past the cap
        size = min(BATCH, max_scan - scanned, max(2 * (limit - len(found)), 20))
        batch = list(islice(positions, size))
        if not batch:
            return found, None, scanned
        for pos, case in zip(batch, store.get_many([p.case_id for p in batch]), strict=True):
            scanned += 1
            last = pos
            if case is not None and f.matches(case) and (extra is None or extra(case)):
                found.append(case)
                if len(found) == limit:
                    return found, pos if _has_more(store, f, pos) else None, scanned
    return found, last if last is not None and _has_more(store, f, last) else None, scanned


def _has_more(store: CaseStore, f: CaseFilter, pos: Position) -> bool:
    return next(_positions(store, f, pos), None) is not None


def list_cases(store: CaseStore, query: CaseQuery, max_scan: int = MAX_SCAN) -> CasePage:
    cases, cont, scanned = scan(store, query.filter, query.after, query.limit, max_scan)
    return CasePage(
        items=[CaseListItem.of(c) for c in cases], next_cursor=cont.encode() if cont else None, scanned=scanned
    )
