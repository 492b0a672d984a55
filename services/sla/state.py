"""sla's domain: every running clock of a case, and what happens to it.

Pure code over a `CaseClocks` document (no Redis, no nameko, no wall clock: every
method takes `now`), so the rules can be tested with a controllable clock. The Redis
side (services/sla/store.py) loads a document, calls the `Engine`, and commits the
document together with the `Effects` (timers to arm and cancel, events to publish,
ledger entries, indicator counts) in one transaction.

Clocks, one per (order, kind):

- `acknowledge` (签收) and `handle` start when an order is dispatched;
- `escalation`: after a breach, the handling limit of the commander one grid level up
  (patch 5 → community 4 → street 3 → district 2 → city 1), from the policy's ladder
  (`Policy.step_limit`). Its breach escalates again; after level 1 the city limit is
  re-armed `Policy.repeat` times, then escalation stops (`escalation_exhausted`).

Rules (issue 5): `acknowledged` stops the acknowledge clock; `suspended` pauses every
running clock (the amount used so far is kept, counted on the clock's own calendar by
`WorkCalendar.elapsed`) and resuming re-arms each with its remainder; a re-dispatch
(reopened, re-routed) stops the old orders' clocks and starts new ones;
`resolved`/`closed`/`cancelled`/`duplicate` stop all. Escalation of an order stops when
it reaches the policy's `escalate_until` (acknowledged or resolved).

Each clock has at most one timer pending, its next firing: the warning point (the
policy's `warn_fraction` of the limit) and then the deadline. A timer is named
`<case_id>|<clock_id>|<w|b>|<token>`; every change to a clock bumps its token, so a timer
that was already claimed when the clock stopped is recognised as stale and dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from shared.indicators import period_of
from shared.lifecycle import CLOCK_STOPPED_STATES
from shared.models import (
    CaseDispatched,
    CaseEscalated,
    CaseStatus,
    CaseUpdated,
    DeadlineBreached,
    DeadlineKind,
    DeadlineWarning,
    Envelope,
    EscalationCommander,
)
from shared.policies import Policy, PolicyBook
from shared.worktime import Limit, WorkCalendar

ACK, HANDLE, ESCALATION = "acknowledge", "handle", "escalation"
LETTER = {ACK: "a", HANDLE: "h", ESCALATION: "e"}
WARN, BREACH = "w", "b"
RUNNING, PAUSED, STOPPED, BREACHED = "running", "paused", "stopped", "breached"
SEEN_KEPT = 100
LOG_KEPT = 200

CommandersOf = Callable[[str, int], list[EscalationCommander]]
LiaisonOf = Callable[[str, str], tuple[str, str]]


def ts_of(instant: datetime) -> float:
    return instant.timestamp()


def dt_of(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def ms(ts: float) -> float:
    """Instants a clock keeps are whole milliseconds (the compact document stores them so)."""
    return round(ts, 3)


def seen_id(message_id: str) -> str:
    """What a case keeps of an applied message id: 8 bytes of its BLAKE2b digest, as hex."""
    return hashlib.blake2b(message_id.encode(), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- document


@dataclass
class Clock:
    id: str
    order_id: str
    kind: str  # acknowledge | handle | escalation
    level: int  # grid level whose limit this is
    limit: str  # the whole limit of this clock (Limit text)
    wf: float  # warning fraction
    start: float | None  # unix time the current running stretch began (None: not running)
    used: float = 0.0  # amount of `limit` used before `start` (suspensions)
    state: str = RUNNING
    warned: bool = False
    token: int = 1
    step: int = 0  # escalation step (0: the department's own clock)
    due: float | None = None  # current deadline (running clocks)
    warn_at: float | None = None
    ended: float | None = None  # when it stopped or breached
    reason: str = ""
    lid: str = ""  # ledger id of its breach

    @property
    def letter(self) -> str:
        return LETTER[self.kind]


@dataclass
class Order:
    order_id: str
    dept: str
    street: str
    level: int
    policy: str
    round: int
    dispatched: float
    active: bool = True
    acked: float | None = None
    resolved: float | None = None
    mode: str | None = None
    esc_level: int | None = None  # current escalation level (None: not escalated)
    esc_step: int = 0
    esc_repeats: int = 0
    esc_done: str = ""  # why escalation ended ("" while it may go on)
    late: bool = False  # its handle clock breached (not resolved on time)


LATE_FIRING_S = 60.0  # a breach firing later than this after its due time says so in the escalation


@dataclass
class CaseClocks:
    case_id: str
    corr: str
    cat: str
    sev: str
    cond: str | None
    grid: str
    street: str
    status: str = CaseStatus.dispatched.value
    orders: dict[str, Order] = field(default_factory=dict)
    clocks: dict[str, Clock] = field(default_factory=dict)
    log: list[list[Any]] = field(default_factory=list)  # [ts, what, details] (history, not needed to fire)
    seen: list[str] = field(default_factory=list)  # `seen_id`s of applied messages (not needed to fire)
    depts: list[str] = field(default_factory=list)
    rev: int = 0  # commits of this document (its archive records are ordered by it)

    # -- (de)serialisation: compact JSON, kept in Redis as the source of the timers

    def to_dict(self) -> dict[str, Any]:
        """Compact: fields at their default, keys repeated in values and ids derivable
        from the case id are left out (a million timers live in these documents)."""
        d = {k: v for k, v in vars(self).items() if k not in ("orders", "clocks")}
        orders = {}
        for oid, o in self.orders.items():
            v = _compact(vars(o))
            del v["order_id"]
            if v.get("street") == self.street:
                del v["street"]
            orders[oid] = v
        clocks = {}
        for cid, c in self.clocks.items():
            v = _compact(vars(c))
            del v["id"]
            if v["order_id"] == _order_of(self.case_id, cid):
                del v["order_id"]
            clocks[cid] = v
        d["orders"], d["clocks"] = orders, clocks
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaseClocks":
        d = dict(d)
        case_id, street = d["case_id"], d["street"]
        d["orders"] = {k: Order(order_id=k, **{"street": street, **v}) for k, v in d.get("orders", {}).items()}
        d["clocks"] = {
            k: Clock(id=k, **{"order_id": _order_of(case_id, k), **v}) for k, v in d.get("clocks", {}).items()
        }
        return cls(**d)

    def note(self, now: float, what: str, **details: Any) -> None:
        self.log.append([round(now, 3), what, details])
        del self.log[:-LOG_KEPT]

    def order_clocks(self, order_id: str) -> list[Clock]:
        return [c for c in self.clocks.values() if c.order_id == order_id]

    def live(self) -> list[Clock]:
        return [c for c in self.clocks.values() if c.state in (RUNNING, PAUSED)]


_DEFAULTS = {
    f.name: f.default
    for cls in (Clock, Order)
    for f in cls.__dataclass_fields__.values()
    if not callable(f.default) and f.default is not f.default_factory
}


def _order_of(case_id: str, clock_id: str) -> str:
    """The order id a clock id was made from by `clock_id` (the usual `<case>/<round>/<dept>`)."""
    return f"{case_id}/{clock_id.rsplit('/', 1)[0]}"


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drop fields at their default (memory: a million timers live in these documents)."""
    return {k: v for k, v in d.items() if k not in _DEFAULTS or _DEFAULTS[k] != v}


