"""End to end: the four services as real processes on the real RabbitMQ and Redis.

A report POSTed to intake reaches the department's queue, a signed webhook reaches a
local HTTP sink, and a short acknowledge deadline produces exactly one
`deadline_breached`. Bad input is refused with the field named, or dead-lettered with
the reason.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from shared.amqpclient import body_bytes, message, props
from shared.config import Settings
from tests.e2e.conftest import get_from_queue, report, wait_for

pytestmark = pytest.mark.e2e


def test_report_to_department_queue_webhook_and_one_breach(stack: dict[str, Any]) -> None:
    ch = stack["channel"]
    breaches = ch.queue_declare("", exclusive=True).queue
    ch.queue_bind(breaches, "gridbus.events", routing_key="deadline.breached")

    started = time.monotonic()
    r = httpx.post(f"{stack['base']}/v1/reports", json=report(), headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]
    assert r.json()["status"] == "registered"

    order = get_from_queue(ch, "dept.lighting", case_id, timeout=2.0)
    assert order is not None, "the lighting department's queue got no order within 2 s"
    assert time.monotonic() - started < 2.0
    assert order["body"]["kind"] == "dispatch_order" and order["body"]["dept"] == "lighting"
    assert order["props"]["delivery_mode"] == 2

    hooks = wait_for(
        lambda: [h for h in stack["sink"].received if h["body"]["event"].get("case_id") == case_id], timeout=10
    )
    assert hooks, "no webhook reached the sink"
    assert all(h["valid"] for h in hooks)
    assert hooks[0]["path"] == "/hooks/lighting"
    assert hooks[0]["body"]["event"]["event"] == "case_dispatched"

    # acknowledge limit is 3 s: exactly one breach for it (the 1 h handling limit is far away)
    got = []

    def collect() -> bool:
        msg = ch.basic_get(breaches, no_ack=True)
        if msg is not None:
            got.append(json.loads(body_bytes(msg)))
        return False

    wait_for(collect, timeout=8, interval=0.05)
    mine = [b for b in got if b["case_id"] == case_id]
    assert len(mine) == 1, mine
    assert mine[0]["deadline"] == "acknowledge" and mine[0]["dept"] == "lighting"
    assert mine[0]["late_seconds"] < 1.0

    case = httpx.get(f"{stack['base']}/v1/cases/{case_id}", headers=stack["auth"], timeout=5).json()
    assert case["status"] == "dispatched"
    assert [a["dept"] for a in case["assignments"]] == ["lighting"]
    assert [t["to_status"] for t in case["timeline"]][:3] == ["reported", "registered", "dispatched"]


def test_same_report_id_is_the_same_case(stack: dict[str, Any]) -> None:
    body = report()
    first = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    second = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["case_id"] == second.json()["case_id"]


def test_http_errors_name_the_field(stack: dict[str, Any]) -> None:
    bad = report()
    bad["location"]["lat"] = 999
    r = httpx.post(f"{stack['base']}/v1/reports", json=bad, headers=stack["auth"], timeout=5)
    assert r.status_code == 422
    assert {"field": "location.lat"}.items() <= r.json()["errors"][0].items()

    r = httpx.post(
        f"{stack['base']}/v1/reports",
        content=b"{nope",
        timeout=5,
        headers={"Content-Type": "application/json", **stack["auth"]},
    )
    assert r.status_code == 422 and "JSON" in r.json()["errors"][0]["message"]

    r = httpx.post(
        f"{stack['base']}/v1/reports",
        content=b"x" * (stack["settings"].max_report_bytes + 1),
        headers={"Content-Type": "application/json", **stack["auth"]},
        timeout=5,
    )
    assert r.status_code == 413

    # the grid app must present its key; another role may not report
    r = httpx.post(f"{stack['base']}/v1/reports", json=report(), timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")

    outside = report(location={"lat": 39.9, "lon": 116.4, "address": "北京"})
    r = httpx.post(f"{stack['base']}/v1/reports", json=outside, headers=stack["auth"], timeout=5)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "location"


def test_invalid_amqp_report_is_dead_lettered_with_reason(stack: dict[str, Any]) -> None:
    ch = stack["channel"]
    marker = uuid.uuid4().hex
    bad = report(report_id=f"bad-{marker}", category="lamp")
    ch.basic_publish_confirm(
        message(json.dumps(bad).encode(), content_type="application/json", delivery_mode=2, message_id=marker),
        "gridbus.reports",
        "report.submitted",
        mandatory=True,
    )
    ch.basic_publish_confirm(
        message(b"\xff not json", content_type="application/json", delivery_mode=2, message_id=marker + "-raw"),
        "gridbus.reports",
        "report.submitted",
        mandatory=True,
    )

    seen: dict[str, Any] = {}

    def poll() -> bool:
        msg = ch.basic_get("intake.reports.dead", no_ack=False)
        if msg is not None:
            p = props(msg)
            if p.get("message_id") in (marker, marker + "-raw"):
                seen[p["message_id"]] = p["headers"]
                ch.basic_ack(msg.delivery_tag)
            else:
                ch.basic_reject(msg.delivery_tag, requeue=True)
        return len(seen) == 2

    assert wait_for(poll, timeout=10)
    assert "category" in seen[marker]["x-gridbus-reason"]
    assert seen[marker]["x-gridbus-error"] == "invalid_report"
    assert seen[marker + "-raw"]["x-gridbus-error"] == "undecodable"


def test_metrics_are_served_by_every_service(stack: dict[str, Any]) -> None:
    s: Settings = stack["settings"]
    for service in ("intake", "router", "sla", "notifier"):
        text = httpx.get(f"http://127.0.0.1:{s.metrics_port(service)}/metrics", timeout=5).text
        assert "gridbus_messages_in_total" in text
    intake = httpx.get(f"http://127.0.0.1:{s.intake_metrics_port}/metrics", timeout=5).text
    assert 'gridbus_reports_received_total{channel="http",outcome="registered"}' in intake
