"""Every action from every state: legal ones lead where the table says, illegal ones raise."""

import pytest

from shared.lifecycle import TRANSITIONS, Action, IllegalTransition, allowed_actions, next_status
from shared.models import CaseStatus as S

LEGAL = [(state, action) for action, (sources, _) in TRANSITIONS.items() for state in sources]
ILLEGAL = [(state, action) for state in S for action in Action if state not in TRANSITIONS[action][0]]


@pytest.mark.parametrize("state,action", LEGAL)
def test_legal_transitions_reach_their_target(state: S, action: Action) -> None:
    target = TRANSITIONS[action][1]
    assert next_status(state, action) == (target or state)


@pytest.mark.parametrize("state,action", ILLEGAL)
def test_illegal_transitions_name_state_and_allowed_actions(state: S, action: Action) -> None:
    with pytest.raises(IllegalTransition) as info:
        next_status(state, action)
    assert info.value.current == state
    assert state.value in str(info.value)
    for allowed in allowed_actions(state):
        assert allowed.value in str(info.value)


def test_the_seven_steps_in_order() -> None:
    path = [Action.register, Action.dispatch, Action.acknowledge, Action.progress, Action.resolve, Action.verify_pass]
    state = S.reported
    for action in path:
        state = next_status(state, action)
    assert state == S.closed


def test_final_states_allow_nothing() -> None:
    for state in (S.duplicate, S.cancelled):
        assert allowed_actions(state) == []
    # a closed case can only be reopened (the reporter's dissatisfied evaluation, within its window)
    assert allowed_actions(S.closed) == [Action.reopen]


def test_rework_loop() -> None:
    state = next_status(S.resolved, Action.verify_fail)
    assert state == S.reopened
    assert next_status(state, Action.dispatch) == S.dispatched
