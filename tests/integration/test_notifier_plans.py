"""The notifier's own sending of an event's deliveries (services/notifier/plans.py) on the
real broker and Redis: the plan is recorded before anything is sent, and what is left
when the handler's time budget is spent goes to notifier.deliveries before the plan is
let go (the queue then carries it, as it carried every delivery before)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from services.notifier.service import NotifierConfig
from shared import redis_keys, topology
from shared.amqpclient import body_bytes, channel, connection
from shared.bus import Bus
from shared.config import get_settings
from shared.models import Assignment, CaseDispatched, CaseSummary, Severity
from shared.redisdb import connect

pytestmark = pytest.mark.integration


def test_what_is_left_after_the_budget_goes_to_the_deliveries_queue(stack_env: dict[str, Any]) -> None:
    topology.apply(stack_env["AMQP_URI"])
    config = NotifierConfig()
    config.setup()
    client = connect(get_settings())
    notifier = config.notifier(client, Bus(stack_env["AMQP_URI"], "notifier"))
    now = datetime.now(timezone.utc)
    case_id = "450305-20261201-000991"
    event = CaseDispatched(
        case_id=case_id,
        correlation_id="r-991",
        case=CaseSummary(
            category="01037",
            severity=Severity.normal,
            grid="450305001001001",
            street="450305001",
            address="七星区辰山路8号",
            description="路灯不亮",
            registered_at=now,
        ),
        assignments=[
            Assignment(
                dept="lighting",
                street="450305001",
                level=3,
                order_id="o-991",
                dispatched_at=now,
                ack_due=now + timedelta(hours=2),
                handle_due=now + timedelta(hours=24),
            )
        ],
    )
    planned = notifier.plan(event)
    assert len(planned) >= 2  # the liaison and the department
    assert client.exists(redis_keys.notify_plan(event.message_id)), "recorded before the first send"
    assert notifier.plan(event) == planned  # a second try takes the recorded plan

    notifier.deliver_planned(event, planned, budget_s=0)  # spent at once: all of it to the queue

    with connection(stack_env["AMQP_URI"]) as conn:
        ch = channel(conn)
        queued = []
        while (msg := ch.basic_get(topology.Q_NOTIFIER_DELIVERIES, no_ack=True)) is not None:
            body = json.loads(body_bytes(msg))
            if body["case_id"] == case_id:
                queued.append(body["delivery_id"])
    assert sorted(queued) == sorted(d.delivery_id for d in planned)
    assert not client.exists(redis_keys.notify_plan(event.message_id)), "the plan outlived its event"
    for d in planned:  # nothing was sent here: each is still to do, by whoever takes it from the queue
        assert not client.exists(redis_keys.delivery_sent(d.delivery_id))
