"""The alert on dead letters for a failure names exactly the bad-input kinds that
shared/deadletters.py (and `gridbus dead`, the chaos checks) treat as the sender's
problem; and a dead letter's reason is read the two ways one gets there."""

from __future__ import annotations

import re

import yaml

from shared.deadletters import INPUT_ERRORS, dead_queue_of, is_input_error, reason_of, work_queue_of
from tests.conftest import REPO


def _rule(name: str) -> dict:
    doc = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    return next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == name)


def test_failure_alert_excludes_exactly_the_input_kinds() -> None:
    expr = _rule("GridbusDeadLetteredForFailure")["expr"]
    found = re.search(r'reason!~"([^"]+)"', expr)
    assert found, expr
    assert set(found.group(1).split("|")) == set(INPUT_ERRORS)
    assert "handler_error" not in INPUT_ERRORS and "delivery_limit" not in INPUT_ERRORS


def test_reason_of_a_refused_and_a_broker_dead_letter() -> None:
    assert reason_of({"x-gridbus-error": b"invalid_event", "x-gridbus-reason": "not a lifecycle event"}) == (
        "invalid_event",
        "not a lifecycle event",
    )
    kind, text = reason_of({"x-death": [{"reason": "delivery_limit", "queue": "router.cases", "count": 1}]})
    assert kind == "delivery_limit" and "router.cases" in text
    assert reason_of({}) == ("unknown", "")
    assert is_input_error("invalid_report") and not is_input_error("delivery_limit")
    assert not is_input_error("handler_error")


def test_queue_names_either_way() -> None:
    assert dead_queue_of("router.cases") == dead_queue_of("router.cases.dead") == "router.cases.dead"
    assert work_queue_of("router.cases.dead") == work_queue_of("router.cases") == "router.cases"
