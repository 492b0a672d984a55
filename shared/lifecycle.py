"""The case state machine: one transition table, used by every writer of case state.

The national seven steps (collect → register → dispatch → handle → feed back → verify
and close → evaluate) as states, plus the side states of docs/design.md §6. An action that the
table does not allow from the current state raises `IllegalTransition`, which names the
current state and what is allowed, and nothing changes.
"""

from __future__ import annotations

from enum import Enum

from shared.models import CaseStatus as S


class Action(str, Enum):
    register = "register"
    dispatch = "dispatch"  # first dispatch, re-route after reject, re-dispatch after reopen
    escalate = "escalate"  # re-dispatch one grid level up (deadline breached)
    acknowledge = "acknowledge"  # 签收
    progress = "progress"
    suspend = "suspend"  # clock paused, with reason and approver
    resume = "resume"
    reject = "reject"  # department: not ours
    resolve = "resolve"
    verify_pass = "verify_pass"
    verify_fail = "verify_fail"  # → reopened, counts as rework
    mark_duplicate = "mark_duplicate"
    cancel = "cancel"
    reassign = "reassign"  # 改派: a commander dispatches by hand (new round, previous one closed)
    resolve_on_site = "resolve_on_site"  # 就地处置: the reporter solved it when reporting; never dispatched
    reopen = "reopen"  # the reporter was dissatisfied after closing (within the window)


_OPEN = frozenset({S.registered, S.dispatched, S.acknowledged, S.in_progress, S.suspended, S.rejected, S.reopened})

#: action → (states it may be taken from, state it leads to). `None` keeps the state.
TRANSITIONS: dict[Action, tuple[frozenset[S], S | None]] = {
    Action.register: (frozenset({S.reported}), S.registered),
    Action.dispatch: (frozenset({S.registered, S.rejected, S.reopened}), S.dispatched),
    Action.escalate: (frozenset({S.dispatched, S.acknowledged, S.in_progress}), S.dispatched),
    Action.acknowledge: (frozenset({S.dispatched}), S.acknowledged),
    Action.progress: (frozenset({S.acknowledged, S.in_progress}), S.in_progress),
    Action.suspend: (frozenset({S.acknowledged, S.in_progress}), S.suspended),
    Action.resume: (frozenset({S.suspended}), S.in_progress),
    Action.reject: (frozenset({S.dispatched, S.acknowledged}), S.rejected),
    Action.resolve: (frozenset({S.dispatched, S.acknowledged, S.in_progress}), S.resolved),
    Action.verify_pass: (frozenset({S.resolved}), S.closed),
    Action.verify_fail: (frozenset({S.resolved}), S.reopened),
    Action.mark_duplicate: (frozenset({S.registered}), S.duplicate),
    Action.cancel: (_OPEN, S.cancelled),
    Action.reassign: (
        frozenset({S.dispatched, S.acknowledged, S.in_progress, S.suspended, S.rejected, S.reopened}),
        S.dispatched,
    ),
    Action.resolve_on_site: (frozenset({S.registered}), S.resolved),
    Action.reopen: (frozenset({S.closed}), S.reopened),
}

OPEN_STATES = _OPEN
#: the statuses a `case_updated` may tell people about (notify.yaml `when.to_status` admits
#: only these); the notifier's queue is bound to exactly their routing keys
#: (shared/topology.py), so every other update never reaches it
NOTIFIED_STATUSES: frozenset[S] = frozenset({S.resolved, S.closed, S.reopened})
FINAL_STATES = frozenset({S.closed, S.duplicate, S.cancelled})
#: states in which no deadline runs
CLOCK_STOPPED_STATES = frozenset({S.resolved, S.closed, S.cancelled, S.duplicate})


class IllegalTransition(ValueError):
    def __init__(self, current: S, action: Action) -> None:
        self.current = current
        self.action = action
        self.allowed = allowed_actions(current)
        allowed = ", ".join(a.value for a in self.allowed) or "none (final state)"
        super().__init__(f"cannot {action.value} a case that is {current.value}; allowed: {allowed}")


def allowed_actions(current: S) -> list[Action]:
    return [a for a, (sources, _) in TRANSITIONS.items() if current in sources]


def next_status(current: S, action: Action) -> S:
    sources, target = TRANSITIONS[action]
    if current not in sources:
        raise IllegalTransition(current, action)
    return target or current
