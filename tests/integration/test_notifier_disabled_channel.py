"""A notifier without an SMS provider or a mail relay (no GRIDBUS_SMS_URL, no
GRIDBUS_SMTP_HOST), as the documented compose stack runs it: sms and email are disabled,
said once at start-up and by `gridbus_notify_channel_enabled`; a delivery on a disabled
channel falls back to the next channel or counts as `no_address` — no failure, no dead
letter, no `notification_failed`.

The real notifier process on the real RabbitMQ and Redis, with a local webhook receiver.
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from shared.amqpclient import queue_depth
from shared.models import CaseEscalated
from tests.conftest import Vhosts, wait_for
from tests.integration.test_notifier_service import (
    Hooks,
    breached,
    dispatched,
    log_events,
    new_case_id,
    notifier_stack,
    publish,
    store_case,
)

pytestmark = pytest.mark.integration

NOTIFY = """
operations_centre:
  name: 指挥中心
  webhook: ${TEST_OPS_WEBHOOK}
  email: ops@qixing.example.cn
sms_templates:
  case_dispatched: SMS_T_DISPATCHED
  deadline_breached: SMS_T_BREACHED
  notification_failed: SMS_T_FAILED
subscriptions:
  - event: case_dispatched
    notify:
      - {to: liaison, channels: [sms]}
      - {to: department, channels: [webhook]}
  - event: deadline_breached
    notify:
      - {to: liaison, channels: [sms]}
  - event: case_escalated
    notify:
      - {to: operations_centre, channels: [email, webhook]}
  - event: notification_failed
    notify:
      - {to: operations_centre, channels: [webhook]}
"""


@pytest.fixture(scope="module")
def stack(vhost_factory: Vhosts, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    env = {"GRIDBUS_SMS_URL": "", "GRIDBUS_SMTP_HOST": ""}
    with notifier_stack(vhost_factory, redis_url, tmp_path_factory, "notifier-off", NOTIFY, Hooks(), env) as running:
        yield running


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(f"{name}{want} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _metrics(stack: dict[str, Any]) -> str:
    return httpx.get(f"http://127.0.0.1:{stack['env']['NOTIFIER_METRICS_PORT']}/metrics", timeout=5).text


def test_disabled_channels_are_reported_once_and_by_a_gauge(stack: dict[str, Any]) -> None:
    said = [e for e in log_events(stack) if e.get("event") == "channels_disabled"]
    assert len(said) == 1, said
    assert said[0]["channels"] == ["email", "sms"]
    assert said[0]["enable_with"] == ["GRIDBUS_SMS_URL", "GRIDBUS_SMTP_HOST"]
    text = _metrics(stack)
    assert _sample(text, "gridbus_notify_channel_enabled", channel="sms") == 0
    assert _sample(text, "gridbus_notify_channel_enabled", channel="email") == 0
    assert _sample(text, "gridbus_notify_channel_enabled", channel="webhook") == 1
    assert _sample(text, "gridbus_notify_channel_enabled", channel="wecom") == 1


def test_sms_without_a_provider_counts_as_no_address_not_a_dead_letter(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    before = _metrics(stack)
    cases = [new_case_id() for _ in range(3)]
    for case_id in cases:
        store_case(stack, case_id)
        publish(stack, dispatched(case_id))
        publish(stack, breached(case_id, dispatched(case_id).occurred_at))
    # the department's webhook goes out for each case: the notifier has handled them
    assert wait_for(lambda: all(hooks.for_case(c, "/hooks/lighting") for c in cases), 30)

    def settled() -> str:
        text = _metrics(stack)
        done = (_sample(text, "gridbus_notification_deliveries_total", channel="sms", outcome="no_address") or 0) - (
            _sample(before, "gridbus_notification_deliveries_total", channel="sms", outcome="no_address") or 0
        )
        return text if done >= 6 else ""

    after = wait_for(settled, 20)
    assert after, "the six sms deliveries (three dispatches, three breaches) were not counted as no_address"
    for name, labels in (
        ("gridbus_notification_dead_letters_total", {"channel": "sms", "reason": "permanent"}),
        ("gridbus_notification_deliveries_total", {"channel": "sms", "outcome": "dead"}),
        ("gridbus_notifications_total", {"channel": "sms", "outcome": "permanent"}),
        (
            "gridbus_dead_lettered_total",
            {"service": "notifier", "queue": "notifier.deliveries", "reason": "delivery_failed"},
        ),
    ):
        assert (_sample(after, name, **labels) or 0) == (_sample(before, name, **labels) or 0), (name, labels)
    assert queue_depth(stack["channel"].connection, "notifier.deliveries.dead") == 0
    assert not [h for c in cases for h in hooks.for_case(c, "/ops")]  # no notification_failed
    warned = [
        e
        for e in log_events(stack)
        if e.get("event") in ("delivery_no_address", "delivery_dead") and e.get("case_id") in cases
    ]
    assert warned == []  # one line at start-up said it all


def test_a_disabled_first_channel_falls_back_to_the_next(stack: dict[str, Any]) -> None:
    hooks: Hooks = stack["hooks"]
    before = _metrics(stack)
    case_id = new_case_id()
    store_case(stack, case_id)
    publish(
        stack,
        CaseEscalated(
            case_id=case_id,
            correlation_id=f"r-{case_id}",
            dept="lighting",
            order_id=f"o-{case_id}",
            from_level=3,
            to_level=2,
            reason="deadline breached",
            step=1,
        ),
    )
    ops = wait_for(lambda: hooks.for_case(case_id, "/ops"), 20)
    assert ops and ops[0]["body"]["event"]["event"] == "case_escalated"  # email disabled → webhook
    labels = {"channel": "email", "reason": "permanent"}
    assert (_sample(_metrics(stack), "gridbus_notification_dead_letters_total", **labels) or 0) == (
        _sample(before, "gridbus_notification_dead_letters_total", **labels) or 0
    )  # skipped, not failed
