"""Evaluation (评价) on the real Redis: only after closing, idempotent, dissatisfaction
reopens within the window (back to the resolving department, as rework) and is only
recorded after it; sla counts the rating for the street and the resolving department."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from services.intake.evaluation import EvaluationRequest, NotClosed, apply_evaluation
from services.intake.replies import Verification, apply_reply, apply_verification
from services.intake.store import CaseStore
from services.sla.state import CaseClocks, Engine, Order
from shared.models import CaseRecorded, CaseRedispatch, CaseStatus, CaseUpdated, Reply, utcnow
from tests.integration.test_manual_dispatch import dispatched
from tests.unit.test_sla_engine import engine  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
WINDOW = timedelta(hours=168)


def closed_case(store: CaseStore) -> str:
    case_id = dispatched(store, ["lighting"])
    apply_reply(store, case_id, "lighting", Reply(reply_id="r", action="resolve", mode="service", note="已修复"))
    apply_verification(store, case_id, Verification(result="pass"), "verify:1", "grid_app:x")
    return case_id


def ev(**over: object) -> EvaluationRequest:
    return EvaluationRequest.model_validate({"evaluation_id": "e-1", "rating": "satisfied", **over})


def test_evaluation_only_after_closing_and_idempotent(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    open_case = dispatched(store, ["lighting"])
    with pytest.raises(NotClosed):
        apply_evaluation(store, open_case, ev(), "grid_app:k", WINDOW)
    case_id = closed_case(store)
    case, events, applied = apply_evaluation(store, case_id, ev(note="很快", evaluator="w-1024"), "grid_app:k", WINDOW)
    assert applied and case.status is CaseStatus.closed
    assert [(e.rating, e.by) for e in case.evaluations] == [("satisfied", "grid_app:k:w-1024")]
    record, update = events  # the archive's record of the new version comes first (CaseStore.save)
    assert isinstance(record, CaseRecorded) and record.version == case.version
    assert isinstance(update, CaseUpdated) and (update.action, update.rating) == ("evaluate", "satisfied")
    _, again, applied2 = apply_evaluation(store, case_id, ev(), "grid_app:k", WINDOW)
    assert not applied2 and again == []


def test_dissatisfied_reopens_within_the_window_only(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id = closed_case(store)
    case, events, _ = apply_evaluation(
        store, case_id, ev(evaluation_id="e-2", rating="dissatisfied", note="路灯又不亮了"), "ops:k", WINDOW
    )
    assert case.status is CaseStatus.reopened and case.rework_count == 1 and case.evaluations[-1].reopened
    redispatch = next(e for e in events if isinstance(e, CaseRedispatch))
    assert redispatch.reason.value == "reopened" and redispatch.only == ["lighting"] and redispatch.round_no == 2
    assert next(e for e in events if isinstance(e, CaseUpdated)).rating == "dissatisfied"

    late = closed_case(store)
    later = utcnow() + WINDOW + timedelta(minutes=1)
    case, events, _ = apply_evaluation(
        store, late, ev(evaluation_id="e-3", rating="dissatisfied"), "ops:k", WINDOW, now=later
    )
    assert case.status is CaseStatus.closed and not case.evaluations[-1].reopened
    assert "after the reopening window" in case.timeline[-1].note
    assert not any(isinstance(e, CaseRedispatch) for e in events)
    case, _, _ = apply_evaluation(
        store, closed_case(store), ev(evaluation_id="e-4", rating="dissatisfied", reopen=False), "ops:k", WINDOW
    )
    assert case.status is CaseStatus.closed


def test_sla_counts_the_rating(engine: Engine) -> None:  # noqa: F811
    doc = CaseClocks(
        case_id="c1",
        corr="r",
        cat="01037",
        sev="normal",
        cond=None,
        grid="450305001001001",
        street="450305001",
        status="closed",
    )
    doc.orders["c1/1/lighting"] = Order(
        order_id="c1/1/lighting",
        dept="lighting",
        street="450305001",
        level=3,
        policy="default",
        round=1,
        dispatched=1.0,
        resolved=2.0,
    )
    doc.orders["c1/1/power"] = Order(
        order_id="c1/1/power", dept="power", street="450305001", level=3, policy="default", round=1, dispatched=1.0
    )  # never resolved it
    event = CaseUpdated(
        case_id="c1",
        correlation_id="r",
        from_status="closed",
        to_status="closed",
        action="evaluate",
        actor="grid_app:k",
        rating="basically_satisfied",
    )
    fx = engine.updated(doc, event, 3.0)
    counted = {(scope, key, counter) for _, scope, key, counter, _ in fx.counts}
    assert counted == {
        ("street", "450305001", "eval_basically_satisfied"),
        ("dept", "lighting", "eval_basically_satisfied"),
    }
