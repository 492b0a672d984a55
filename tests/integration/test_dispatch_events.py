"""What intake publishes when it applies a dispatch, on the real Redis (issue 16: every
hop that carries nothing a consumer needs is gone, everything a consumer needs stays).

The router's `case_dispatched` is applied without a `case_updated` after it: its record
(`case_recorded`, for the archive and the audit stream) carries the dispatched case, and
sla, the notifier and the bridge have the dispatch from `case_dispatched` itself
(tests/unit/test_sla_engine.py shows that sla decided nothing on the case_updated, and
notify.yaml cannot subscribe to it). A dispatch by hand keeps its `case_updated`."""

from __future__ import annotations

import redis

from services.intake.cases import apply_event
from services.intake.observe import observe
from services.intake.store import CaseStore
from shared import metrics
from shared.models import Assignment, CaseDispatched, CaseRecorded, CaseStatus, CaseUpdated, summary_of
from tests.integration.test_case_store import NOW, register


def _dispatched_count() -> float:
    samples = [s for fam in metrics.PIPELINE_LATENCY.collect() for s in fam.samples]
    return next((s.value for s in samples if s.name.endswith("_count") and s.labels == {"stage": "dispatched"}), 0.0)


def _dispatch(store: CaseStore, case_id: str, round_no: int = 1, by: str = "") -> CaseDispatched:
    case = store.get(case_id)
    return CaseDispatched(
        case_id=case_id,
        correlation_id=case.correlation_id,
        case=summary_of(case),
        round_no=round_no,
        by=by,
        assignments=[
            Assignment(
                dept="lighting",
                street="450305001",
                level=3,
                order_id=f"{case_id}/{round_no}/lighting",
                dispatched_at=NOW,
            )
        ],
    )


def test_the_router_dispatch_is_recorded_and_told_by_case_dispatched_alone(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id, _ = register(store, "r-dispatch-events")
    event = _dispatch(store, case_id)
    observed = _dispatched_count()
    case, events, applied = apply_event(store, event)
    observe(case, events, applied=event)
    assert applied and [type(e) for e in events] == [CaseRecorded]  # no case_updated
    # the archive's record has what a case_updated said, and the assignment with it
    record = events[0]
    assert isinstance(record, CaseRecorded)
    assert record.case.status is CaseStatus.dispatched
    assert [a.order_id for a in record.case.assignments if a.active] == [f"{case_id}/1/lighting"]
    entry = record.case.timeline[-1]
    assert (entry.action, entry.from_status, entry.to_status, entry.message_id) == (
        "dispatch",
        CaseStatus.registered,
        CaseStatus.dispatched,
        event.message_id,
    )
    assert store.get(case_id).status is CaseStatus.dispatched
    # the operations centre's registration → dispatch latency is still observed, once
    assert _dispatched_count() == observed + 1
    again, events2, applied2 = apply_event(store, event)
    observe(again, events2, applied=None)
    assert not applied2 and events2 == [] and _dispatched_count() == observed + 1


def test_a_dispatch_by_hand_still_publishes_its_case_updated(redis_client: redis.Redis) -> None:
    store = CaseStore(redis_client, "450305")
    case_id, _ = register(store, "r-dispatch-by-hand")
    apply_event(store, _dispatch(store, case_id))
    _, events, applied = apply_event(store, _dispatch(store, case_id, round_no=2, by="commander:chen"))
    updates = [e for e in events if isinstance(e, CaseUpdated)]
    assert applied and len(updates) == 1
    assert (updates[0].action, updates[0].to_status) == ("reassign", CaseStatus.dispatched)
