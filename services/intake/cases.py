"""Intake's domain: registering reports as cases and applying lifecycle changes.

Plain code over a `CaseStore`, a category catalog and a grid registry, so it can be
tested without a broker; the nameko service only wires entrypoints to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from services.intake.duplicates import DuplicatePolicy, geo_keys, near_args, nearest, original_among
from services.intake.store import CaseStore, VersionConflict
from services.intake.validation import FieldError, InvalidInput
from shared.catalog import Catalog
from shared.grid import GridError, GridRegistry, Placement
from shared.indicators import counter_field, period_of
from shared.lifecycle import Action, next_status
from shared.models import (
    Assignment,
    Case,
    CaseDispatched,
    CaseEscalated,
    CaseRegistered,
    CaseStatus,
    CaseUnroutable,
    CaseUpdated,
    DispatchWithdrawn,
    Envelope,
    Mode721,
    Report,
    Resolution,
    TimelineEntry,
    summary_of,
    utcnow,
)

APPLIED_MESSAGES_KEPT = 200  # ids of applied events remembered per case (idempotency)


@dataclass(frozen=True)
class Registered:
    case_id: str
    created: bool
    status: CaseStatus = CaseStatus.registered
    street: str = ""
    events: list[Envelope] = field(default_factory=list)  # to publish when `created`
    duplicate_of: str | None = None


class Registrar:
    def __init__(
        self,
        store: CaseStore,
        catalog: Catalog,
        grid: GridRegistry,
        tz: str,
        duplicates: DuplicatePolicy | None = None,
        onsite_sample_rate: float = 1.0,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.grid = grid
        self.tz = ZoneInfo(tz)
        self.duplicates = duplicates or DuplicatePolicy()
        self.onsite_sample_rate = onsite_sample_rate

    def register(self, report: Report, now: datetime | None = None, idempotency_key: str | None = None) -> Registered:
        """Register a report as a case. The same idempotency key (the `Idempotency-Key`
        header, else the report id) always gives the same case; a report repeating an
        open case nearby becomes its duplicate and is not dispatched again."""
        key = idempotency_key or report.report_id
        now = now or utcnow()
        category = self.catalog.get(report.category)
        try:
            if category is None:
                raise InvalidInput([FieldError("category", f"unknown category code {report.category!r}")])
            place = self._place(report)
        except InvalidInput:
            # a known report is answered with its case, whatever changed in the catalog or the grid since
            existing = self.store.existing_case_for(key)
            if existing:
                return Registered(existing, False)
            raise
        # one round trip: is the report known; if not, its case number and the open cases
        # near it (a problem solved on the spot repeats nothing, so it needs no search)
        sets = [] if report.handled_on_site else geo_keys(self.duplicates, report.category, now)
        near = near_args(self.duplicates, report.category, report.location.lat, report.location.lon)
        existing, case_id, found = self.store.reserve(key, now.astimezone(self.tz), sets, near)
        if existing is not None:
            return Registered(existing, False)
        assert case_id is not None
        original = (
            None
            if report.handled_on_site
            else original_among(self.store.r, self.duplicates, report.category, nearest(sets, found), now)
        )
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
            location=report.location.model_copy(update={"grid": place.code}),
            grid=place.code,
            street=place.street,
            location_resolution=place.resolution,
            attributes=report.attributes,
            media_urls=report.media_urls,
            reporter_id=report.reporter.id,
            reporter_role=report.reporter.role,
            observed_at=report.observed_at,
            registered_at=now,
            updated_at=now,
            timeline=[
                TimelineEntry(
                    at=now,
                    actor=f"reporter:{report.reporter.id}",
                    action="report",
                    from_status=None,
                    to_status=CaseStatus.reported,
                    note=report.description,
                    evidence_urls=report.media_urls,
                ),
                TimelineEntry(
                    at=now,
                    actor="intake",
                    action=Action.register.value,
                    from_status=CaseStatus.reported,
                    to_status=CaseStatus.registered,
                    note=f"{category.name} @ {_where(place)}",
                ),
            ],
        )
        case.source = report.source
        if report.handled_on_site is not None:
            event: Envelope = resolve_on_site(case, report, now)
        elif original is None:
            # one id per case: the reconciler publishes the same event again (services/intake/reconcile.py)
            event = CaseRegistered(
                message_id=f"registered:{case_id}",
                case_id=case_id,
                correlation_id=case.correlation_id,
                case=summary_of(case),
            )
        else:
            case.duplicate_of = original
            case.status = next_status(case.status, Action.mark_duplicate)
            case.timeline.append(
                TimelineEntry(
                    at=now,
                    actor="intake",
                    action=Action.mark_duplicate.value,
                    from_status=CaseStatus.registered,
                    to_status=case.status,
                    note=f"repeats open case {original} nearby",
                )
            )
            event = CaseUpdated(
                case_id=case_id,
                correlation_id=case.correlation_id,
                from_status=CaseStatus.registered,
                to_status=case.status,
                action=Action.mark_duplicate.value,
                actor="intake",
                note=f"duplicate of {original}",
            )
        # a street's `registered` count (sla counts a case handled on site itself, and a
        # duplicate is not a new case)
        counted = (
            (period_of(now, self.tz), counter_field("street", case.street, "registered"))
            if isinstance(event, CaseRegistered)
            else None
        )
        result = self.store.register(
            key, case, event, index_location=original is None and report.handled_on_site is None, counted=counted
        )
        if not result.created:  # another request with the same key won the race
            return Registered(result.case_id, False)
        # the case's record waits in the outbox: its next version's replaces it (CaseStore.register)
        events: list[Envelope] = [event]
        if original is not None:
            events += self._link(original, case_id)
        if report.handled_on_site is not None and not drawn_for_verification(case_id, self.onsite_sample_rate):
            events += self._close_undrawn(case_id)
        return Registered(case_id, True, case.status, place.street, events, original)

    def _place(self, report: Report) -> Placement:
        try:
            return self.grid.place(report.location.lat, report.location.lon, report.location.grid)
        except GridError as exc:
            field = (
                "location.grid"
                if report.location.grid and self.grid.in_district(report.location.lat, report.location.lon)
                else "location"
            )
            raise InvalidInput([FieldError(field, str(exc))]) from None

    def _close_undrawn(self, case_id: str) -> list[Envelope]:
        """Not drawn for the grid's verification: closed as verified by sampling."""
        rate = self.onsite_sample_rate

        def mutate(case: Case) -> Change:
            # published right behind resolve_on_site: sla may see this one first, so it carries the summary
            return Change(
                Action.verify_pass,
                "intake:sampling",
                f"handled on site; not drawn for verification (sampling rate {rate:.0%})",
                with_summary=True,
                mode=case.resolution.mode if case.resolution else None,
            )

        _, events, _ = transition(self.store, case_id, f"sample:{case_id}", mutate)
        return events

    def _link(self, original: str, duplicate: str) -> list[Envelope]:
        """Record the duplicate on its original (the reporter then follows the original)."""

        def mutate(case: Case) -> Change:
            case.duplicates.append(duplicate)
            return Change(None, "intake", f"repeated by {duplicate}")

        _, events, _ = transition(self.store, original, f"dup:{duplicate}", mutate)
        return events


