"""Which deliveries one event makes: notify.yaml's subscriptions applied to the event and
its case, each delivery rendered (subject, text, SMS parameters) by the templates.

One delivery per (event, recipient, channel): two subscriptions naming the same person
on the same channel give one message. The delivery id is a hash of the event's message
id, the recipient and the channel, so a repeated event plans the very same deliveries
(which the sender then drops as already done).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.notifier.addresses import AddressBook, commander_id
from services.notifier.channels.base import ChannelName
from services.notifier.deliveries import Delivery, delivery_id
from services.notifier.render import Renderer, context_from_event
from services.notifier.subscriptions import URGENT_EVENTS, Facts, NotifyFile, Target, matches
from shared.catalog import Catalog
from shared.grid import GridRegistry, UnknownGrid
from shared.models import Case, CaseDispatched, CaseEscalated, CaseUpdated, DeadlineEvent, DispatchWithdrawn, Envelope

#: notification_failed has no template of its own in render.py's set: these texts say it.
_FAILED_SUBJECT = "【通知失败】{case_id} {channel} → {recipient}"
_FAILED_TEXT = (
    "案件 {case_id} 的通知未能送达：{recipient}（{channel}），已尝试 {attempts} 次。\n"
    "原因：{reason}\n请核对联系方式或渠道配置，必要时电话通知。"
)


@dataclass
class CaseFacts:
    """The case the event concerns, as far as known (events carry a summary, updates do not)."""

    case: Case | None = None
    duplicate_reporters: dict[str, str] = field(default_factory=dict)  # reporter id → duplicate case id


class Planner:
    def __init__(
        self,
        notify: NotifyFile,
        addresses: AddressBook,
        renderer: Renderer,
        grid: GridRegistry | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.notify = notify
        self.addresses = addresses
        self.renderer = renderer
        self.grid = grid
        self.catalog = catalog

    # ------------------------------------------------------------------ context

    def context(self, event: Envelope, facts: CaseFacts, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """`payload`: the event dumped as JSON, when the caller has it already."""
        ctx = context_from_event(event.model_dump(mode="json") if payload is None else payload)
        case = facts.case
        if case is not None:
            for key, value in (
                ("category", case.category),
                ("severity", case.severity.value),
                ("grid", case.grid),
                ("street", case.street),
                ("address", case.location.address),
                ("description", case.description),
            ):
                ctx.setdefault(key, value)
            if not ctx.get("handle_due") and not isinstance(event, DispatchWithdrawn):  # not the new round's
                active = [a for a in case.assignments if a.active]
                if active:
                    ctx.setdefault("ack_due", active[0].ack_due.isoformat() if active[0].ack_due else None)
                    ctx.setdefault("handle_due", active[0].handle_due.isoformat() if active[0].handle_due else None)
        if isinstance(event, DeadlineEvent):
            # the event's `deadline` is the kind; the templates want the time there
            ctx["deadline_kind"] = event.deadline.value
            ctx["deadline"] = event.due_at.isoformat()
        if self.catalog is not None and ctx.get("category"):
            cat = self.catalog.get(str(ctx["category"]))
            if cat is not None:
                ctx["category_name"] = cat.name
        if self.grid is not None:
            cell = self.grid.cell(str(ctx.get("grid") or ""))
            if cell is not None:
                ctx.update(
                    street=cell.street,
                    street_name=cell.street_name,
                    community_name=cell.community_name,
                    patch_name=cell.name,
                )
            elif ctx.get("street"):
                ctx.setdefault("street_name", self.grid.name_of(str(ctx["street"])))
        if ctx.get("dept"):
            dept = self.addresses.departments.get(str(ctx["dept"]))
            if dept is not None:
                ctx["dept_name"] = dept.name
        return ctx

    # ------------------------------------------------------------------ facts

    @staticmethod
    def _assignments(event: Envelope, case: Case | None) -> list[tuple[str, str, int]]:
        """(dept, street, level) the event concerns."""
        if isinstance(event, (DeadlineEvent, DispatchWithdrawn)):
            return [(event.dept, event.street, event.level)]
        if isinstance(event, CaseEscalated):
            street = case.street if case else ""
            return [(event.dept, street, event.to_level)]
        assignments = getattr(event, "assignments", None)
        if assignments is None and case is not None:
            assignments = case.assignments
        out = [(a.dept, a.street, a.level) for a in (assignments or []) if a.active]
        if isinstance(event, CaseUpdated) and event.dept:
            out = [x for x in out if x[0] == event.dept] or [(event.dept, case.street if case else "", 3)]
        return sorted(set(out))

    def facts(self, event: Envelope, case: Case | None, ctx: dict[str, Any]) -> Facts:
        name = getattr(event, "event", "")
        level = None
        if isinstance(event, (DeadlineEvent, DispatchWithdrawn)):
            level = event.level
        elif isinstance(event, CaseEscalated):
            level = event.to_level
        elif isinstance(event, CaseDispatched):
            # the highest level now holding the case: a hand-up, a take-over or district
            # triage puts it at level 2 (the district's commanders), a normal dispatch at 3–5
            levels = [a.level for a in event.assignments if a.active]
            level = min(levels) if levels else None
        return Facts(
            event=name,
            depts=tuple(d for d, _, _ in self._assignments(event, case)),
            severity=str(ctx.get("severity") or "") or None,
            deadline=event.deadline.value if isinstance(event, DeadlineEvent) else None,
            level=level,
            to_status=event.to_status.value if isinstance(event, CaseUpdated) else None,
            reporter_role=case.reporter_role.value if case is not None else None,
        )

    # ------------------------------------------------------------------ recipients

    def recipients(
        self, target: Target, event: Envelope, facts: Facts, cf: CaseFacts, grid_cell: str | None
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(recipient id, the department it is about, extra payload) for one target."""
        case = cf.case
        assigned = self._assignments(event, case)
        if target.dept:
            street = assigned[0][1] if assigned else (case.street if case else "")
            if not street and grid_cell:
                street = grid_cell[:9]
            assigned = [(target.dept, street, 3)]
        if target.to == "liaison":
            return [(f"liaison:{d}:{s[:9]}", d, {}) for d, s, _ in assigned if s]
        if target.to == "department":
            return [(f"dept:{d}", d, {}) for d, _, _ in assigned]
        if target.to == "operations_centre":
            return [("ops", assigned[0][0] if assigned else None, {})]
        if target.to == "commanders":
            level = facts.level if target.level == "event" else target.level
            if not isinstance(level, int) or not grid_cell or self.grid is None:
                return []
            try:
                people = self.grid.commanders(grid_cell, level)
            except (UnknownGrid, ValueError):
                return []
            dept = assigned[0][0] if assigned else None
            return [(commander_id(level, p), dept, {}) for p in people]
        if target.to == "reporter" and case is not None:
            out: list[tuple[str, str | None, dict[str, Any]]] = [
                (
                    f"reporter:{case.reporter_id}",
                    None,
                    {"reporter_id": case.reporter_id, "reporter_case_id": case.case_id},
                )
            ]
            if target.include_duplicates:
                for reporter, dup_case in sorted(cf.duplicate_reporters.items()):
                    if reporter != case.reporter_id:
                        out.append(
                            (f"reporter:{reporter}", None, {"reporter_id": reporter, "reporter_case_id": dup_case})
                        )
            return out
        return []

    # ------------------------------------------------------------------ plan

    def plan(self, event: Envelope, cf: CaseFacts | None = None) -> list[Delivery]:
        cf = cf or CaseFacts()
        name = getattr(event, "event", "")
        payload = event.model_dump(mode="json")
        ctx = self.context(event, cf, payload)
        facts = self.facts(event, cf.case, ctx)
        grid_cell = str(ctx.get("grid") or "") or None
        urgent = name in URGENT_EVENTS or facts.severity == "urgent"
        seen: set[tuple[str, ChannelName]] = set()
        out: list[Delivery] = []
        for sub in self.notify.subscriptions:
            if sub.event != name:
                continue
            for target in sub.notify:
                for recipient, dept, extra in self.recipients(target, event, facts, cf, grid_cell):
                    if not matches(sub.when, facts, dept):
                        continue
                    channel = target.channels[0]
                    if (recipient, channel) in seen:
                        continue
                    seen.add((recipient, channel))
                    out.append(
                        self.delivery(
                            event, recipient, channel, list(target.channels[1:]), ctx, {**payload, **extra}, urgent
                        )
                    )
        return out

    def delivery(
        self,
        event: Envelope,
        recipient: str,
        channel: ChannelName,
        fallbacks: list[ChannelName],
        ctx: dict[str, Any],
        payload: dict[str, Any],
        urgent: bool,
    ) -> Delivery:
        name = getattr(event, "event", "")
        subject, text, sms_template, sms_params = self.render(name, channel, recipient, ctx)
        return Delivery(
            delivery_id=delivery_id(event.message_id, recipient, channel),
            event=name,
            case_id=event.case_id,
            correlation_id=event.correlation_id,
            recipient=recipient,
            channel=channel,
            subject=subject,
            text=text,
            payload=payload,
            fallbacks=fallbacks,
            urgent=urgent,
            sms_template=sms_template,
            sms_params=sms_params,
            event_message_id=event.message_id,
            context={k: v for k, v in ctx.items() if isinstance(v, (str, int, float, bool)) or v is None},
        )

    def render(
        self, name: str, channel: ChannelName, recipient: str, ctx: dict[str, Any]
    ) -> tuple[str, str, str | None, dict[str, str]]:
        ctx = {**ctx, "recipient_name": self.addresses.name_of(recipient)}
        try:
            subject, text = self.renderer.render(name, channel, ctx)
        except LookupError:
            if name != "notification_failed":
                raise
            # no built-in template for it; `notification_failed.<channel>.j2` in the override
            # directory (CONFIG_DIR/notify_templates) replaces this text
            values = {k: ctx.get(k, "") for k in ("case_id", "channel", "recipient", "attempts", "reason")}
            subject, text = _FAILED_SUBJECT.format(**values), _FAILED_TEXT.format(**values)
        sms_template = self.notify.sms_templates.get(name) if channel is ChannelName.sms else None
        sms_params = self.renderer.sms_params(ctx) if channel is ChannelName.sms else {}
        return subject, text, sms_template, sms_params
