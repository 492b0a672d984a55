"""Intake's domain: registering reports as cases and applying lifecycle changes.

Plain code over a `CaseStore`, a category catalog and a grid registry, so it can be
tested without a broker; the nameko service only wires entrypoints to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from services.intake.store import CaseStore, VersionConflict
from services.intake.validation import FieldError, InvalidInput
from shared.catalog import Catalog
from shared.grid import GridError, GridRegistry
from shared.lifecycle import Action, next_status
from shared.models import (
    Case,
    CaseDispatched,
    CaseEscalated,
    CaseRegistered,
    CaseStatus,
    CaseUnroutable,
    CaseUpdated,
    Envelope,
    Report,
    TimelineEntry,
    summary_of,
    utcnow,
)

APPLIED_MESSAGES_KEPT = 200  # ids of applied events remembered per case (idempotency)


@dataclass(frozen=True)
class Registered:
    case_id: str
    created: bool
    event: CaseRegistered | None  # the event to publish when `created`


class Registrar:
    def __init__(self, store: CaseStore, catalog: Catalog, grid: GridRegistry, tz: str) -> None:
        self.store = store
        self.catalog = catalog
        self.grid = grid
        self.tz = ZoneInfo(tz)

    def register(self, report: Report, now: datetime | None = None) -> Registered:
        existing = self.store.existing_case_for(report.report_id)
        if existing:
            return Registered(existing, False, None)
        category = self.catalog.get(report.category)
        if category is None:
            raise InvalidInput([FieldError("category", f"unknown category code {report.category!r}")])
        try:
            cell = self.grid.resolve(report.location.lat, report.location.lon, report.location.grid)
        except GridError as exc:
            raise InvalidInput([FieldError("location", str(exc))]) from None
        now = now or utcnow()
        case_id = self.store.next_case_id(now.astimezone(self.tz))
        case = Case(
            case_id=case_id,
            report_id=report.report_id,
            correlation_id=report.report_id,
            status=CaseStatus.registered,
            version=1,
            category=report.category,
            severity=report.severity,
            filing_condition=report.filing_condition,
            description=report.description,
            location=report.location.model_copy(update={"grid": cell.code}),
            grid=cell.code,
            street=cell.street,
            attributes=report.attributes,
            media_urls=report.media_urls,
            reporter_id=report.reporter.id,
            reporter_role=report.reporter.role,
            observed_at=report.observed_at,
            registered_at=now,
            updated_at=now,
            timeline=[
                TimelineEntry(at=now, actor=f"reporter:{report.reporter.id}", action="report",
                              from_status=None, to_status=CaseStatus.reported,
                              note=report.description, evidence_urls=report.media_urls),
                TimelineEntry(at=now, actor="intake", action=Action.register.value,
                              from_status=CaseStatus.reported, to_status=CaseStatus.registered,
                              note=f"{category.name} @ {cell.street_name}/{cell.community_name}/{cell.name}"),
            ],
        )
        event = CaseRegistered(case_id=case_id, correlation_id=case.correlation_id, case=summary_of(case))
        result = self.store.register(report.report_id, case, event)
        if not result.created:  # another request with the same report id won the race
            return Registered(result.case_id, False, None)
        return Registered(case_id, True, event)


# ---------------------------------------------------------------------- transitions

Mutation = Callable[[Case], tuple[Action | None, str, str, list[Envelope]]]


def transition(store: CaseStore, case_id: str, message_id: str, mutate: Mutation,
               retries: int = 5) -> tuple[Case, list[Envelope]]:
    """Apply one change to a case with optimistic concurrency; idempotent by message id.

    `mutate` edits the case in place and returns (action, actor, note, extra events).
    The state machine decides the new status; a `case_updated` event is added for it.
    """
    for _ in range(retries):
        case = store.get(case_id)
        if message_id in case.applied_messages:
            return case, []
        expected = case.version
        action, actor, note, events = mutate(case)
        from_status = case.status
        if action is not None:
            case.status = next_status(case.status, action)
        now = utcnow()
        case.updated_at = now
        case.timeline.append(TimelineEntry(at=now, actor=actor, action=action.value if action else "note",
                                           from_status=from_status, to_status=case.status, note=note,
                                           message_id=message_id))
        case.applied_messages = (case.applied_messages + [message_id])[-APPLIED_MESSAGES_KEPT:]
        if action is not None:
            events = events + [CaseUpdated(case_id=case.case_id, correlation_id=case.correlation_id,
                                           from_status=from_status, to_status=case.status,
                                           actor=actor, note=note)]
        try:
            return store.save(case, expected, events), events
        except VersionConflict:
            continue
    raise VersionConflict(case_id)


def apply_event(store: CaseStore, event: Envelope) -> tuple[Case, list[Envelope]]:
    """Apply an event from router or sla (intake is the only writer of case state)."""
    if isinstance(event, CaseDispatched):
        def mutate(case: Case) -> tuple[Action | None, str, str, list[Envelope]]:
            for a in case.assignments:
                a.active = False
            case.assignments.extend(event.assignments)
            depts = ", ".join(f"{a.dept}@L{a.level} ({a.route})" for a in event.assignments)
            action = Action.dispatch if case.status in (CaseStatus.registered, CaseStatus.rejected,
                                                        CaseStatus.reopened) else Action.escalate
            return action, "router", f"dispatched to {depts}", []
    elif isinstance(event, CaseUnroutable):
        def mutate(case: Case) -> tuple[Action | None, str, str, list[Envelope]]:
            return None, "router", f"no rule matched, sent to the grid station for triage: {event.reason}", []
    elif isinstance(event, CaseEscalated):
        def mutate(case: Case) -> tuple[Action | None, str, str, list[Envelope]]:
            return None, "sla", f"escalated L{event.from_level} → L{event.to_level}: {event.reason}", []
    else:
        raise TypeError(f"intake does not apply {type(event).__name__}")
    return transition(store, event.case_id, event.message_id, mutate)