def timer_name(case_id: str, clock: Clock, phase: str) -> str:
    return f"{case_id}|{clock.id}|{phase}|{clock.token}"


def parse_timer(name: str) -> tuple[str, str, str, int]:
    case_id, clock_id, phase, token = name.split("|")
    return case_id, clock_id, phase, int(token)


def clock_id(case_id: str, order_id: str, kind: str) -> str:
    short = order_id[len(case_id) + 1 :] if order_id.startswith(case_id + "/") else order_id
    return f"{short}/{LETTER[kind]}"


# --------------------------------------------------------------------------- effects


@dataclass
class Effects:
    arm: list[tuple[str, float]] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    events: list[Envelope] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    ledger_end: list[tuple[str, float]] = field(default_factory=list)
    counts: list[tuple[str, str, str, str, int]] = field(default_factory=list)  # period, scope, key, counter, n
    decided: list[tuple[str, str, str]] = field(default_factory=list)  # dept, deadline, met | breached
    stale: bool = False

    def count(self, period: str, dept: str | None, street: str | None, counter: str, n: int = 1) -> None:
        if dept:
            self.counts.append((period, "dept", dept, counter, n))
        if street:
            self.counts.append((period, "street", street, counter, n))

    def count_area(self, period: str, grid: str, counter: str, n: int = 1) -> None:
        """A count for the case's community and patch too (their 721 shares)."""
        if len(grid) >= 12:
            self.counts.append((period, "community", grid[:12], counter, n))
        if len(grid) == 15:
            self.counts.append((period, "patch", grid, counter, n))


