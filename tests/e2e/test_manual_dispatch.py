"""Dispatch by hand through the real services: a 争议件 dispatched by the operations
centre reaches the chosen department's queue with fresh clocks; another street's grid
station is refused; an escalated case is taken over by the district."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from services.intake.auth import Role, create_key
from services.sla.store import load_case
from tests.e2e.conftest import get_from_queue, report, wait_for
from tests.e2e.test_lifecycle import bearer, case_of, new_case, reply, wait_status

pytestmark = pytest.mark.e2e


def dispatch(stack: dict[str, Any], key: str, case_id: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{stack['base']}/v1/cases/{case_id}/dispatch", json=body, headers=bearer(key), timeout=5)


def test_disputed_case_dispatched_by_hand(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    ch = stack["channel"]
    sanitation, _ = create_key(stack_redis, Role.department, "sanitation")
    cityman, _ = create_key(stack_redis, Role.department, "cityman")
    ops, _ = create_key(stack_redis, Role.ops)
    station = create_key(stack_redis, Role.station, street="450305001")[0]
    other_station = create_key(stack_redis, Role.station, street="450305003")[0]
    case_id = new_case(stack, category="06010", description="小区门口建筑垃圾", filing_condition=None)
    assert get_from_queue(ch, "dept.sanitation", case_id, timeout=5)
    reply(stack, sanitation, case_id, "reject", reason="属建筑垃圾，不归环卫")
    assert get_from_queue(ch, "dept.cityman", case_id, timeout=5)
    wait_status(stack, case_id, "dispatched")
    reply(stack, cityman, case_id, "reject", reason="属物业管理区域")
    assert get_from_queue(ch, "dept.station", case_id, timeout=5)
    disputed = wait_for(lambda: (c := case_of(stack, case_id))["disputed"] and c["status"] == "dispatched" and c, 10)
    assert disputed, case_of(stack, case_id)

    body = {
        "dispatch_id": "cmd-1",
        "departments": ["housing", "cityman"],
        "lead": "housing",
        "level": 3,
        "note": "物业管理区域内建筑垃圾：住建牵头，城管配合",
    }
    r = dispatch(stack, other_station, case_id, **body)
    assert r.status_code == 403 and "450305003" in r.json()["errors"][0]["message"]
    assert dispatch(stack, station, case_id, **{**body, "departments": ["nosuch"], "lead": None}).status_code == 422
    before = time.time()
    r = dispatch(stack, ops, case_id, **body)
    assert r.status_code == 202, r.text
    assert dispatch(stack, ops, case_id, **body).status_code == 200  # idempotent by dispatch_id

    order = get_from_queue(ch, "dept.housing", case_id, timeout=5)
    assert order is not None, "the case dispatched by hand never reached the housing queue"
    o = order["body"]
    assert (o["route"], o["lead"], o["level"], o["order_id"]) == ("manual", True, 3, f"{case_id}/4/housing")
    assert "住建牵头" in o["note"]
    assert datetime.fromisoformat(o["ack_due"]).timestamp() > before
    helper = get_from_queue(ch, "dept.cityman", case_id, timeout=5)
    assert helper is not None and helper["body"]["lead"] is False

    case = wait_for(lambda: (c := case_of(stack, case_id))["timeline"][-1]["action"] == "reassign" and c, 10)
    assert case, case_of(stack, case_id)["timeline"]
    assert case["timeline"][-1]["actor"].startswith("ops:")
    requested = next(t for t in case["timeline"] if t["action"] == "dispatch_requested")
    assert "住建牵头" in requested["note"] and "station@L3" in requested["note"]
    active = sorted((a["dept"], a["lead"]) for a in case["assignments"] if a["active"])
    assert active == [("cityman", False), ("housing", True)]

    # the new departments are told (their webhook, signed)
    def told() -> list[dict[str, Any]]:
        return [
            h
            for h in stack["sink"].received
            if h["path"] == "/hooks/housing" and h["valid"] and h["body"].get("event", {}).get("case_id") == case_id
        ]

    assert wait_for(told, 10), [h["path"] for h in stack["sink"].received][-10:]

    # sla: new clocks run for the new orders, the grid station's stopped
    def clocks() -> dict[str, str] | None:
        doc = load_case(stack_redis, case_id)
        states = {f"{c.order_id.split('/', 1)[1]}:{c.kind}": c.state for c in doc.clocks.values()} if doc else {}
        return states if states.get("4/housing:acknowledge") == "running" else None

    states = wait_for(clocks, 10)
    assert states, load_case(stack_redis, case_id)
    assert states["4/cityman:handle"] == "running"
    assert states["3/station:acknowledge"] in ("stopped", "breached") and states["3/station:handle"] == "stopped"


def test_escalated_case_taken_over_by_the_district(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    ops, _ = create_key(stack_redis, Role.ops)
    station = create_key(stack_redis, Role.station, street="450305001")[0]
    body = report(category="06010", description="辰山路口暴露垃圾无人处理", filing_condition=None)
    r = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    case_id = r.json()["case_id"]

    def at_district() -> dict[str, Any] | None:
        case = case_of(stack, case_id)
        active = [a for a in case.get("assignments", []) if a["active"]]
        return case if active and active[0]["level"] <= 2 else None

    assert wait_for(at_district, timeout=30, interval=0.25), case_of(stack, case_id)["timeline"]
    take = {"dispatch_id": "take-1", "departments": ["sanitation"], "level": 2, "note": "区指挥中心接管，环卫限时清运"}
    r = dispatch(stack, station, case_id, **take)
    assert r.status_code == 403 and "escalated" in r.json()["errors"][0]["message"]
    r = dispatch(stack, ops, case_id, **take)
    assert r.status_code == 202, r.text
    seen = []
    order = get_from_queue(stack["channel"], "dept.sanitation", case_id, timeout=5)
    while order is not None and order["body"].get("route") != "manual":  # the first round's order, its withdrawal
        seen.append(order["body"])
        order = get_from_queue(stack["channel"], "dept.sanitation", case_id, timeout=5)
    assert order is not None and order["body"]["level"] == 2
    if not any(m["kind"] == "dispatch_withdrawn" for m in seen):  # it may come after the new order
        later = get_from_queue(stack["channel"], "dept.sanitation", case_id, timeout=5)
        seen.append(later["body"] if later else {})
    withdrawn = [m for m in seen if m.get("kind") == "dispatch_withdrawn"]
    # the order withdrawn is the escalated one: at L2, or at L1 when the acknowledge deadline
    # ran out once more before the take-over (a slow machine); never the patch's own level
    assert [m["order_id"] for m in withdrawn] == [f"{case_id}/1/sanitation"], seen
    assert withdrawn[0]["level"] in (1, 2), seen
    case = wait_for(lambda: (c := case_of(stack, case_id))["timeline"][-1]["action"] == "reassign" and c, 10)
    assert case, case_of(stack, case_id)["timeline"]
    requested = next(t for t in case["timeline"] if t["action"] == "dispatch_requested")
    assert requested["note"].startswith("take-over at L2")
    active = [a for a in case["assignments"] if a["active"]]
    assert [(a["dept"], a["level"], a["route"]) for a in active] == [("sanitation", 2, "manual")]


def test_the_relieved_department_is_told_its_order_was_withdrawn(
    stack: dict[str, Any], stack_redis: redis.Redis
) -> None:
    ch = stack["channel"]
    ops, _ = create_key(stack_redis, Role.ops)
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    case_id = new_case(stack)
    first = get_from_queue(ch, "dept.lighting", case_id, timeout=5)
    assert first is not None and first["body"]["kind"] == "dispatch_order"
    wait_status(stack, case_id, "dispatched")
    r = dispatch(stack, ops, case_id, dispatch_id="away-1", departments=["power"], note="属供电线路故障，改派供电")
    assert r.status_code == 202, r.text
    assert get_from_queue(ch, "dept.power", case_id, timeout=5) is not None

    notice = get_from_queue(ch, "dept.lighting", case_id, timeout=5)
    assert notice is not None, "the relieved department's queue got no withdrawal"
    n = notice["body"]
    assert (n["kind"], n["order_id"], n["dept"], n["round_no"]) == (
        "dispatch_withdrawn",
        f"{case_id}/1/lighting",
        "lighting",
        2,
    )
    assert n["by"].startswith("ops:") and "改派供电" in n["note"]
    assert notice["props"]["message_id"] == f"withdrawn:{case_id}/1/lighting"
    assert reply(stack, lighting, case_id, "acknowledge").status_code == 403  # the order is no longer theirs

    def told() -> list[dict[str, Any]]:
        return [
            h
            for h in stack["sink"].received
            if h["path"] == "/hooks/lighting"
            and h["valid"]
            and h["body"]["event"].get("event") == "dispatch_withdrawn"
            and h["body"]["event"].get("case_id") == case_id
        ]

    hooks = wait_for(told, 10)
    assert hooks, [(h["path"], h["body"]["event"].get("event")) for h in stack["sink"].received][-10:]
    assert hooks[0]["body"]["event"]["order_id"] == f"{case_id}/1/lighting"