def _where(place: Placement) -> str:
    if place.cell is not None:
        c = place.cell
        return f"{c.street_name}/{c.community_name}/{c.name}"
    if place.resolution == "street":
        return f"{place.name} (in no mapped patch: placed in the street)"
    return f"{place.name} (in no mapped street: district triage)"


def drawn_for_verification(case_id: str, rate: float) -> bool:
    """Whether a handled-on-site case is drawn for the grid's verification: a fixed draw
    from the case id (the same on every replica and every retry), true for `rate` of cases."""
    draw = int.from_bytes(hashlib.blake2b(case_id.encode(), digest_size=8).digest(), "big") / 2**64
    return draw < rate


def resolve_on_site(case: Case, report: Report, now: datetime) -> CaseUpdated:
    """就地处置: the reporter solved it when reporting. Registered and resolved at once
    through the state machine, never dispatched; the event carries the case's summary
    because no consumer has seen the case before."""
    onsite = report.handled_on_site
    assert onsite is not None
    actor = f"reporter:{report.reporter.id}"
    case.handled_on_site = onsite
    case.status = next_status(CaseStatus.registered, Action.resolve_on_site)
    case.resolution = Resolution(
        mode=onsite.mode, result=onsite.note, evidence_urls=onsite.evidence_urls, by=actor, at=now
    )
    case.timeline.append(
        TimelineEntry(
            at=now,
            actor=actor,
            action=Action.resolve_on_site.value,
            from_status=CaseStatus.registered,
            to_status=case.status,
            note=onsite.note,
            evidence_urls=onsite.evidence_urls,
        )
    )
    return CaseUpdated(
        case_id=case.case_id,
        correlation_id=case.correlation_id,
        from_status=CaseStatus.registered,
        to_status=case.status,
        action=Action.resolve_on_site.value,
        actor=actor,
        mode=onsite.mode,
        note=onsite.note,
        case=summary_of(case),
    )


