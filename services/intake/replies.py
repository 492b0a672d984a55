"""Department replies and the grid's verification, as changes to a case.

A case may be dispatched to several departments at once (joint enforcement): each
assignment keeps its own acknowledgement and resolution, and the case's status moves
when the first department acknowledges and when the last one resolves. A department
that says "not ours" leaves the case; when nobody is left the case is `rejected` and
re-routed without the departments that rejected it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.intake.cases import Change, transition
from services.intake.store import CaseStore
from services.intake.validation import FieldError, InvalidInput
from shared.lifecycle import Action, next_status
from shared.models import (
    Assignment,
    Case,
    CaseRedispatch,
    CaseStatus,
    CleanStr,
    Envelope,
    RedispatchReason,
    Reply,
    ReplyAction,
    Resolution,
    SuspensionRequest,
    Text,
    Url,
    summary_of,
    utcnow,
)


class NotAssigned(PermissionError):
    """Only the department the case is currently assigned to may reply (HTTP 403)."""


class Verification(BaseModel):
    """The grid's check of a resolution (`POST /v1/cases/{id}/verification`)."""

    result: str = Field(pattern="^(pass|fail)$")
    note: Text = Field("", max_length=2000)
    photo_urls: list[Url] = Field(default_factory=list, max_length=10)
    verifier: CleanStr = Field("", max_length=64)


def _check_required(reply: Reply) -> None:
    errors = []
    if reply.action in (ReplyAction.reject, ReplyAction.suspend) and not reply.reason:
        errors.append(FieldError("reason", f"required for {reply.action.value}"))
    if reply.action is ReplyAction.resolve and reply.mode is None:
        errors.append(FieldError("mode", "required for resolve: service, management or enforcement"))
    if errors:
        raise InvalidInput(errors)


def _active_assignment(case: Case, dept: str) -> Assignment:
    for a in case.assignments:
        if a.active and a.dept == dept:
            return a
    raise NotAssigned(f"case {case.case_id} is not assigned to {dept}")


def _round_no(case: Case) -> int:
    rounds = [int(a.order_id.rsplit("/", 2)[1]) for a in case.assignments if a.order_id.count("/") >= 2]
    # a dispatch by hand may be requested and not yet dispatched: its round is taken
    return max(rounds + [case.last_round, 1]) + 1


def reply_message_id(dept: str, reply_id: str) -> str:
    """The idempotency key of a reply: the department's own id, scoped to it."""
    return f"reply:{dept}:{reply_id}"


def apply_reply(store: CaseStore, case_id: str, dept: str, reply: Reply) -> tuple[Case, list[Envelope], bool]:
    """Apply a department's reply. Raises NotAssigned, InvalidInput or IllegalTransition."""
    _check_required(reply)

    def mutate(case: Case) -> Change:
        a = _active_assignment(case, dept)
        now = utcnow()
        actor = f"dept:{dept}"
        common: dict[str, Any] = dict(
            reply_action=reply.action.value,
            dept=dept,
            order_id=a.order_id,
            evidence_urls=reply.evidence_urls,
            announce=True,
        )
        note = reply.note or (reply.reason or "")
        if reply.action is ReplyAction.acknowledge:
            if a.acknowledged_at is not None:
                next_status(case.status, Action.progress)  # acknowledging twice: only while open
                return Change(None, actor, note or "acknowledged again", **common)
            a.acknowledged_at = now
            if case.status is CaseStatus.dispatched:
                return Change(Action.acknowledge, actor, note, **common)
            next_status(case.status, Action.progress)  # joint dispatch: the case is already being handled
            return Change(None, actor, note or "acknowledged (joint dispatch)", **common)
        if reply.action is ReplyAction.progress:
            if a.acknowledged_at is None:
                a.acknowledged_at = now
            if case.status is CaseStatus.suspended:  # the department resumes work
                return Change(Action.resume, actor, note or "resumed", **common)
            if case.status is CaseStatus.dispatched:  # a progress note implies 签收
                next_status(case.status, Action.acknowledge)
                case.status = CaseStatus.acknowledged
            return Change(Action.progress, actor, note, **common)
        if reply.action is ReplyAction.suspend:
            # only a request: the clock pauses when the operations centre approves it
            next_status(case.status, Action.suspend)
            case.suspension_request = SuspensionRequest(
                dept=dept, reason=reply.reason or "", note=reply.note, requested_at=now, reply_id=reply.reply_id
            )
            return Change(None, actor, f"suspension requested: {reply.reason}. {reply.note}".strip(), **common)
        if reply.action is ReplyAction.reject:
            if case.status not in (CaseStatus.dispatched, CaseStatus.acknowledged):
                next_status(case.status, Action.reject)  # raises with the allowed actions
            a.active = False
            a.rejected_reason = reply.reason
            if dept not in case.rejected_by:
                case.rejected_by.append(dept)
            if any(x.active for x in case.assignments):
                return Change(None, actor, f"not ours: {reply.reason}", **common)
            round_no = case.last_round = _round_no(case)
            redispatch = CaseRedispatch(
                message_id=f"redispatch:{case.case_id}:{round_no}",
                case_id=case.case_id,
                correlation_id=case.correlation_id,
                case=summary_of(case),
                reason=RedispatchReason.rejected,
                round_no=round_no,
                exclude=list(case.rejected_by),
                note=reply.reason or "",
            )
            return Change(Action.reject, actor, f"not ours: {reply.reason}", events=[redispatch], **common)
        # resolve
        assert reply.mode is not None  # _check_required: a resolution names its 721 mode
        next_status(case.status, Action.resolve)
        a.resolved_at = now
        if a.acknowledged_at is None:
            a.acknowledged_at = now
        pending = [x for x in case.assignments if x.active and x.resolved_at is None]
        if pending:
            return Change(None, actor, f"resolved its part ({reply.mode.value}): {note}", mode=reply.mode, **common)
        case.resolution = Resolution(mode=reply.mode, result=note, evidence_urls=reply.evidence_urls, by=actor, at=now)
        return Change(Action.resolve, actor, note, mode=reply.mode, **common)

    return transition(store, case_id, reply_message_id(dept, reply.reply_id), mutate)


