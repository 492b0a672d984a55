"""The chaos run's checks find each kind of defect in a real Redis (intake's case
documents, sla's clock documents armed by the real Deadlines): a chaos test that passes
means these were looked for and not found."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench.chaos.checks import Order, evaluate, parse_order
from shared import redis_keys as keys
from shared.deadletters import DeadLetter
from shared.models import Assignment, CaseDispatched, CaseSummary, Mode721
from shared.policies import load_policies
from shared.worktime import WorkCalendar

GRID, STREET = "450305001001001", "450305001"
SLA = "defaults:\n  ack: 1h\n  urgent_ack: 15m\n  handle: 4h\n  ladder: [1h]\n  repeat: 0\n"


def _case(client: redis.Redis, case_id: str, status: str, orders: list[str]) -> None:
    doc = {
        "case_id": case_id,
        "status": status,
        "assignments": [{"order_id": o, "dept": o.split("/")[-1], "active": True} for o in orders],
    }
    client.hset(keys.case(case_id), mapping={"doc": json.dumps(doc), "version": 1})


def _order(case_id: str, report: str, dept: str = "sanitation", round_no: int = 1) -> Order:
    return Order(
        f"dept.{dept}",
        f"order:{case_id}/{round_no}/{dept}",
        f"{case_id}/{round_no}/{dept}",
        case_id,
        report,
        dept,
        round_no,
    )


def _arm(client: redis.Redis, tmp_path: Path, case_id: str, report: str) -> None:
    from services.sla.deadlines import Deadlines

    path = tmp_path / "sla.yaml"
    path.write_text(SLA, encoding="utf-8")
    now = datetime.now(timezone.utc)
    event = CaseDispatched(
        message_id=f"dispatched:{case_id}:1",
        case_id=case_id,
        correlation_id=report,
        occurred_at=now,
        case=CaseSummary(category="06010", severity="normal", grid=GRID, street=STREET, registered_at=now),
        assignments=[
            Assignment(
                dept="sanitation",
                street=STREET,
                level=5,
                mode=Mode721.service,
                order_id=f"{case_id}/1/sanitation",
                dispatched_at=now,
            )
        ],
    )
    Deadlines(client, load_policies(path), WorkCalendar(), lambda e: None).handle(event, now=now.timestamp())


def test_each_defect_is_found(redis_client: redis.Redis, stack_env: dict[str, str], tmp_path: Path) -> None:
    prefix = stack_env["REDIS_KEY_PREFIX"]
    ok, stuck, noclock, gone, twice = "C-OK", "C-STUCK", "C-NOCLOCK", "C-GONE", "C-TWICE"
    _case(redis_client, ok, "dispatched", [f"{ok}/1/sanitation"])
    _arm(redis_client, tmp_path, ok, "r-ok")
    _case(redis_client, stuck, "registered", [])
    _case(redis_client, noclock, "dispatched", [f"{noclock}/1/sanitation"])
    _case(redis_client, twice, "dispatched", [f"{twice}/1/sanitation"])
    _arm(redis_client, tmp_path, twice, "r-twice")
    accepted = {
        "r-ok": [ok, ok],
        "r-stuck": [stuck],
        "r-noclock": [noclock],
        "r-gone": [gone],
        "r-twice": [twice, "C-OTHER"],
    }
    orders = [
        _order(ok, "r-ok"),
        _order(ok, "r-ok"),  # a redelivered copy is no double dispatch
        _order(noclock, "r-noclock"),
        _order(twice, "r-twice"),
        _order(twice, "r-twice", round_no=2),
    ]  # the same department ordered again: double
    dead = {
        "router.cases.dead": [
            DeadLetter("router.cases.dead", "delivery_limit", "delivery_limit on router.cases", "m1", "r", {}, b"{}"),
            DeadLetter("router.cases.dead", "invalid_event", "not a lifecycle event", "m2", "r", {}, b"{}"),
        ]
    }
    binary = redis.Redis.from_url(stack_env["REDIS_URL"])
    try:
        f = evaluate(accepted, orders, redis_client, binary, prefix, dead)
        # and a clean system is clean
        clean = evaluate({"r-ok": [ok]}, [_order(ok, "r-ok")], redis_client, binary, prefix, {})
    finally:
        binary.close()
    assert f.accepted == 5 and f.orders == 4 and f.order_copies == 1
    assert sorted(f.lost) == [gone, stuck]
    assert f.stuck == [stuck] and f.missing_cases == [gone]
    assert f.missing_clocks == [f"{noclock}/1/sanitation"]
    assert len(f.double_dispatch) == 2
    assert any("r-twice" in d and "C-OTHER" in d for d in f.double_dispatch)
    assert any(twice in d and "sanitation" in d for d in f.double_dispatch)
    assert f.dead_transient == 1 and f.dead_total == 2
    assert f.dispatched == 3 and not f.ok()
    assert clean.ok() and clean.table()["dispatched"] == 1


def test_orders_are_read_from_the_message() -> None:
    props = {"message_id": "order:C9/2/gas", "correlation_id": "r-9", "headers": {}}
    o = parse_order(
        "dept.gas",
        props,
        json.dumps({"order_id": "C9/2/gas", "case_id": "C9", "dept": "gas", "correlation_id": "r-9"}).encode(),
    )
    assert o is not None and (o.case_id, o.dept, o.round_no, o.correlation_id) == ("C9", "gas", 2, "r-9")
    assert parse_order("dept.gas", props, b"not json") is None


def _recorded(case_id: str, version: int, orders: list[str]) -> dict[str, object]:
    """intake's CaseRecorded of one version of a case, as the archiver receives it."""
    from shared.models import Case, CaseRecorded, CaseStatus, Location

    now = datetime.now(timezone.utc)
    case = Case(
        case_id=case_id,
        report_id=f"r-{case_id}",
        correlation_id=f"r-{case_id}",
        status=CaseStatus.dispatched if orders else CaseStatus.registered,
        version=version,
        category="06010",
        severity="normal",
        description="垃圾满溢",
        location=Location(lat=25.28, lon=110.31),
        grid=GRID,
        street=STREET,
        reporter_id="w-1",
        reporter_role="grid_officer",
        observed_at=now,
        registered_at=now,
        updated_at=now,
        assignments=[
            Assignment(dept="sanitation", street=STREET, level=5, order_id=o, dispatched_at=now) for o in orders
        ],
    )
    rec = CaseRecorded(
        message_id=f"record:{case_id}:{version}",
        case_id=case_id,
        correlation_id=case.correlation_id,
        version=version,
        case=case,
    )
    return rec.model_dump(mode="json")


