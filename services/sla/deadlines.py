"""sla's work, without nameko: take an event, fire due timers, relay the outbox, rebuild.

`Deadlines` wires the pure `Engine` (state.py) to Redis (store.py) and to a `publish`
callable (the service passes its confirmed, mandatory `Bus.publish_event`; tests pass a
list's append). `now` is injectable everywhere, so tests drive it with a fake clock.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import redis
import structlog

from services.sla.state import LATE_FIRING_S, CaseClocks, Effects, Engine
from services.sla.store import FireBatch, Fired, SlaStore
from services.sla.timers import Claimed
from shared import metrics
from shared.models import (
    CaseDispatched,
    CaseEscalated,
    CaseUpdated,
    DeadlineBreached,
    DeadlineWarning,
    Envelope,
    EscalationCommander,
    parse_event,
)
from shared.policies import PolicyBook
from shared.worktime import WorkCalendar

log = structlog.get_logger("gridbus.sla")
Publish = Callable[[Envelope], None]

HOLD_EVERY_S = 2.0
GROUP_S = 0.02  #: timers claimed ahead whose due times lie this close are committed together
#: a batch decided ahead but committed later than this after its due time is decided again, as of
#: then (the Engine's own threshold for saying a deadline fired late); below it, deciding again
#: would double the work of a starved process and bring its commits no sooner
REDECIDE_LATE_S = LATE_FIRING_S


def grid_commanders(grid: Any = None) -> Callable[[str, int], list[EscalationCommander]]:
    """Commanders of a cell's level from the grid registry (loaded from config once, when not given)."""
    loaded: list[Any] = [grid]

    def commanders_of(cell: str, level: int) -> list[EscalationCommander]:
        if loaded[0] is None:
            from shared.grid import load_grid

            loaded[0] = load_grid()
        registry = loaded[0]
        try:
            people = registry.commanders(cell, level)
        except ValueError:
            return []
        return [EscalationCommander(name=p.name, role=p.role, phone=p.phone, wecom_user=p.wecom_user) for p in people]

    return commanders_of


def department_liaisons(departments: list[Any] | None = None) -> Callable[[str, str], tuple[str, str]]:
    """A department's liaison for a street (departments loaded from config once, when not given)."""
    loaded: list[Any] = [departments]

    def liaison_of(dept: str, street: str) -> tuple[str, str]:
        if loaded[0] is None:
            from shared.departments import load_departments

            loaded[0] = load_departments()
        for d in loaded[0]:
            if d.code == dept:
                person = d.liaison(street)
                return (person.name, person.phone) if person else ("", "")
        return "", ""

    return liaison_of


@dataclass
class FireReport:
    fired: list[Fired] = field(default_factory=list)
    published: int = 0
    pending: int | None = None  #: timers waiting, when the tick looked (None: it did not)


def _count_decided(decided: list[tuple[str, str, str]]) -> None:
    """After the commit: each deadline is decided once (a repeated event is stale, decides nothing)."""
    for dept, deadline, outcome in decided:
        metrics.DEADLINES_DECIDED.labels(dept, deadline, outcome).inc()


def _one_by_one(publish: Publish) -> Callable[[list[Envelope]], None]:
    def publish_all(events: list[Envelope]) -> None:
        for event in events:
            publish(event)

    return publish_all