class Cancellation(BaseModel):
    """The operations centre withdraws an invalid case (`POST /v1/cases/{id}/cancellation`)."""

    reason: Text = Field(min_length=2, max_length=500)


def apply_cancellation(
    store: CaseStore, case_id: str, check: Cancellation, message_id: str, actor: str
) -> tuple[Case, list[Envelope], bool]:
    def mutate(case: Case) -> Change:
        for a in case.assignments:
            a.active = False
        return Change(Action.cancel, actor, f"cancelled: {check.reason}")

    return transition(store, case_id, message_id, mutate)


class SuspensionDecision(BaseModel):
    """The operations centre's answer to a suspension request
    (`POST /v1/cases/{id}/suspension`)."""

    decision: str = Field(pattern="^(approve|deny)$")
    approver: CleanStr = Field(min_length=1, max_length=64, description="Who approved or denied (name or id)")
    note: Text = Field("", max_length=500)


class NoSuspensionRequested(ValueError):
    """There is no pending suspension request to decide (HTTP 409)."""


def apply_suspension_decision(
    store: CaseStore, case_id: str, decision: SuspensionDecision, message_id: str, actor: str
) -> tuple[Case, list[Envelope], bool]:
    """approve → `suspended` (the clock pauses; the department resumes with a progress
    reply); deny → the request is dropped and work goes on."""

    def mutate(case: Case) -> Change:
        request = case.suspension_request
        if request is None:
            raise NoSuspensionRequested(f"case {case.case_id} has no pending suspension request")
        case.suspension_request = None
        who = f"{actor} ({decision.approver})"
        if decision.decision == "deny":
            return Change(
                None,
                who,
                f"suspension denied: {decision.note}".strip(),
                announce=True,
                reply_action="suspend_denied",
                dept=request.dept,
            )
        order = next((a.order_id for a in case.assignments if a.active and a.dept == request.dept), None)
        return Change(
            Action.suspend,
            who,
            f"suspended on request of {request.dept}: {request.reason}; "
            f"approved by {decision.approver}. {decision.note}".strip(),
            dept=request.dept,
            order_id=order,
        )

    return transition(store, case_id, message_id, mutate)


def apply_verification(
    store: CaseStore, case_id: str, check: Verification, message_id: str, actor: str
) -> tuple[Case, list[Envelope], bool]:
    """pass → closed; fail → reopened and sent back to the department(s) that resolved it."""

    def mutate(case: Case) -> Change:
        if check.result == "pass":
            return Change(Action.verify_pass, actor, check.note or "verified", evidence_urls=check.photo_urls)
        next_status(case.status, Action.verify_fail)
        case.rework_count += 1
        depts = sorted({a.dept for a in case.assignments if a.active})
        round_no = case.last_round = _round_no(case)
        redispatch = CaseRedispatch(
            message_id=f"redispatch:{case.case_id}:{round_no}",
            case_id=case.case_id,
            correlation_id=case.correlation_id,
            case=summary_of(case),
            reason=RedispatchReason.reopened,
            round_no=round_no,
            only=depts,
            note=check.note,
        )
        case.resolution = None
        return Change(
            Action.verify_fail,
            actor,
            f"rework #{case.rework_count}: {check.note}",
            events=[redispatch],
            evidence_urls=check.photo_urls,
        )

    return transition(store, case_id, message_id, mutate)
