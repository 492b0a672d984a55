"""The seventh step, evaluate (评价): after closing, the reporter (through the grid app) or
the operations centre rates how the case was handled.

`dissatisfied` within EVALUATION_REOPEN_HOURS of the closing reopens the case (unless the
evaluation says `reopen: false`): back to the department(s) that resolved it, counted as
rework like a failed verification; later, or with `reopen: false`, it is recorded only.
Every evaluation reaches sla as a `case_updated` (action `evaluate`, with the rating),
where it counts in the department's and street's satisfaction rate and so in the grade
(shared/indicators.py). Idempotent by `evaluation_id`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from services.intake.cases import Change, transition
from services.intake.store import CaseStore
from shared.lifecycle import Action
from shared.models import (
    Case,
    CaseRedispatch,
    CaseStatus,
    CleanStr,
    Envelope,
    Evaluation,
    RedispatchReason,
    Strict,
    summary_of,
    utcnow,
)

Rating = Literal["satisfied", "basically_satisfied", "dissatisfied"]


class EvaluationRequest(Strict):
    """`POST /v1/cases/{case_id}/evaluation`."""

    evaluation_id: CleanStr = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="The client's id of this evaluation: the idempotency key",
    )
    rating: Rating
    note: CleanStr = Field("", max_length=1000)
    evaluator: CleanStr = Field("", max_length=64, description="Who rates (the reporter's id, an operator)")
    reopen: bool = Field(True, description="dissatisfied within the window reopens the case; false records only")


class NotClosed(ValueError):
    """Only a closed case can be evaluated (HTTP 409)."""

    def __init__(self, case: Case) -> None:
        self.current = case.status
        super().__init__(f"case {case.case_id} is {case.status.value}: only a closed case can be evaluated")


def closed_at(case: Case) -> datetime | None:
    for entry in reversed(case.timeline):
        if entry.to_status is CaseStatus.closed and entry.from_status is not CaseStatus.closed:
            return entry.at
    return None


def apply_evaluation(
    store: CaseStore, case_id: str, body: EvaluationRequest, actor: str, window: timedelta, now: datetime | None = None
) -> tuple[Case, list[Envelope], bool]:
    """Record the evaluation; reopen on dissatisfaction within `window` of the closing."""

    def mutate(case: Case) -> Change:
        if case.status is not CaseStatus.closed:
            raise NotClosed(case)
        at = now or utcnow()
        who = f"{actor}:{body.evaluator}" if body.evaluator else actor
        closed = closed_at(case)
        in_window = closed is not None and at - closed <= window
        reopen = body.rating == "dissatisfied" and body.reopen and in_window
        case.evaluations.append(Evaluation(rating=body.rating, note=body.note, by=who, at=at, reopened=reopen))
        text = f"{body.rating}: {body.note}".rstrip(": ")
        if not reopen:
            late = " (after the reopening window)" if body.rating == "dissatisfied" and body.reopen else ""
            return Change(
                None, who, f"evaluated {text}{late}", announce=True, reply_action="evaluate", rating=body.rating
            )
        case.rework_count += 1
        depts = sorted({a.dept for a in case.assignments if a.active and a.resolved_at is not None})
        from services.intake.replies import _round_no  # the one round numbering

        round_no = case.last_round = _round_no(case)
        case.resolution = None
        redispatch = CaseRedispatch(
            message_id=f"redispatch:{case.case_id}:{round_no}",
            case_id=case.case_id,
            correlation_id=case.correlation_id,
            case=summary_of(case),
            reason=RedispatchReason.reopened,
            round_no=round_no,
            only=depts,
            note=f"reporter dissatisfied: {body.note}",
        )
        return Change(
            Action.reopen,
            who,
            f"evaluated {text}; reopened (rework #{case.rework_count})",
            events=[redispatch],
            rating=body.rating,
        )

    return transition(store, case_id, f"evaluate:{body.evaluation_id}", mutate)