# ---------------------------------------------------------------------- transitions


@dataclass
class Change:
    """What a mutation did to a case: the state machine action (None: the status stays,
    e.g. one of two jointly dispatched departments acknowledged), who, why, and what
    else to emit. A `case_updated` event is emitted when there is an action or `announce`,
    unless `told`: the event being applied already tells every consumer of the change."""

    action: Action | None
    actor: str
    note: str = ""
    events: list[Envelope] = field(default_factory=list)
    announce: bool = False
    reply_action: str = ""
    dept: str | None = None
    order_id: str | None = None
    mode: Mode721 | None = None
    evidence_urls: list[str] = field(default_factory=list)
    with_summary: bool = False  # the event carries the case's summary (consumers may not know the case yet)
    rating: str | None = None  # an evaluation's rating
    told: bool = False


Mutation = Callable[[Case], Change]


def transition(
    store: CaseStore, case_id: str, message_id: str, mutate: Mutation, retries: int = 8
) -> tuple[Case, list[Envelope], bool]:
    """Apply one change to a case with optimistic concurrency; idempotent by message id.

    `mutate` edits a fresh copy of the case and says what it did; the state machine
    decides the new status (an illegal action raises IllegalTransition and nothing is
    stored). Returns (case, events to publish, applied: False when already applied).
    """
    for _ in range(retries):
        case = store.get(case_id)
        if message_id in case.applied_messages:
            return case, [], False
        expected = case.version
        from_status = case.status
        change = mutate(case)
        if change.action is not None:
            case.status = next_status(case.status, change.action)
        now = utcnow()
        case.updated_at = now
        action_name = change.action.value if change.action else (change.reply_action or "note")
        case.timeline.append(
            TimelineEntry(
                at=now,
                actor=change.actor,
                action=action_name,
                from_status=from_status,
                to_status=case.status,
                note=change.note,
                evidence_urls=change.evidence_urls,
                message_id=message_id,
            )
        )
        case.applied_messages = (case.applied_messages + [message_id])[-APPLIED_MESSAGES_KEPT:]
        events = list(change.events)
        if (change.action is not None or change.announce) and not change.told:
            events.append(
                CaseUpdated(
                    case_id=case.case_id,
                    correlation_id=case.correlation_id,
                    from_status=from_status,
                    to_status=case.status,
                    action=change.reply_action or action_name,
                    actor=change.actor,
                    dept=change.dept,
                    order_id=change.order_id,
                    note=change.note,
                    mode=change.mode,
                    case=summary_of(case) if change.with_summary else None,
                    rating=change.rating,
                )
            )
        try:
            return store.save(case, expected, events), events, True
        except VersionConflict:
            continue
    raise VersionConflict(case_id)