def test_the_archive_check_finds_what_did_not_reach_postgres(pg_dsn: str) -> None:
    """Three cases of a run on the real archive (written by the archiver's own writer):
    one archived whole, one whose dispatched version and order never arrived, one absent."""
    import uuid
    from zoneinfo import ZoneInfo

    import psycopg

    from bench.chaos.checks import archive_missing
    from services.archiver.writer import archive

    run = uuid.uuid4().hex[:6]
    whole, half, absent = f"W{run}", f"H{run}", f"A{run}"
    orders = [_order(c, f"r-{c}") for c in (whole, half, absent)]
    tz = ZoneInfo("Asia/Shanghai")
    with psycopg.connect(pg_dsn) as conn:
        for body in (
            _recorded(whole, 1, []),
            _recorded(whole, 2, [orders[0].order_id]),
            _recorded(half, 1, []),
            {
                "message_id": orders[0].message_id,
                "kind": "dispatch_order",
                "order_id": orders[0].order_id,
                "case_id": whole,
                "dept": "sanitation",
                "street": STREET,
                "level": 5,
            },
        ):
            archive(conn, body, tz)
    assert archive_missing(pg_dsn, [whole], orders[:1]) == []
    assert archive_missing(pg_dsn, [whole, half, absent], orders) == [
        f"case {absent}",
        f"order {absent}/1/sanitation",
        f"order {half}/1/sanitation",
        f"case {half} archived without its order {half}/1/sanitation",
    ]
