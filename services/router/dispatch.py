"""Router's domain: from a registered case to dispatch orders, one per receiver.

Ids are derived, not random: a redelivered `case_registered` produces the very same
orders and events, so departments and intake can recognise the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from services.router.tree import Receiver, RoutingInput, RoutingTree
from shared.catalog import Catalog
from shared.departments import GRID_STATION
from shared.models import (
    Assignment,
    CaseDispatched,
    CaseRedispatch,
    CaseRegistered,
    CaseSummary,
    CaseUnroutable,
    DispatchOrder,
    DispatchWithdrawn,
    Envelope,
    Mode721,
    RedispatchReason,
    utcnow,
)
from shared.policies import PolicyBook
from shared.topology import EX_REPLIES, dispatch_routing_key, reply_routing_key
from shared.worktime import WorkCalendar


@dataclass(frozen=True)
class DispatchPlan:
    orders: list[tuple[str, DispatchOrder]]  # (routing key, order)
    dispatched: CaseDispatched
    unroutable: CaseUnroutable | None


def withdrawal_routing_key(notice: DispatchWithdrawn) -> str:
    """A withdrawal goes where its order went: the department's routing key for the street."""
    return dispatch_routing_key(notice.dept, notice.street)


class Dispatcher:
    def __init__(
        self,
        tree: RoutingTree,
        catalog: Catalog,
        policies: PolicyBook,
        calendar: WorkCalendar,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.tree = tree
        self.catalog = catalog
        self.policies = policies
        self.calendar = calendar
        self.clock = clock  # the dispatch time (and so the due times) of every plan; tests pass their own

    def plan_event(self, event: Envelope, max_rejections: int = 2) -> DispatchPlan | None:
        """The plan for an event router consumes, at `clock()`: a registered case, a
        dispatch by hand, or a re-dispatch after "not ours" or a failed verification.
        None for any other event."""
        now = self.clock()
        if isinstance(event, CaseRegistered):
            return self.plan(event.case_id, event.correlation_id, event.case, now)
        if isinstance(event, CaseRedispatch) and event.reason is RedispatchReason.manual:
            receivers = self.manual_receivers(
                event.case,
                now,
                event.departments,
                event.level or 3,
                event.by,
                event.note,
                hand_up=event.departments == [GRID_STATION],
            )
            return self.plan(
                event.case_id,
                event.correlation_id,
                event.case,
                now,
                round_no=event.round_no,
                manual=receivers,
                lead=event.lead,
                by=event.by,
                note=event.note,
            )
        if isinstance(event, CaseRedispatch):
            return self.plan(
                event.case_id,
                event.correlation_id,
                event.case,
                now,
                round_no=event.round_no,
                exclude=frozenset(event.exclude),
                only=frozenset(event.only),
                max_rejections=max_rejections,
            )
        return None

    def routing_input(self, case: CaseSummary, at: datetime, exclude: frozenset[str] = frozenset()) -> RoutingInput:
        category = self.catalog.get(case.category)
        return RoutingInput(
            category=case.category,
            category_kind=category.kind if category else "",
            grid=case.grid,
            severity=case.severity.value,
            attributes=case.attributes,
            at=at,
            exclude_depts=exclude,
        )

    def receivers(
        self,
        case: CaseSummary,
        now: datetime,
        exclude: frozenset[str] = frozenset(),
        only: frozenset[str] = frozenset(),
        max_rejections: int = 2,
    ) -> tuple[list[Receiver], bool]:
        """Who gets the case, and whether it is now disputed (争议件).

        `only` (a reopened case) keeps the departments that handled it before; `exclude`
        (departments that rejected it) are skipped, and after `max_rejections` of them,
        or when nobody else is left, the grid station gets it as disputed.
        """
        if len(case.grid) == 6 and not only:
            # placed in no street (location_resolution "district"): the district's triage places it
            return [
                Receiver(
                    dept=GRID_STATION,
                    sla_policy="default",
                    mode="management",
                    level=2,
                    route="district_triage",
                    reason="location in no mapped patch or street outline",
                )
            ], False
        if only:
            chosen = [r for r in self.tree.route(self.routing_input(case, now)) if r.dept in only]
            known = {r.dept for r in chosen}
            chosen += [
                Receiver(
                    dept=d,
                    sla_policy="default",
                    mode="service",
                    level=3,
                    route="reopened",
                    reason="verification failed: back to the department that resolved it",
                )
                for d in sorted(only - known)
            ]
            return chosen, False
        if len(exclude) >= max_rejections:
            return [self._disputed(exclude)], True
        chosen = self.tree.route(self.routing_input(case, now, exclude))
        if exclude and all(r.dept == GRID_STATION for r in chosen):
            return [self._disputed(exclude)], True
        return chosen, False

    @staticmethod
    def _disputed(exclude: frozenset[str]) -> Receiver:
        return Receiver(
            dept=GRID_STATION,
            sla_policy="default",
            mode="management",
            level=3,
            route="dispute",
            reason=f"争议件: rejected by {', '.join(sorted(exclude))}",
        )

    def manual_receivers(
        self,
        case: CaseSummary,
        now: datetime,
        departments: list[str],
        level: int,
        by: str,
        note: str,
        hand_up: bool = False,
    ) -> list[Receiver]:
        """A dispatch by hand: the commander chose the departments and the level; each
        department keeps the SLA policy and 721 mode the tree gives it for this case
        (the default policy when the tree would not have sent it there)."""
        suggested = {r.dept: r for r in self.tree.route(self.routing_input(case, now))}
        route = "hand_up" if hand_up else "manual"
        out = []
        for dept in departments:
            tree = suggested.get(dept)
            out.append(
                Receiver(
                    dept=dept,
                    sla_policy=tree.sla_policy if tree else "default",
                    mode=tree.mode if tree else "management",
                    level=level,
                    route=route,
                    reason=f"dispatched by hand by {by}: {note}",
                )
            )
        return out

    def plan(
        self,
        case_id: str,
        correlation_id: str,
        case: CaseSummary,
        now: datetime,
        round_no: int = 1,
        exclude: frozenset[str] = frozenset(),
        only: frozenset[str] = frozenset(),
        max_rejections: int = 2,
        manual: list[Receiver] | None = None,
        lead: str | None = None,
        by: str = "",
        note: str = "",
    ) -> DispatchPlan:
        if manual is not None:
            receivers, disputed = manual, False
        else:
            receivers, disputed = self.receivers(case, now, exclude, only, max_rejections)
        orders: list[tuple[str, DispatchOrder]] = []
        assignments: list[Assignment] = []
        for r in receivers:
            assignment = self._assignment(case_id, case, r, now, round_no)
            assignment.lead = manual is not None and r.dept == lead
            assignments.append(assignment)
            order = DispatchOrder(
                message_id=f"order:{assignment.order_id}",
                case_id=case_id,
                correlation_id=correlation_id,
                occurred_at=now,
                order_id=assignment.order_id,
                dept=r.dept,
                street=case.street,
                level=r.level,
                route=r.route,
                sla_policy=assignment.sla_policy,
                mode=assignment.mode,
                case=case,
                ack_due=assignment.ack_due,
                handle_due=assignment.handle_due,
                reply_to=f"{EX_REPLIES} / {reply_routing_key(r.dept)}",
                lead=assignment.lead,
                note=note,
            )
            orders.append((dispatch_routing_key(r.dept, case.street), order))
        dispatched = CaseDispatched(
            message_id=f"dispatched:{case_id}:{round_no}",
            case_id=case_id,
            correlation_id=correlation_id,
            occurred_at=now,
            case=case,
            assignments=assignments,
            round_no=round_no,
            disputed=disputed,
            by=by,
            note=note,
        )
        unroutable = None
        if all(r.dept == GRID_STATION for r in receivers) and not disputed and manual is None:
            unroutable = CaseUnroutable(
                message_id=f"unroutable:{case_id}:{round_no}",
                case_id=case_id,
                correlation_id=correlation_id,
                occurred_at=now,
                case=case,
                reason="; ".join(r.reason for r in receivers),
            )
        return DispatchPlan(orders, dispatched, unroutable)

    def _assignment(self, case_id: str, case: CaseSummary, r: Receiver, now: datetime, round_no: int) -> Assignment:
        policy = self.policies.for_case(case.category, case.filing_condition, case.severity.value, r.sla_policy)
        return Assignment(
            dept=r.dept,
            street=case.street,
            level=r.level,
            route=r.route,
            sla_policy=r.sla_policy,
            mode=Mode721(r.mode),
            order_id=f"{case_id}/{round_no}/{r.dept}",
            dispatched_at=now,
            reason=r.reason,
            ack_due=self.calendar.due(now, policy.ack_limit),
            handle_due=self.calendar.due(now, policy.handle_limit),
        )