def withdrawals(case: Case, closed: list[Assignment], round_no: int, by: str, note: str) -> list[DispatchWithdrawn]:
    """The relieved departments' notices, one per closed order (ids derived from the
    order: an order is withdrawn once, whatever repeats)."""
    summary = summary_of(case)
    return [
        DispatchWithdrawn(
            message_id=f"withdrawn:{a.order_id}",
            case_id=case.case_id,
            correlation_id=case.correlation_id,
            order_id=a.order_id,
            dept=a.dept,
            street=a.street or case.street,
            level=a.level,
            round_no=round_no,
            by=by,
            note=note,
            case=summary,
        )
        for a in closed
    ]


def _round_of(order_id: str) -> int:
    return int(order_id.rsplit("/", 2)[1]) if order_id.count("/") >= 2 else 1


def _apply_dispatched(event: CaseDispatched) -> Mutation:
    def mutate(case: Case) -> Change:
        latest = max((_round_of(a.order_id) for a in case.assignments), default=0)
        if event.round_no < latest:
            # rounds can cross (a re-route after "not ours" and a dispatch by hand): the later one stands
            stale = [a.model_copy(update={"active": False}) for a in event.assignments]
            case.assignments.extend(stale)
            # its orders are already on the departments' queues: withdraw them
            notices = withdrawals(case, stale, latest, "router", f"round {event.round_no} superseded by round {latest}")
            return Change(
                None,
                "router",
                f"round {event.round_no} superseded by round {latest}: not applied",
                events=list(notices),
            )
        for a in case.assignments:
            a.active = False
        case.assignments.extend(event.assignments)
        case.disputed = case.disputed or event.disputed
        case.last_round = max(case.last_round, event.round_no)
        depts = ", ".join(f"{a.dept}@L{a.level} via {a.route} ({a.reason})" for a in event.assignments)
        if event.by:
            return Change(Action.reassign, event.by, f"round {event.round_no}: dispatched by hand to {depts}")
        if case.status in (CaseStatus.registered, CaseStatus.rejected, CaseStatus.reopened):
            action = Action.dispatch
        else:
            action = Action.escalate
        prefix = "争议件 " if event.disputed else ""
        # No case_updated for the router's dispatch: `case_dispatched` itself says it to
        # everyone who needs it (sla arms the clocks from it, the notifier tells the
        # departments, the bridge forwards it, the archive and the audit stream have it and
        # the case's record), and the case_updated after it was a round of broker and
        # handler work that nobody acted on: sla found nothing to change (the status is
        # `dispatched` from either), the notifier has no subscription for it (case_updated
        # is told for resolved, closed and reopened only). A dispatch by hand keeps its
        # case_updated above: from `suspended` it resumes sla's clocks.
        return Change(action, "router", f"{prefix}round {event.round_no}: dispatched to {depts}", told=True)

    return mutate


def apply_event(store: CaseStore, event: Envelope) -> tuple[Case, list[Envelope], bool]:
    """Apply an event from router or sla (intake is the only writer of case state)."""
    if isinstance(event, CaseDispatched):
        mutate = _apply_dispatched(event)
    elif isinstance(event, CaseUnroutable):

        def mutate(case: Case) -> Change:
            return Change(None, "router", f"no rule matched, sent to the grid station for triage: {event.reason}")
    elif isinstance(event, CaseEscalated):

        def mutate(case: Case) -> Change:
            # the order stays the department's; it is now supervised one level up, with a fresh limit
            for a in case.assignments:
                if a.active and a.order_id == event.order_id:
                    a.level = event.to_level
                    if event.new_due is not None:
                        a.handle_due = event.new_due
            who = ", ".join(c.name for c in event.commanders) or "—"
            due = f"; due {event.new_due.isoformat()}" if event.new_due else ""
            return Change(
                None,
                "sla",
                f"escalated L{event.from_level} → L{event.to_level} (step {event.step}): "
                f"{event.reason}; 督办: {who}{due}",
            )
    else:
        raise TypeError(f"intake does not apply {type(event).__name__}")
    return transition(store, event.case_id, event.message_id, mutate)
