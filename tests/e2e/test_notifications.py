"""End to end through the four running services: a report's dispatch reaches the
department's webhook signed and once, even when the event is published again; the
liaison's robot is not configured in this stack, so the fallback (SMS) is tried, the
provider refuses it for good, and the operations centre's `notification_failed` event
comes out."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared.amqpclient import body_bytes, message
from tests.e2e.conftest import report, wait_for

pytestmark = pytest.mark.e2e


def test_dispatch_webhook_once_and_failure_reported(stack: dict[str, Any]) -> None:
    ch = stack["channel"]
    failed_q = ch.queue_declare("", exclusive=True).queue
    ch.queue_bind(failed_q, "gridbus.events", routing_key="notification.failed")

    r = httpx.post(f"{stack['base']}/v1/reports", json=report(category="01037"), headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]

    def hooks() -> list[dict[str, Any]]:
        return [
            h
            for h in stack["sink"].received
            if h["body"]["event"].get("case_id") == case_id and h["body"]["event"].get("event") == "case_dispatched"
        ]

    assert wait_for(hooks, timeout=15), "no webhook for the dispatch"
    [hook] = hooks()
    assert hook["valid"] and hook["path"] == "/hooks/lighting"
    assert hook["headers"]["X-Gridbus-Delivery"] == hook["body"]["delivery_id"]
    event = hook["body"]["event"]

    # the same event again (at-least-once upstream): no second message
    ch.basic_publish_confirm(
        message(
            json.dumps(event, ensure_ascii=False).encode(),
            content_type="application/json",
            delivery_mode=2,
            message_id=event["message_id"],
        ),
        "gridbus.events",
        "case.dispatched",
        mandatory=True,
    )

    # liaison: wecom (no robot URL here) → fallback sms (the provider refuses) → notification_failed.
    # Other recipients of the case may fail too, in any order: wait for this one.
    failures: list[dict[str, Any]] = []

    def liaison_failure() -> list[dict[str, Any]]:
        while True:
            msg = ch.basic_get(failed_q, no_ack=True)
            if msg is None:
                break
            doc = json.loads(body_bytes(msg))
            if doc["case_id"] == case_id:
                failures.append(doc)
        return [f for f in failures if f["recipient"] == "liaison:lighting:450305001"]

    found = wait_for(liaison_failure, timeout=15)
    assert found, f"no notification_failed for the unreachable liaison; got {failures}"
    assert found[0]["channel"] == "sms" and "400" in found[0]["reason"]

    def dropped_as_done() -> bool:  # the repeated event's webhook delivery, recognised as done
        for line in stack["log"].read_text(encoding="utf-8", errors="replace").splitlines():
            if '"delivery_duplicate"' in line and case_id in line and '"webhook"' in line:
                return True
        return False

    assert wait_for(dropped_as_done, 30), "the repeated event's webhook delivery was not dropped as done"
    assert len(hooks()) == 1
    metrics = httpx.get(f"http://127.0.0.1:{stack['settings'].notifier_metrics_port}/metrics", timeout=5).text
    assert 'gridbus_notification_deliveries_total{channel="webhook",outcome="delivered"}' in metrics
    assert 'gridbus_notification_dead_letters_total{channel="sms",reason="permanent"}' in metrics