# --------------------------------------------------------------------------- engine


class Engine:
    def __init__(
        self,
        policies: PolicyBook,
        calendar: WorkCalendar,
        commanders_of: CommandersOf | None = None,
        liaison_of: LiaisonOf | None = None,
    ) -> None:
        self.policies = policies
        self.calendar = calendar
        self.tz: ZoneInfo = calendar.tz
        self.commanders_of = commanders_of or (lambda grid, level: [])
        self.liaison_of = liaison_of or (lambda dept, street: ("", ""))
        self._policies: dict[tuple[Any, ...], Policy] = {}

    def period(self, ts: float) -> str:
        return period_of(dt_of(ts), self.tz)

    def policy(self, case: CaseClocks, order: Order) -> Policy:
        key = (case.cat, case.cond, case.sev, order.policy)
        found = self._policies.get(key)
        if found is None:
            if len(self._policies) > 10_000:
                self._policies.clear()
            found = self._policies[key] = self.policies.for_case(*key)
        return found

    # -- clock arithmetic

    def _schedule(self, clock: Clock, due: datetime | None = None) -> None:
        """Recompute due and warning point of a running clock from `start` and `used`;
        `due`, when given, is the due time the order told the department (the router
        stamps it), which an unused clock keeps rather than recomputing it."""
        assert clock.start is not None
        limit = Limit.parse(clock.limit)
        start = dt_of(clock.start)
        if due is not None and clock.used == 0:
            clock.due = ms(ts_of(due))
        else:
            clock.due = ms(ts_of(self.calendar.due(start, Limit(max(limit.amount - clock.used, 0.0), limit.unit))))
        clock.warn_at = None
        if not clock.warned:
            left = limit.amount * clock.wf - clock.used
            clock.warn_at = ms(ts_of(self.calendar.due(start, Limit(left, limit.unit)))) if left > 0 else clock.start

    def next_timer(self, case_id: str, clock: Clock) -> tuple[str, float] | None:
        if clock.state != RUNNING or clock.due is None:
            return None
        if not clock.warned and clock.warn_at is not None and clock.warn_at < clock.due:
            return timer_name(case_id, clock, WARN), clock.warn_at
        return timer_name(case_id, clock, BREACH), clock.due

    def timers(self, case: CaseClocks) -> list[tuple[str, float]]:
        """Every timer the document implies (the start-up rebuild arms exactly these)."""
        out = []
        for clock in case.clocks.values():
            t = self.next_timer(case.case_id, clock)
            if t:
                out.append(t)
        return out

    def _start(self, case: CaseClocks, fx: Effects, clock: Clock, due: datetime | None = None) -> None:
        self._schedule(clock, due)
        t = self.next_timer(case.case_id, clock)
        if t:
            fx.arm.append(t)

    def _unarm(self, case: CaseClocks, fx: Effects, clock: Clock) -> None:
        t = self.next_timer(case.case_id, clock)
        if t:
            fx.cancel.append(t[0])
        clock.token += 1

    def _stop(self, case: CaseClocks, fx: Effects, clock: Clock, now: float, reason: str) -> None:
        if clock.state not in (RUNNING, PAUSED):
            return
        self._unarm(case, fx, clock)
        if (
            clock.kind == ACK
            and reason in ("acknowledged", "resolved")
            or clock.kind == HANDLE
            and reason == "resolved"
        ):
            fx.decided.append((case.orders[clock.order_id].dept, clock.kind, "met"))
        clock.state, clock.ended, clock.reason = STOPPED, ms(now), reason
        clock.start = clock.due = clock.warn_at = None
        case.note(now, "stopped", clock=clock.id, reason=reason)

    def _pause(self, case: CaseClocks, fx: Effects, clock: Clock, now: float) -> None:
        if clock.state != RUNNING or clock.start is None:
            return
        self._unarm(case, fx, clock)
        unit = Limit.parse(clock.limit).unit
        clock.used += self.calendar.elapsed(dt_of(clock.start), dt_of(now), unit)
        clock.state, clock.start, clock.due, clock.warn_at = PAUSED, None, None, None
        case.note(now, "paused", clock=clock.id, used=round(clock.used, 4), limit=clock.limit)

    def _resume(self, case: CaseClocks, fx: Effects, clock: Clock, now: float) -> None:
        if clock.state != PAUSED:
            return
        clock.token += 1
        clock.state, clock.start = RUNNING, ms(now)
        self._start(case, fx, clock)
        remaining = Limit.parse(clock.limit).amount - clock.used
        case.note(now, "resumed", clock=clock.id, remaining=round(remaining, 4), due=clock.due)

    def _end_breaches(self, case: CaseClocks, fx: Effects, order: Order, kinds: Iterable[str], now: float) -> None:
        """A breached clock's goal is reached at last: the ledger learns how late it was."""
        for c in case.order_clocks(order.order_id):
            if c.state == BREACHED and c.kind in kinds and c.lid and c.reason == "":
                c.reason = "done"
                fx.ledger_end.append((c.lid, now))

    # -- events in

    def dispatched(self, case: CaseClocks | None, event: CaseDispatched, now: float) -> tuple[CaseClocks, Effects]:
        fx = Effects()
        if case is None:
            s = event.case
            case = CaseClocks(
                case_id=event.case_id,
                corr=event.correlation_id,
                cat=s.category,
                sev=s.severity.value,
                cond=s.filing_condition,
                grid=s.grid,
                street=s.street,
            )
        if seen_id(event.message_id) in case.seen:
            fx.stale = True
            return case, fx
        if event.round_no < max((o.round for o in case.orders.values()), default=0):
            # a later round (e.g. a dispatch by hand) is already running: this one was superseded
            self._seen(case, event.message_id)
            fx.stale = True
            return case, fx
        new = {a.order_id for a in event.assignments if a.active}
        for order in case.orders.values():
            if order.order_id not in new and order.active:
                order.active = False
                order.esc_done = order.esc_done or f"re-dispatched (round {event.round_no})"
                for c in case.order_clocks(order.order_id):
                    self._stop(case, fx, c, now, f"re-dispatched (round {event.round_no})")
        period = self.period(ts_of(event.occurred_at))
        for a in event.assignments:
            if not a.active or a.order_id in case.orders:
                continue
            order = Order(
                order_id=a.order_id,
                dept=a.dept,
                street=a.street,
                level=a.level,
                policy=a.sla_policy,
                round=event.round_no,
                dispatched=round(ts_of(a.dispatched_at), 3),
                mode=a.mode.value,
            )
            case.orders[a.order_id] = order
            policy = self.policy(case, order)
            # each clock runs to the due time on the order (what the department was told);
            # the policy gives the limit the warning point and a resumed clock count on
            for kind, limit, due in ((ACK, policy.ack_limit, a.ack_due), (HANDLE, policy.handle_limit, a.handle_due)):
                clock = Clock(
                    id=clock_id(case.case_id, a.order_id, kind),
                    order_id=a.order_id,
                    kind=kind,
                    level=a.level,
                    limit=str(limit),
                    wf=policy.warn_fraction,
                    start=order.dispatched,
                )
                case.clocks[clock.id] = clock
                self._start(case, fx, clock, due)
            case.note(now, "dispatched", dept=a.dept, level=a.level, policy=policy.name)
            if a.dept not in case.depts:
                case.depts.append(a.dept)
                fx.count(period, a.dept, None, "registered")
        case.status = CaseStatus.dispatched.value
        self._seen(case, event.message_id)
        return case, fx

    def updated(self, case: CaseClocks, event: CaseUpdated, now: float) -> Effects:
        fx = Effects()
        if seen_id(event.message_id) in case.seen:
            fx.stale = True
            return fx
        self._seen(case, event.message_id)
        if event.action == "resolve_on_site":  # its closing overtook it and counted it (`on_site`)
            return fx
        to, frm = event.to_status, event.from_status
        case.status = to.value
        period = self.period(ts_of(event.occurred_at))
        if event.rating:
            self._evaluated(case, fx, period, event.rating)
        order = case.orders.get(event.order_id or "")
        if order is not None:
            self._replied(case, fx, order, event, period, now)
        self._status_clocks(case, fx, order, frm, to, now)
        self._count_status(case, fx, period, event, frm, to)
        if (
            to is CaseStatus.suspended
            or frm is CaseStatus.suspended
            or to in CLOCK_STOPPED_STATES
            or to is CaseStatus.reopened
        ):
            case.note(now, "status", to=to.value, action=event.action, dept=event.dept)
        return fx

    # -- the parts of `updated`, in the order it applies them

    @staticmethod
    def _evaluated(case: CaseClocks, fx: Effects, period: str, rating: str) -> None:
        """An evaluation: the street's and the resolving departments' satisfaction."""
        fx.count(period, None, case.street, f"eval_{rating}")
        for o in case.orders.values():
            if o.active and o.resolved:
                fx.count(period, o.dept, None, f"eval_{rating}")

    def _replied(
        self, case: CaseClocks, fx: Effects, order: Order, event: CaseUpdated, period: str, now: float
    ) -> None:
        """A department's reply on its own order."""
        action = event.action
        if action == "resolve":
            self._order_resolved(case, fx, order, event, period, now)
        if action in ("acknowledge", "progress") and order.acked is None:
            order.acked = ms(now)
        if action in ("acknowledge", "progress", "resolve"):
            self._order_acknowledged(case, fx, order, now)
        if action == "reject":
            self._order_rejected(case, fx, order, now)

    def _order_resolved(
        self, case: CaseClocks, fx: Effects, order: Order, event: CaseUpdated, period: str, now: float
    ) -> None:
        order.resolved = ms(now)
        order.mode = event.mode.value if event.mode else order.mode
        fx.count(period, order.dept, None, "resolved")
        if not order.late:
            fx.count(period, order.dept, None, "resolved_on_time")
        if event.mode:
            fx.count(period, order.dept, None, f"mode_{event.mode.value}")
        for c in case.order_clocks(order.order_id):
            self._stop(case, fx, c, now, "resolved")
        order.esc_done = order.esc_done or "resolved"
        self._end_breaches(case, fx, order, (ACK, HANDLE, ESCALATION), now)

    def _order_acknowledged(self, case: CaseClocks, fx: Effects, order: Order, now: float) -> None:
        """签收 (or a reply that implies it): the acknowledge clock stops, and the escalation
        clock too where the policy escalates only until acknowledged."""
        for c in case.order_clocks(order.order_id):
            if c.kind == ACK:
                self._stop(case, fx, c, now, "acknowledged")
        self._end_breaches(case, fx, order, (ACK,), now)
        if self.policy(case, order).escalate_until == "acknowledged":
            for c in case.order_clocks(order.order_id):
                if c.kind == ESCALATION:
                    self._stop(case, fx, c, now, "acknowledged (escalate_until)")
            self._end_breaches(case, fx, order, (ESCALATION,), now)
            order.esc_done = order.esc_done or "acknowledged"

    def _order_rejected(self, case: CaseClocks, fx: Effects, order: Order, now: float) -> None:
        order.active = False
        order.esc_done = order.esc_done or "rejected"
        for c in case.order_clocks(order.order_id):
            self._stop(case, fx, c, now, "rejected by the department")

    def _status_clocks(
        self, case: CaseClocks, fx: Effects, order: Order | None, frm: CaseStatus | None, to: CaseStatus, now: float
    ) -> None:
        """What the case's new status does to its clocks: stop, pause or resume them."""
        if to in CLOCK_STOPPED_STATES:
            for c in case.live():
                self._stop(case, fx, c, now, to.value)
            for o in case.orders.values():
                if o.active:
                    self._end_breaches(case, fx, o, (ACK, HANDLE, ESCALATION), now)
                    o.esc_done = o.esc_done or to.value
        elif to is CaseStatus.suspended and frm is not CaseStatus.suspended:
            for c in case.live():
                self._pause(case, fx, c, now)
        elif frm is CaseStatus.suspended and to is not CaseStatus.suspended:
            for c in case.live():
                self._resume(case, fx, c, now)
        elif to in (CaseStatus.acknowledged, CaseStatus.in_progress) and order is None:
            for c in case.live():
                if c.kind == ACK:
                    self._stop(case, fx, c, now, "acknowledged")
        elif to is CaseStatus.rejected:
            for c in case.live():
                self._stop(case, fx, c, now, "rejected")

    @staticmethod
    def _count_status(
        case: CaseClocks, fx: Effects, period: str, event: CaseUpdated, frm: CaseStatus | None, to: CaseStatus
    ) -> None:
        """The street's and departments' counts a status change adds (resolved, closed, rework)."""
        current = [o for o in case.orders.values() if o.active]
        if to is CaseStatus.resolved and frm is not CaseStatus.resolved:
            fx.count(period, None, case.street, "resolved")
            if not any(o.late for o in current):
                fx.count(period, None, case.street, "resolved_on_time")
            fx.count_area(period, case.grid, "resolved")
            if event.mode:
                fx.count(period, None, case.street, f"mode_{event.mode.value}")
                fx.count_area(period, case.grid, f"mode_{event.mode.value}")
        if to is CaseStatus.closed and frm is not CaseStatus.closed:  # not an evaluation of a closed case
            fx.count(period, None, case.street, "closed")
            for o in current:
                if o.resolved:
                    fx.count(period, o.dept, None, "closed")
        if to is CaseStatus.reopened:
            fx.count(period, None, case.street, "rework")
            for o in current:
                if o.resolved:
                    fx.count(period, o.dept, None, "rework")

    def on_site(self, event: CaseUpdated, now: float) -> tuple[CaseClocks, Effects]:
        """A case resolved on site when reported (就地处置): no clocks ever run, but it counts
        as registered and resolved on time, in its mode's 721 share, for its street,
        community and patch; the document keeps the case so that its closing counts too."""
        fx = Effects()
        s = event.case
        assert s is not None
        case = CaseClocks(
            case_id=event.case_id,
            corr=event.correlation_id,
            cat=s.category,
            sev=s.severity.value,
            cond=s.filing_condition,
            grid=s.grid,
            street=s.street,
            status=event.to_status.value,
        )
        period = self.period(ts_of(event.occurred_at))
        counters = ["registered", "resolved", "resolved_on_time", "on_site"]
        if event.to_status is CaseStatus.closed:  # the closing overtook resolve_on_site
            counters.append("closed")
        for counter in counters:
            fx.count(period, None, case.street, counter)
        fx.count_area(period, case.grid, "resolved")
        fx.count_area(period, case.grid, "on_site")
        if event.mode:
            fx.count(period, None, case.street, f"mode_{event.mode.value}")
            fx.count_area(period, case.grid, f"mode_{event.mode.value}")
        case.note(now, "resolved_on_site", mode=event.mode.value if event.mode else None)
        self._seen(case, event.message_id)
        return case, fx

    def _seen(self, case: CaseClocks, message_id: str) -> None:
        case.seen.append(seen_id(message_id))
        del case.seen[:-SEEN_KEPT]

    # -- timers firing

    def fire(self, case: CaseClocks | None, name: str, now: float) -> Effects:
        """A claimed timer: its warning or breach (and the escalation), or stale."""
        fx = Effects()
        case_id, cid, phase, token = parse_timer(name)
        clock = case.clocks.get(cid) if case else None
        if case is None or clock is None or clock.token != token or clock.state != RUNNING:
            fx.stale = True
            return fx
        order = case.orders[clock.order_id]
        policy = self.policy(case, order)
        deadline = DeadlineKind.acknowledge if clock.kind == ACK else DeadlineKind.handle
        common = dict(
            case_id=case_id,
            correlation_id=case.corr,
            dept=order.dept,
            street=order.street,
            level=clock.level,
            order_id=order.order_id,
            deadline=deadline,
            step=clock.step,
            occurred_at=dt_of(now),
        )
        if phase == WARN:
            if clock.warned:
                fx.stale = True
                return fx
            assert clock.due is not None
            clock.warned = True
            fx.events.append(DeadlineWarning(message_id=f"warning:{name}", due_at=dt_of(clock.due), **common))
            case.note(now, "warning", clock=clock.id, level=clock.level, due=clock.due)
            t = self.next_timer(case_id, clock)
            if t:
                fx.arm.append(t)
            return fx
        assert clock.due is not None
        due = clock.due
        late = max(0.0, now - due)
        liaison, phone = self.liaison_of(order.dept, order.street)
        clock.state, clock.ended = BREACHED, ms(now)
        clock.lid = f"{case_id}|{clock.id}|{clock.token}"
        if clock.kind == HANDLE:
            order.late = True
        if clock.kind != ESCALATION:
            fx.decided.append((order.dept, clock.kind, "breached"))
        fx.events.append(
            DeadlineBreached(
                message_id=f"breach:{name}", due_at=dt_of(due), late_seconds=round(late, 3), liaison=liaison, **common
            )
        )
        commanders = self.commanders_of(case.grid, clock.level) if clock.kind == ESCALATION else []
        fx.ledger.append(
            {
                "id": clock.lid,
                "case_id": case_id,
                "order_id": order.order_id,
                "dept": order.dept,
                "liaison": liaison,
                "liaison_phone": phone,
                "street": order.street,
                "grid": case.grid,
                "category": case.cat,
                "level": clock.level,
                "clock": clock.kind,
                "step": clock.step,
                "limit": clock.limit,
                "due": due,
                "breached_at": now,
                "commanders": [c.name for c in commanders],
            }
        )
        period = self.period(now)
        fx.count(period, order.dept, order.street, "breaches")
        case.note(now, "breached", clock=clock.id, level=clock.level, due=due, late=round(late, 3))
        self._escalate(case, fx, order, clock, policy, now)
        return fx

    def _escalate(
        self, case: CaseClocks, fx: Effects, order: Order, breached: Clock, policy: Policy, now: float
    ) -> None:
        goal = order.acked if policy.escalate_until == "acknowledged" else order.resolved
        if goal is not None or order.resolved is not None or not order.active or order.esc_done:
            return
        if breached.kind != ESCALATION and order.esc_level is not None:
            return  # already escalating: this breach is recorded, the chain goes on
        from_level = breached.level if breached.kind == ESCALATION else order.level
        if from_level > 1:
            to_level = from_level - 1
        else:
            to_level = 1
            order.esc_repeats += 1
            if order.esc_repeats > policy.repeat:
                order.esc_done = f"exhausted: city limit re-armed {policy.repeat} time(s)"
                case.note(now, "escalation_exhausted", order=order.order_id, repeats=policy.repeat)
                return
        order.esc_level = to_level
        order.esc_step += 1
        limit = policy.step_limit(to_level)
        cid = clock_id(case.case_id, order.order_id, ESCALATION)
        old = case.clocks.get(cid)
        clock = Clock(
            id=cid,
            order_id=order.order_id,
            kind=ESCALATION,
            level=to_level,
            limit=str(limit),
            wf=policy.warn_fraction,
            start=ms(now),
            step=order.esc_step,
            token=(old.token + 1) if old else 1,
        )
        case.clocks[cid] = clock
        self._start(case, fx, clock)
        assert clock.due is not None
        commanders = self.commanders_of(case.grid, to_level)
        repeat = f" (city limit repeat {order.esc_repeats}/{policy.repeat})" if from_level == 1 else ""
        what = {
            ACK: "未按时签收 acknowledge deadline",
            HANDLE: "未按期处置 handling deadline",
            ESCALATION: f"L{from_level} commander's limit",
        }[breached.kind]
        reason = f"{what} missed by {order.dept} at L{breached.level}{repeat}; new limit {limit}"
        if breached.due is not None and now - breached.due > LATE_FIRING_S:
            # e.g. it fell due while sla (or Redis, before `gridbus rebuild`) was down
            reason += f"; fired {round(now - breached.due)} s after it was due"
        fx.events.append(
            CaseEscalated(
                message_id=f"escalated:{order.order_id}:{order.esc_step}",
                case_id=case.case_id,
                correlation_id=case.corr,
                occurred_at=dt_of(now),
                from_level=from_level,
                to_level=to_level,
                dept=order.dept,
                reason=reason,
                order_id=order.order_id,
                step=order.esc_step,
                commanders=commanders,
                new_due=dt_of(clock.due),
                deadline=DeadlineKind.acknowledge if breached.kind == ACK else DeadlineKind.handle,
            )
        )
        fx.count(self.period(now), order.dept, order.street, "escalations")
        case.note(
            now,
            "escalated",
            order=order.order_id,
            step=order.esc_step,
            from_level=from_level,
            to_level=to_level,
            limit=str(limit),
            due=clock.due,
            commanders=[c.name for c in commanders],
        )
