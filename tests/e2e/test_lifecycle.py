"""The case lifecycle through the real services: replies over HTTP and AMQP, the grid's
verification with rework, re-routing after "not ours", dispute, and refusals."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import redis

from services.intake.auth import Role, create_key
from shared import topology
from shared.amqpclient import ConfirmChannel, props
from shared.broker_users import apply_users
from tests.e2e.conftest import get_from_queue, report, wait_for

pytestmark = pytest.mark.e2e


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def case_of(stack: dict[str, Any], case_id: str) -> dict[str, Any]:
    return httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=stack["auth"], timeout=5).json()


def wait_status(stack: dict[str, Any], case_id: str, status: str, timeout: float = 10) -> dict[str, Any]:
    case = wait_for(lambda: (c := case_of(stack, case_id))["status"] == status and c, timeout)
    assert case, f"{case_id} never became {status}: {case_of(stack, case_id)['status']}"
    return case


def new_case(stack: dict[str, Any], **over: Any) -> str:
    r = httpx.post(f"{stack['base']}/v1/reports", json=report(**over), headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    return r.json()["case_id"]


def reply(stack: dict[str, Any], key: str, case_id: str, action: str, **fields: Any) -> httpx.Response:
    body = {"reply_id": uuid.uuid4().hex[:12], "action": action, **fields}
    return httpx.post(f"{stack['base']}/v1/cases/{case_id}/replies", json=body, headers=bearer(key), timeout=5)


def test_full_cycle_with_rework(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    grid_app, _ = create_key(stack_redis, Role.grid_app)
    case_id = new_case(stack)
    wait_status(stack, case_id, "dispatched")

    ack = {"reply_id": "L-1", "action": "acknowledge", "note": "已派人赶往现场"}
    first = httpx.post(f"{stack['base']}/v1/cases/{case_id}/replies", json=ack, headers=bearer(lighting), timeout=5)
    again = httpx.post(f"{stack['base']}/v1/cases/{case_id}/replies", json=ack, headers=bearer(lighting), timeout=5)
    assert first.status_code == 200 and first.json()["status"] == "acknowledged" and first.json()["applied"]
    assert again.status_code == 200 and not again.json()["applied"]  # idempotent by reply id

    r = reply(
        stack,
        lighting,
        case_id,
        "resolve",
        mode="service",
        note="已更换灯泡",
        evidence_urls=["https://img.example/after.jpg"],
    )
    assert r.status_code == 200 and r.json()["status"] == "resolved"

    r = httpx.post(
        f"{stack['base']}/v1/cases/{case_id}/verification",
        headers=bearer(grid_app),
        timeout=5,
        json={"result": "fail", "note": "仍有一盏不亮", "verifier": "g-0007"},
    )
    assert r.status_code == 200 and r.json()["status"] == "reopened"
    case = wait_status(stack, case_id, "dispatched")  # back to the same department, round 2
    assert case["rework_count"] == 1
    active = [a for a in case["assignments"] if a["active"]]
    assert [(a["dept"], a["order_id"].split("/")[-2]) for a in active] == [("lighting", "2")]

    assert reply(stack, lighting, case_id, "progress", note="处理中").json()["status"] == "in_progress"
    assert reply(stack, lighting, case_id, "resolve", mode="management", note="全部修复").status_code == 200
    r = httpx.post(
        f"{stack['base']}/v1/cases/{case_id}/verification",
        headers=bearer(grid_app),
        timeout=5,
        json={"result": "pass", "note": "核查通过", "verifier": "g-0007"},
    )
    assert r.json()["status"] == "closed"

    case = case_of(stack, case_id)
    assert case["resolution"]["mode"] == "management"
    steps = [(t["action"], t["to_status"]) for t in case["timeline"]]
    assert steps == [
        ("report", "reported"),
        ("register", "registered"),
        ("dispatch", "dispatched"),
        ("acknowledge", "acknowledged"),
        ("resolve", "resolved"),
        ("verify_fail", "reopened"),
        ("dispatch", "dispatched"),
        ("progress", "in_progress"),
        ("resolve", "resolved"),
        ("verify_pass", "closed"),
    ]

    # a closed case refuses further replies with the state and what is allowed
    r = reply(stack, lighting, case_id, "progress", note="?")
    assert r.status_code == 409
    # only the reporter's dissatisfied evaluation can reopen a closed case
    assert r.json()["current"] == "closed" and r.json()["allowed"] == ["reopen"]


def test_refusals(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    gas, _ = create_key(stack_redis, Role.department, "gas")
    grid_app, _ = create_key(stack_redis, Role.grid_app)
    case_id = new_case(stack)
    wait_status(stack, case_id, "dispatched")
    url = f"{stack['base']}/v1/cases/{case_id}/replies"
    body = {"reply_id": "x1", "action": "acknowledge"}
    assert httpx.post(url, json=body, timeout=5).status_code == 401
    assert (
        httpx.post(url, json=body, headers=bearer("gbk_000000000000.wrongwrongwrongwrongwrong"), timeout=5).status_code
        == 401
    )
    assert httpx.post(url, json=body, headers=bearer(grid_app), timeout=5).status_code == 403  # wrong role
    # never assigned to gas: answered exactly as a case that does not exist (no leak of ids)
    r = httpx.post(url, json=body, headers=bearer(gas), timeout=5)
    missing = httpx.post(
        f"{stack['base']}/v1/cases/450305-20000101-999999/replies", json=body, headers=bearer(gas), timeout=5
    )
    assert (r.status_code, missing.status_code) == (404, 404)
    assert r.json()["errors"][0]["message"].replace(case_id, "X") == missing.json()["errors"][0]["message"].replace(
        "450305-20000101-999999", "X"
    )
    big = {"reply_id": "x2", "action": "progress", "note": "很长" * 40000}
    r = httpx.post(url, json=big, headers=bearer(lighting), timeout=5)
    assert r.status_code == 413
    r = reply(stack, lighting, case_id, "reject")  # reason missing
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = reply(stack, lighting, case_id, "resolve", mode="teleport")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mode"
    r = httpx.post(
        f"{stack['base']}/v1/cases/{case_id}/verification", headers=bearer(grid_app), timeout=5, json={"result": "pass"}
    )
    assert r.status_code == 409 and r.json()["current"] == "dispatched"
    assert (
        httpx.post(f"{stack['base']}/v1/cases/nope/replies", json=body, headers=bearer(lighting), timeout=5).status_code
        == 404
    )
    # reading a case: its department may, another department may not, nobody without a key
    assert httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=bearer(lighting), timeout=5).status_code == 200
    assert httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=bearer(gas), timeout=5).status_code == 404
    assert httpx.get(f"{stack['base']}/v1/cases/{case_id}", timeout=5).status_code == 401


def test_rejection_reroutes_to_next_department_then_dispute(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    ch = stack["channel"]
    sanitation, _ = create_key(stack_redis, Role.department, "sanitation")
    cityman, _ = create_key(stack_redis, Role.department, "cityman")
    case_id = new_case(stack, category="06010", description="路边暴露垃圾", filing_condition=None)
    assert get_from_queue(ch, "dept.sanitation", case_id, timeout=5)

    r = reply(stack, sanitation, case_id, "reject", reason="属建筑垃圾，不归环卫")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    order = get_from_queue(ch, "dept.cityman", case_id, timeout=5)
    assert order is not None, "the rejected case did not reach the next department's queue"
    case = wait_status(stack, case_id, "dispatched")
    assert case["rejected_by"] == ["sanitation"]

    r = reply(stack, cityman, case_id, "reject", reason="属物业管理区域")
    assert r.status_code == 200
    station = get_from_queue(ch, "dept.station", case_id, timeout=5)
    assert station is not None and station["body"]["route"] == "dispute"
    case = wait_status(stack, case_id, "dispatched")
    assert case["disputed"] is True and case["rejected_by"] == ["sanitation", "cityman"]


def test_amqp_reply_trusts_user_id_not_body(
    stack: dict[str, Any], broker_uris: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_LIGHTING", "lighting-e2e")
    monkeypatch.setenv("GRIDBUS_DEPT_PASSWORD_GAS", "gas-e2e")
    vhost_uri = stack["env"]["AMQP_URI"]
    apply_users(broker_uris[1], vhost_uri, ["lighting", "gas"])
    case_id = new_case(stack)
    wait_status(stack, case_id, "dispatched")

    def publish(user: str, password: str, body: dict[str, Any]) -> None:
        dept = user.removeprefix("dept-")
        publisher = ConfirmChannel(vhost_uri, userid=user, password=password)
        try:
            publisher.publish_one(
                topology.EX_REPLIES,
                topology.reply_routing_key(dept),
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=2,
                user_id=user,
                message_id=body["reply_id"],
            )
        finally:
            publisher.close()

    # gas is not assigned: its reply is dead-lettered with the reason
    publish("dept-gas", "gas-e2e", {"case_id": case_id, "reply_id": "g-1", "action": "acknowledge"})
    dead: dict[str, Any] = {}

    def poll() -> bool:
        msg = stack["channel"].basic_get("intake.replies.dead", no_ack=False)
        if msg is not None:
            if props(msg).get("message_id") == "g-1":
                dead.update(props(msg)["headers"])
                stack["channel"].basic_ack(msg.delivery_tag)
            else:
                stack["channel"].basic_reject(msg.delivery_tag, requeue=True)
        return bool(dead)

    assert wait_for(poll, timeout=10)
    assert dead["x-gridbus-error"] == "not_assigned"
    # lighting acknowledges over AMQP
    publish(
        "dept-lighting",
        "lighting-e2e",
        {"case_id": case_id, "reply_id": "l-1", "action": "acknowledge", "note": "收到"},
    )
    case = wait_status(stack, case_id, "acknowledged")
    assert case["timeline"][-1]["actor"] == "dept:lighting"


def test_near_duplicates_link_to_the_open_original(stack: dict[str, Any]) -> None:
    from tests.e2e.conftest import spread_location

    here = spread_location()
    first = httpx.post(
        f"{stack['base']}/v1/reports", json=report(location=here), headers=stack["auth"], timeout=5
    ).json()
    wait_status(stack, first["case_id"], "dispatched")
    near = {**here, "lat": here["lat"] + 0.0001}  # ~11 m away
    r = httpx.post(
        f"{stack['base']}/v1/reports",
        json=report(location=near),
        headers={"Idempotency-Key": "k-1", **stack["auth"]},
        timeout=5,
    )
    assert r.status_code == 202
    assert r.json() == {"case_id": r.json()["case_id"], "status": "duplicate", "duplicate_of": first["case_id"]}
    again = httpx.post(
        f"{stack['base']}/v1/reports",
        json=report(location=near),
        headers={"Idempotency-Key": "k-1", **stack["auth"]},
        timeout=5,
    )
    assert again.status_code == 200 and again.json() == r.json()  # same key, same answer
    dup = case_of(stack, r.json()["case_id"])
    assert dup["status"] == "duplicate" and dup["assignments"] == []
    assert r.json()["case_id"] in wait_for(lambda: case_of(stack, first["case_id"])["duplicates"], 5)
    other = httpx.post(
        f"{stack['base']}/v1/reports",
        json=report(location=near, category="03005", filing_condition=None),
        headers=stack["auth"],
        timeout=5,
    )
    assert other.json()["status"] == "registered"  # another category at the same spot is its own case


def test_ops_cancels_an_invalid_case(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    ops, _ = create_key(stack_redis, Role.ops)
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    case_id = new_case(stack)
    wait_status(stack, case_id, "dispatched")
    url = f"{stack['base']}/v1/cases/{case_id}/cancellation"
    assert httpx.post(url, json={"reason": "测试误报"}, headers=bearer(lighting), timeout=5).status_code == 403
    assert httpx.post(url, json={}, headers=bearer(ops), timeout=5).status_code == 422
    r = httpx.post(url, json={"reason": "测试误报"}, headers=bearer(ops), timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert reply(stack, lighting, case_id, "acknowledge").status_code == 403  # no longer assigned
    r = httpx.post(url, json={"reason": "again"}, headers=bearer(ops), timeout=5)
    assert r.status_code == 409 and r.json()["current"] == "cancelled"


def test_suspension_is_requested_by_the_department_and_approved_by_ops(
    stack: dict[str, Any], stack_redis: redis.Redis
) -> None:
    ops, _ = create_key(stack_redis, Role.ops)
    lighting, _ = create_key(stack_redis, Role.department, "lighting")
    case_id = new_case(stack)
    wait_status(stack, case_id, "dispatched")
    url = f"{stack['base']}/v1/cases/{case_id}/suspension"
    approve = {"decision": "approve", "approver": "指挥中心 李主任", "note": "同意"}
    r = httpx.post(url, json=approve, headers=bearer(ops), timeout=5)
    assert r.status_code == 409 and r.json()["error"] == "no_suspension_requested"

    assert reply(stack, lighting, case_id, "acknowledge").json()["status"] == "acknowledged"
    r = reply(stack, lighting, case_id, "suspend", reason="等待供电公司停电检修", note="预计两天")
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"  # only requested
    assert case_of(stack, case_id)["suspension_request"]["reason"] == "等待供电公司停电检修"
    assert httpx.post(url, json=approve, headers=bearer(lighting), timeout=5).status_code == 403
    r = httpx.post(url, json=approve, headers=bearer(ops), timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    case = case_of(stack, case_id)
    assert case["suspension_request"] is None
    assert "李主任" in case["timeline"][-1]["actor"] and "等待供电公司停电检修" in case["timeline"][-1]["note"]

    r = reply(stack, lighting, case_id, "progress", note="检修结束，恢复处置")
    assert r.json()["status"] == "in_progress"  # resumed: the clock runs again

    # a denied request leaves the case as it was
    reply(stack, lighting, case_id, "suspend", reason="人手不足")
    r = httpx.post(
        url, json={"decision": "deny", "approver": "指挥中心", "note": "不予挂起"}, headers=bearer(ops), timeout=5
    )
    assert r.status_code == 200 and r.json()["status"] == "in_progress"
