"""Case listing on the real Redis: stable order, cursor pages, filters, the scan cap."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import redis

from services.intake import queries
from services.intake.queries import CaseFilter, Position, list_cases, parse_query, scan
from services.intake.store import CaseStore
from services.intake.validation import InvalidInput
from shared.models import Assignment, Case, CaseRegistered, CaseStatus, Location, summary_of

T0 = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
TZ = ZoneInfo("Asia/Shanghai")


def add(
    store: CaseStore,
    n: int,
    at: datetime,
    *,
    grid: str = "450305001001001",
    category: str = "01037",
    status: CaseStatus = CaseStatus.registered,
    depts: tuple[str, ...] = (),
) -> str:
    case_id = f"450305-20261127-{n:06d}"
    case = Case(
        case_id=case_id,
        report_id=f"r-{n}",
        correlation_id=f"r-{n}",
        status=status,
        version=1,
        category=category,
        severity="normal",
        description=f"case {n}",
        location=Location(lat=25.28, lon=110.31, grid=grid),
        grid=grid,
        street=grid[:9],
        reporter_id="w-1",
        reporter_role="grid_officer",
        observed_at=at,
        registered_at=at,
        updated_at=at,
        assignments=[
            Assignment(dept=d, street=grid[:9], level=3, order_id=f"o-{n}-{d}", dispatched_at=at) for d in depts
        ],
    )
    store.register(
        case.report_id, case, CaseRegistered(case_id=case_id, correlation_id=case.report_id, case=summary_of(case))
    )
    return case_id


def all_pages(store: CaseStore, args: dict[str, str], max_scan: int = queries.MAX_SCAN) -> list[list[str]]:
    pages = []
    while True:
        page = list_cases(store, parse_query(args, TZ), max_scan=max_scan)
        pages.append([c.case_id for c in page.items])
        if not page.next_cursor:
            return pages
        args = {**args, "cursor": page.next_cursor}


@pytest.fixture()
def store(redis_client: redis.Redis) -> CaseStore:
    return CaseStore(redis_client, "450305")


def test_pages_follow_registration_time_then_id_without_gaps_or_repeats(store: CaseStore) -> None:
    # registered out of id order, and three at the very same instant
    ids = [
        add(store, n, T0 + timedelta(minutes=m))
        for n, m in [(5, 1), (1, 3), (2, 2), (9, 4), (3, 4), (4, 4), (7, 0), (8, 6), (6, 5)]
    ]
    expected = sorted(ids, key=lambda i: (store.get(i).registered_at, i))
    pages = all_pages(store, {"limit": "2"})
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert [i for p in pages for i in p] == expected


def test_exact_multiple_of_the_page_size_has_no_empty_last_page(store: CaseStore) -> None:
    for n in range(1, 5):
        add(store, n, T0 + timedelta(seconds=n))
    assert all_pages(store, {"limit": "2"}) == [
        [f"450305-20261127-{n:06d}" for n in (1, 2)],
        [f"450305-20261127-{n:06d}" for n in (3, 4)],
    ]


def test_more_cases_at_one_instant_than_a_batch(store: CaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "BATCH", 3)
    ids = [add(store, n, T0) for n in range(1, 12)]
    pages = all_pages(store, {"limit": "4"})
    assert [i for p in pages for i in p] == sorted(ids)


def test_a_case_registered_meanwhile_does_not_shift_pages(store: CaseStore) -> None:
    for n in range(1, 5):
        add(store, n, T0 + timedelta(seconds=n))
    first = list_cases(store, parse_query({"limit": "2"}, TZ))
    add(store, 9, T0 + timedelta(seconds=10))
    second = list_cases(store, parse_query({"limit": "2", "cursor": first.next_cursor}, TZ))
    assert [c.case_id[-1] for c in second.items] == ["3", "4"]
    third = list_cases(store, parse_query({"limit": "2", "cursor": second.next_cursor}, TZ))
    assert [c.case_id[-1] for c in third.items] == ["9"] and third.next_cursor is None


def test_filters(store: CaseStore) -> None:
    add(store, 1, T0, grid="450305001001001", category="01037", depts=("lighting",))
    add(
        store,
        2,
        T0 + timedelta(hours=1),
        grid="450305003002001",
        category="01001",
        status=CaseStatus.dispatched,
        depts=("gas", "police"),
    )
    add(store, 3, T0 + timedelta(hours=2), grid="450305003001002", category="02005", status=CaseStatus.closed)
    add(
        store,
        4,
        T0 + timedelta(hours=3),
        grid="450305001002001",
        category="01037",
        status=CaseStatus.dispatched,
        depts=("lighting",),
    )

    def ids(**args: str) -> list[int]:
        return [int(c.case_id[-6:]) for c in list_cases(store, parse_query(args, TZ)).items]

    assert ids() == [1, 2, 3, 4]
    assert ids(status="dispatched") == [2, 4]
    assert ids(status="dispatched,closed") == [2, 3, 4]
    assert ids(grid="450305003") == [2, 3]
    assert ids(grid="450305001001") == [1]
    assert ids(category="01037") == [1, 4]
    assert ids(category="01") == [1, 2, 4]
    assert ids(dept="lighting") == [1, 4]
    assert ids(dept="police") == [2]
    assert ids(since="2026-11-27T02:00:00Z") == [2, 3, 4]
    assert ids(since="2026-11-27T10:00:00") == [2, 3, 4]  # no offset: district local time (+08:00)
    assert ids(since="2026-11-27T02:00:00+00:00", until="2026-11-27T03:00:00Z") == [2, 3]  # both inclusive
    assert ids(dept="lighting", status="dispatched", grid="450305001") == [4]


def test_the_scan_cap_returns_a_short_page_with_a_cursor_that_continues(store: CaseStore) -> None:
    for n in range(1, 11):
        add(store, n, T0 + timedelta(seconds=n), depts=("gas",) if n in (2, 9) else ())
    page = list_cases(store, parse_query({"dept": "gas", "limit": "5"}, TZ), max_scan=4)
    assert [c.case_id[-1] for c in page.items] == ["2"] and page.scanned == 4 and page.next_cursor
    pages = all_pages(store, {"dept": "gas", "limit": "5"}, max_scan=4)
    assert [i[-1] for p in pages for i in p] == ["2", "9"]
    assert len(pages) == 3  # 1–4, 5–8, 9–10


def test_bad_parameters_are_named() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_query(
            {
                "status": "open",
                "grid": "45x",
                "category": "0103700",
                "since": "yesterday",
                "limit": "0",
                "cursor": "!!!",
                "dept": "燃气",
            },
            TZ,
        )
    assert sorted(e.field for e in info.value.errors) == [
        "category",
        "cursor",
        "dept",
        "grid",
        "limit",
        "since",
        "status",
    ]


def test_cursor_round_trips_and_is_opaque() -> None:
    pos = Position(1795759200.123456, "450305-20261127-000001")
    assert Position.decode(pos.encode()) == pos
    assert "450305" not in pos.encode()


def test_scan_of_an_empty_store(store: CaseStore) -> None:
    assert scan(store, CaseFilter()) == ([], None, 0)