class Deadlines:
    def __init__(
        self,
        client: redis.Redis,
        policies: PolicyBook,
        calendar: WorkCalendar,
        publish: Publish,
        grid: Any = None,
        departments: list[Any] | None = None,
        publish_many: Callable[[list[Envelope]], None] | None = None,
    ) -> None:
        self.engine = Engine(policies, calendar, grid_commanders(grid), department_liaisons(departments))
        self.store = SlaStore(client, engine=self.engine)
        self.timers = self.store.timers
        # a batch publisher (the service's: one confirm round trip per batch), or `publish`
        # one event at a time (tests)
        self.publish_many = publish_many or _one_by_one(publish)
        self.unpublished: deque[Envelope] = deque()
        #: called when `fire_due(publish=False)` left events in `unpublished` (the service
        #: wakes its publishing loop with it instead of polling)
        self.on_unpublished: Callable[[], None] | None = None
        # batches claimed and decided ahead of their due time, earliest first, waiting to be committed at it
        self.ready: deque[FireBatch] = deque()

    # -- events in

    def handle(self, body: dict[str, Any] | Envelope, now: float | None = None) -> list[Envelope]:
        """Apply one lifecycle event; returns the events it published."""
        event = body if isinstance(body, Envelope) else parse_event(body)
        now = time.time() if now is None else now
        if isinstance(event, CaseDispatched):
            fx = self.store.on_dispatched(event, now)
        elif isinstance(event, CaseUpdated):
            fx = self.store.on_updated(event, now)
        else:
            return []
        if fx.arm or fx.cancel:
            log.info(
                "deadlines_changed",
                case_id=event.case_id,
                armed=len(fx.arm),
                cancelled=len(fx.cancel),
                by=getattr(event, "event", ""),
            )
        _count_decided(fx.decided)
        return self._publish(fx.events)

    def apply(
        self, case_id: str, decide: Callable[[CaseClocks | None], tuple[CaseClocks | None, Effects]]
    ) -> list[Envelope]:
        """Commit what `decide` makes of one case's document (read, decide, compare-and-
        commit, again if it changed meanwhile), then publish its events: how the
        reconciler applies a repair that is more than one event."""
        fx = self.store.transact(case_id, decide)
        _count_decided(fx.decided)
        return self._publish(fx.events)

    # -- timers

    def fire_due(
        self,
        now: float | None = None,
        lease_s: float = 30.0,
        limit: int = 500,
        publish: bool = True,
        ahead: float = 0.0,
        wait: float = 0.0,
    ) -> FireReport:
        """Fire what is due at the start of this call (in batches of `limit`); timers
        that fall due meanwhile wait for the next tick, so a tick always ends.

        Each batch is committed (events into the outbox) before the next is claimed. With
        `publish` the events are published after each commit; without, they wait in
        `self.unpublished` for `publish_pending` (the service runs it in its own loop, so
        a slow broker does not delay the next commits).

        `ahead` > 0 also claims the timers falling due within that many seconds and
        decides them now, as of their due time (the Engine's work, the commit's
        arguments), so that at the due time only the commit is left: a burst of timers
        due at one instant is committed in the few milliseconds Redis takes, not in the
        time Python takes to decide them. The commit compares each document with what was
        read, so a case that changes in between (acknowledged, say) is decided again then;
        the claim's lease runs from the due time, so a replica that dies holding them
        loses nothing. `wait`: commit (sleeping until each falls due) the batches due
        within this many seconds before returning — on the real clock only (`now` None)."""
        report = FireReport()
        due_by = time.time() if now is None else now
        # no cyclic GC inside a tick: a burst allocates a lot that lives on (the events),
        # and full collections over it were a third of the burst's time; it runs after
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._commit_ready(report, due_by, now, publish)
            outlook = self.timers.outlook()
            report.pending = outlook.pending
            # the usual tick: nothing to claim (no timer due within `ahead`, no lease run out)
            if not outlook.nothing_by(due_by, due_by + max(ahead, 0.0)):
                self._fire_due(report, due_by, now, lease_s, limit, publish)
                if ahead > 0:
                    self._prepare(report, due_by + ahead, now, lease_s, limit, publish)
            if now is None:
                self._commit_ready(report, time.time() + wait, now, publish)
            return report
        finally:
            if collecting:
                gc.enable()

    def _fire_due(
        self, report: FireReport, due_by: float, now: float | None, lease_s: float, limit: int, publish: bool
    ) -> FireReport:
        # pipelined: while Redis runs batch k's commit, batch k+1 (claimed and read before
        # it was sent) is decided; a case in both is simply decided again (compare-and-commit)
        prev: FireBatch | None = None
        while True:
            claimed = self.timers.claim(due_by, lease_s, limit)
            t = time.time() if now is None else now
            cur = self.store.fire_read(claimed, t) if claimed else None
            if prev is not None:
                self.store.fire_send(prev)
            if cur is not None:
                self.store.fire_decide(cur)
            if prev is not None:
                self._done(report, self.store.fire_commit(prev), publish)
            prev = cur
            if len(claimed) < limit:
                break
        if prev is not None:
            self._done(report, self.store.fire_commit(prev), publish)
        return report

    def _prepare(
        self, report: FireReport, until: float, now: float | None, lease_s: float, limit: int, publish: bool
    ) -> None:
        """Claim what falls due by `until`, decide it as of its due time, queue it in `ready`
        (in groups of close due times); between claims, commit what has fallen due."""
        while True:
            t = time.time() if now is None else now
            claimed = self.timers.claim(t, lease_s, limit, until=until)
            group: list[Claimed] = []
            for c in claimed:  # earliest first
                if group and c.due - group[0].due > GROUP_S:
                    self._queue(group, t)
                    group = []
                group.append(c)
            if group:
                self._queue(group, t)
            self._commit_ready(report, time.time() if now is None else now, now, publish)
            if len(claimed) < limit:
                return

    def _queue(self, claimed: list[Claimed], t: float) -> None:
        batch = self.store.fire_read(claimed, t)
        self.store.fire_decide(batch)
        self.ready.append(batch)

    def _commit_ready(self, report: FireReport, until: float, now: float | None, publish: bool) -> None:
        """Commit the ready batches due by `until`: those due already at once, in one write,
        then (on the real clock) each group as it falls due."""
        while self.ready and self.ready[0].not_before <= until:
            t = time.time() if now is None else now
            if self.ready[0].not_before > t:
                time.sleep(self.ready[0].not_before - t)
                t = time.time()
            due: list[FireBatch] = []
            while self.ready and self.ready[0].not_before <= t:
                batch = self.ready.popleft()
                if t - batch.not_before > REDECIDE_LATE_S:
                    # committed well after its due time (the process was held up): decided
                    # again as of now, so that the events say how late they fired
                    batch = self.store.fire_read(batch.claimed, t)
                    self.store.fire_decide(batch)
                due.append(batch)
            self.store.fire_send_many(due)
            failed: list[BaseException] = []
            for batch in due:  # every answer is read, also after one failed (its timers' leases stand)
                try:
                    self._done(report, self.store.fire_commit(batch), publish)
                except Exception as exc:
                    failed.append(exc)
            if failed:
                raise failed[0]

    def release_ready(self) -> int:
        """Give back the timers claimed ahead and not committed (a graceful stop): they
        return to `due`, for another replica or the next start."""
        claimed = [c for batch in self.ready for c in batch.claimed]
        self.ready.clear()
        return self.timers.release(claimed)

    def _done(self, report: FireReport, fired: list[Fired], publish: bool) -> None:
        report.fired += fired
        _count_decided([d for f in fired for d in f.effects.decided])
        events = [e for f in fired for e in f.effects.events]
        if publish:
            report.published += len(self._publish(events))
        elif events:
            self.unpublished.extend(events)
            if self.on_unpublished is not None:
                self.on_unpublished()

    def publish_pending(self, chunk: int = 200) -> int:
        """Publish the committed events `fire_due(publish=False)` left, oldest first."""
        n = 0
        held = 0.0
        while self.unpublished:
            if time.monotonic() - held > HOLD_EVERY_S:  # keep the relays (older than 5 s) off what waits here
                self.store.outbox.hold([e.message_id for e in self.unpublished])
                held = time.monotonic()
            events = [self.unpublished.popleft() for _ in range(min(chunk, len(self.unpublished)))]
            done = self._publish(events)
            n += len(done)
            if len(done) < len(events):  # the broker failed: the rest stays in the outbox for the relay
                self.unpublished.clear()
                break
        return n

    def _publish(self, events: list[Envelope]) -> list[Envelope]:
        done: list[Envelope] = []
        try:
            self.publish_many(events)
            done = list(events)
        except Exception as exc:  # stays in the outbox; the relay retries
            log.warning("publish_deferred", error=str(exc), pending=len(events) - len(done))
        finally:
            self.store.outbox.done([e.message_id for e in done])
        for event in done:
            if isinstance(event, (DeadlineWarning, DeadlineBreached, CaseEscalated)):
                log.info(
                    event.event,
                    case_id=event.case_id,
                    dept=event.dept,
                    level=getattr(event, "to_level", getattr(event, "level", None)),
                    step=getattr(event, "step", 0),
                )
        return done

    def relay(self, older_than_s: float = 5.0) -> int:
        events = self.store.outbox.take(older_than_s)
        if events:
            log.info("sla_outbox_relay", count=len(events))
        return len(self._publish(events))

    def rebuild(self) -> tuple[int, int]:
        started = time.monotonic()
        cases, armed = self.store.rebuild()
        log.info("sla_timers_rebuilt", cases=cases, armed=armed, seconds=round(time.monotonic() - started, 3))
        return cases, armed
