"""Dispatch by hand (改派, take-over, hand-up), as a change to a case.

Who may dispatch which case (the plan's levels: the street's grid station holds level 3,
the district's command centre — an `ops` key — levels 2 and 1):

- `ops` may dispatch any open case that has been dispatched at least once;
- a `station` key only cases of its own street that are not supervised above the street
  (an active assignment escalated to level 2 or 1 belongs to the district's commanders:
  they take it over), and only at level 3 or below;
- a station may hand a triage case (one sitting with the grid station) up to the
  district: a new round at the district's triage, level 2, where only `ops` can act.

Intake only records the request and closes the previous round's assignments at once (so
a department that was just relieved can no longer reply); router turns the request (a
`case_redispatch` with reason `manual`) into orders and `case_dispatched`, which intake
then applies through the state machine (`reassign`) and from which sla arms new clocks.
Idempotent by the client's `dispatch_id`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from services.intake.auth import Forbidden, Principal, Role
from services.intake.cases import Change, transition, withdrawals
from services.intake.store import CaseStore
from services.intake.validation import FieldError, InvalidInput
from shared.departments import GRID_STATION
from shared.lifecycle import Action, next_status
from shared.models import (
    Case,
    CaseRedispatch,
    CleanStr,
    Envelope,
    RedispatchReason,
    Strict,
    summary_of,
)

DISTRICT_LEVEL = 2
STREET_LEVEL = 3


class ManualDispatch(Strict):
    """`POST /v1/cases/{case_id}/dispatch`."""

    dispatch_id: CleanStr = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="The client's id of this dispatch: the idempotency key",
    )
    departments: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,19}$")]] = Field(
        default_factory=list, max_length=8, description="Departments of the new round (empty only with hand_up)"
    )
    lead: str | None = Field(None, description="The lead (牵头) department; default the first one")
    level: int = Field(STREET_LEVEL, ge=1, le=5, description="Grid level supervising the new round")
    note: CleanStr = Field(min_length=2, max_length=1000, description="Why: goes into the timeline and the orders")
    hand_up: bool = Field(False, description="Hand a triage case up to the district's triage (level 2)")

    @model_validator(mode="after")
    def _consistent(self) -> "ManualDispatch":
        if self.hand_up:
            if self.departments:
                raise ValueError("hand_up takes no departments: the district decides")
        elif not self.departments:
            raise ValueError("departments: at least one (or hand_up: true)")
        if len(set(self.departments)) != len(self.departments):
            raise ValueError("departments: each at most once")
        if self.lead is not None and self.lead not in self.departments:
            raise ValueError("lead must be one of departments")
        return self


def dispatch_message_id(dispatch_id: str) -> str:
    return f"manual:{dispatch_id}"


def next_round(case: Case) -> int:
    """The round a new dispatch gets: above every round dispatched or requested."""
    rounds = [int(a.order_id.rsplit("/", 2)[1]) for a in case.assignments if a.order_id.count("/") >= 2]
    return max(rounds + [case.last_round, 1]) + 1


def supervising_level(case: Case) -> int | None:
    """The highest grid level (lowest number) holding an active assignment, if any."""
    levels = [a.level for a in case.assignments if a.active]
    return min(levels) if levels else None


def in_triage(case: Case) -> bool:
    active = [a for a in case.assignments if a.active]
    return bool(active) and all(a.dept == GRID_STATION for a in active)


def authorize(principal: Principal, case: Case, body: ManualDispatch) -> None:
    """Forbidden (403) unless this caller holds the case at its current level."""
    if principal.role is Role.ops:
        return
    if principal.role is not Role.station:
        raise Forbidden(f"role {principal.role.value} may not dispatch (needs ops or station)")
    if case.street != principal.street:
        raise Forbidden(
            f"this key is the grid station of street {principal.street}; case {case.case_id} is in street {case.street}"
        )
    level = supervising_level(case)
    if level is not None and level < STREET_LEVEL:
        raise Forbidden(
            f"case {case.case_id} is escalated to level {level}: the commanders of that level "
            "(the district's command centre, an ops key) take it over"
        )
    if not body.hand_up and body.level < STREET_LEVEL:
        raise Forbidden(
            f"a grid station dispatches at level {STREET_LEVEL} or below; "
            "hand the case up to the district instead (hand_up: true)"
        )


def apply_manual_dispatch(
    store: CaseStore, case_id: str, body: ManualDispatch, principal: Principal, known_departments: set[str]
) -> tuple[Case, list[Envelope], bool]:
    """Record the request and close the current round. Raises Forbidden, InvalidInput,
    IllegalTransition (a case in a state that cannot be re-dispatched, e.g. resolved)."""
    unknown = [(i, d) for i, d in enumerate(body.departments) if d not in known_departments]
    if unknown:
        raise InvalidInput([FieldError(f"departments[{i}]", f"unknown department {d!r}") for i, d in unknown])

    def mutate(case: Case) -> Change:
        authorize(principal, case, body)
        next_status(case.status, Action.reassign)
        if body.hand_up and not in_triage(case):
            raise InvalidInput([FieldError("hand_up", "only a triage case (with the grid station) can be handed up")])
        round_no = next_round(case)
        case.last_round = round_no
        held = supervising_level(case)
        closed = [a for a in case.assignments if a.active]
        for a in closed:
            a.active = False
        case.suspension_request = None  # a relieved department's pending request goes with its order
        if body.hand_up:
            depts, lead, level = [GRID_STATION], GRID_STATION, DISTRICT_LEVEL
        else:
            lead = body.lead or body.departments[0]
            depts = [lead] + [d for d in body.departments if d != lead]
            level = body.level
        kind = (
            "hand-up to the district"
            if body.hand_up
            else f"take-over at L{level}"
            if held is not None and held < STREET_LEVEL
            else "改派"
        )
        request = CaseRedispatch(
            message_id=f"redispatch:{case.case_id}:{round_no}",
            case_id=case.case_id,
            correlation_id=case.correlation_id,
            case=summary_of(case),
            reason=RedispatchReason.manual,
            round_no=round_no,
            departments=depts,
            lead=lead,
            level=level,
            by=principal.actor,
            note=body.note,
        )
        was = ", ".join(f"{a.dept}@L{a.level}" for a in closed) or "—"
        note = (
            f"{kind} (round {round_no}) by {principal.actor}: to {', '.join(depts)} (lead {lead}) at L{level}; "
            f"closes {was}. {body.note}"
        )
        withdrawn = withdrawals(case, closed, round_no, principal.actor, f"{kind}: {body.note}")
        return Change(
            None, principal.actor, note, events=[*withdrawn, request], announce=True, reply_action="dispatch_requested"
        )

    return transition(store, case_id, dispatch_message_id(body.dispatch_id), mutate)
