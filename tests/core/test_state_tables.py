"""The turn and lease machines: the tables are complete and everything else is refused."""

from __future__ import annotations

import itertools

import pytest

from turngate.core.lease import (
    LEASE_TRANSITIONS,
    Lease,
    LeaseEvent,
    LeaseState,
    LeaseTerms,
)
from turngate.core.turn import (
    OUTCOME_EVENTS,
    TERMINAL_STATES,
    TRANSITIONS,
    AbortReason,
    Outcome,
    TurnEvent,
    TurnState,
    next_turn_state,
    stored_sources,
)
from turngate.errors import ErrorCode, IllegalTransitionError

TERMS = LeaseTerms(stall_timeout_s=10.0, run_timeout_s=100.0, abort_grace_s=2.0)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(TurnState, TurnEvent)))
def test_every_turn_state_event_pair_is_a_transition_or_refused(
    state: TurnState, event: TurnEvent
) -> None:
    if (state, event) in TRANSITIONS:
        assert next_turn_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            next_turn_state(state, event)
        assert state.value in caught.value.message
        assert event.value in caught.value.message


def test_terminal_turn_states_are_final() -> None:
    assert {s for s, _ in TRANSITIONS} & TERMINAL_STATES == set()
    assert {TRANSITIONS[k] for k in TRANSITIONS} >= TERMINAL_STATES


def test_every_terminal_state_is_reachable_from_accepted() -> None:
    reachable = {TurnState.ACCEPTED}
    frontier = [TurnState.ACCEPTED]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(TurnState)


def test_every_abort_reason_is_an_error_code() -> None:
    assert {reason.code for reason in AbortReason} <= set(ErrorCode)


def test_an_outcome_must_be_terminal_and_carry_a_reply_exactly_when_replied() -> None:
    with pytest.raises(ValueError, match="terminal"):
        Outcome("t", TurnState.RUNNING, "t")
    with pytest.raises(ValueError, match="reply"):
        Outcome("t", TurnState.REPLIED, "t")
    with pytest.raises(ValueError, match="reply"):
        Outcome("t", TurnState.FAILED, "t", reply="x")
    assert Outcome("t", TurnState.REPLIED, "r", reply="x").merged


@pytest.mark.parametrize(("state", "event"), list(itertools.product(LeaseState, LeaseEvent)))
def test_every_lease_state_event_pair_is_a_transition_or_refused(
    state: LeaseState, event: LeaseEvent
) -> None:
    lease = Lease.grant("r", 1, TERMS, now=0.0, hard_deadline=1000.0)
    lease.state = state
    actions = {
        LeaseEvent.RENEW: lambda: lease.renew(1.0),
        LeaseEvent.REVOKE: lambda: lease.revoke(AbortReason.USER_ABORT, 1.0),
        LeaseEvent.RELEASE: lease.release,
        LeaseEvent.FENCE: lease.fence,
    }
    if (state, event) in LEASE_TRANSITIONS:
        actions[event]()
        assert lease.state is LEASE_TRANSITIONS[(state, event)]
    elif event is LeaseEvent.RENEW:
        actions[event]()  # renewing a lease that is no longer held is a no-op, not an error
        assert lease.state is state
    else:
        with pytest.raises(IllegalTransitionError):
            actions[event]()


def test_a_lease_expires_at_its_stall_deadline_unless_progress_renews_it() -> None:
    lease = Lease.grant("r", 1, TERMS, now=0.0, hard_deadline=1000.0)
    assert lease.expiry() == (10.0, AbortReason.STALLED)
    lease.renew(7.0)
    assert lease.expiry() == (17.0, AbortReason.STALLED)


def test_progress_never_moves_a_lease_past_its_run_timeout() -> None:
    lease = Lease.grant("r", 1, TERMS, now=0.0, hard_deadline=1000.0)
    lease.renew(95.0)
    assert lease.expiry() == (100.0, AbortReason.RUN_TIMEOUT)


def test_a_turn_deadline_caps_the_lease() -> None:
    lease = Lease.grant("r", 1, TERMS, now=0.0, hard_deadline=4.0)
    assert lease.expiry() == (4.0, AbortReason.RUN_TIMEOUT)


def test_a_revoked_lease_needs_attention_at_the_end_of_its_grace() -> None:
    lease = Lease.grant("r", 1, TERMS, now=0.0, hard_deadline=1000.0)
    lease.revoke(AbortReason.STALLED, 10.0)
    assert lease.deadline() == 12.0
    lease.fence()
    assert lease.deadline() is None


@pytest.mark.parametrize("event", list(TurnEvent))
def test_a_store_may_write_an_event_from_the_states_the_table_takes_it_from(
    event: TurnEvent,
) -> None:
    """Plus ``accepted`` where ``queued`` is one: a store may not have written a turn's
    enqueue yet. Never from a terminal state."""
    sources = set(stored_sources(event))
    table = {state for (state, on) in TRANSITIONS if on is event}
    assert sources - table <= {TurnState.ACCEPTED}
    assert table <= sources
    assert (TurnState.ACCEPTED in sources) == bool(table & {TurnState.ACCEPTED, TurnState.QUEUED})
    assert not sources & TERMINAL_STATES


def test_each_terminal_state_has_the_event_that_ends_a_turn_in_it() -> None:
    for state, event in OUTCOME_EVENTS.items():
        assert state in TERMINAL_STATES
        assert state in {TRANSITIONS[key] for key in TRANSITIONS if key[1] is event}
    assert set(OUTCOME_EVENTS) == TERMINAL_STATES
