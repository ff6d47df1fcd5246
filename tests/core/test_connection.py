"""The connection machine and its backoff: the table is complete, everything else is refused,
and retries are spread over a window that doubles up to a cap."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from turngate.core.connection import (
    CONNECTION_TRANSITIONS,
    Backoff,
    BackoffPolicy,
    ConnectionEvent,
    ConnectionState,
    next_connection_state,
)
from turngate.errors import IllegalTransitionError

POLICY = BackoffPolicy(base_s=0.5, cap_s=30.0, healthy_after_s=10.0)
ATTEMPTS = 10
"""Retries per schedule in the statistics tests: the ceiling reaches the cap at retry 6."""


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(ConnectionState, ConnectionEvent))
)
def test_every_connection_state_event_pair_is_a_transition_or_refused(
    state: ConnectionState, event: ConnectionEvent
) -> None:
    if (state, event) in CONNECTION_TRANSITIONS:
        assert next_connection_state(state, event) is CONNECTION_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            next_connection_state(state, event)
        assert caught.value.machine == "connection"
        assert (caught.value.state, caught.value.event) == (state.value, event.value)


def test_a_stopped_connection_never_moves_again() -> None:
    assert {state for state, _ in CONNECTION_TRANSITIONS} == set(ConnectionState) - {
        ConnectionState.STOPPED
    }


def test_every_live_state_can_be_stopped_and_every_state_is_reachable() -> None:
    for state in set(ConnectionState) - {ConnectionState.STOPPED}:
        assert CONNECTION_TRANSITIONS[(state, ConnectionEvent.STOP)] is ConnectionState.STOPPED
    reachable = {ConnectionState.CONNECTING}
    frontier = [ConnectionState.CONNECTING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in CONNECTION_TRANSITIONS.items():
            if source is state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(ConnectionState)


def test_a_lost_or_zombie_connection_always_backs_off_before_dialling_again() -> None:
    for (_, event), target in CONNECTION_TRANSITIONS.items():
        if event in (ConnectionEvent.LOST, ConnectionEvent.ZOMBIE):
            assert target is ConnectionState.BACKING_OFF
    assert [s for (s, e) in CONNECTION_TRANSITIONS if e is ConnectionEvent.RETRY] == [
        ConnectionState.BACKING_OFF
    ]


def schedules(count: int, seed: int = 4) -> list[list[float]]:
    """``count`` fresh schedules of ``ATTEMPTS`` delays each, from one seeded generator."""
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        backoff = Backoff(POLICY, rng)
        result.append([backoff.next_delay_s() for _ in range(ATTEMPTS)])
    return result


def test_each_delay_lies_within_zero_and_the_capped_doubling_window() -> None:
    for delays in schedules(500):
        for attempt, delay_s in enumerate(delays):
            assert 0.0 <= delay_s <= min(POLICY.cap_s, POLICY.base_s * 2**attempt)


def test_the_mean_delay_doubles_until_the_cap_and_then_stays_there() -> None:
    by_attempt = list(zip(*schedules(2000), strict=True))
    means = [statistics.fmean(delays) for delays in by_attempt]
    for attempt, mean_s in enumerate(means):
        # Full jitter: uniform over [0, ceiling], so the mean is half the ceiling.
        assert mean_s == pytest.approx(POLICY.ceiling_s(attempt) / 2, rel=0.1)
    capped_from = next(n for n in range(ATTEMPTS) if POLICY.ceiling_s(n) == POLICY.cap_s)
    assert capped_from == 6
    assert means[:capped_from] == sorted(means[:capped_from])
    assert max(max(delays) for delays in by_attempt[capped_from:]) <= POLICY.cap_s


def test_the_delays_come_from_the_injected_generator_and_replay_exactly() -> None:
    assert schedules(3, seed=7) == schedules(3, seed=7)
    rng = random.Random(7)
    expected = [rng.uniform(0.0, POLICY.ceiling_s(n)) for n in range(ATTEMPTS)]
    assert schedules(1, seed=7) == [expected]


def test_a_connection_that_stayed_ready_long_enough_starts_the_schedule_over() -> None:
    backoff = Backoff(POLICY, random.Random(1))
    for _ in range(5):
        backoff.next_delay_s()
    backoff.attempt_ended(ready_for_s=POLICY.healthy_after_s)
    assert backoff.attempt == 0
    assert backoff.next_delay_s() <= POLICY.base_s


def test_a_connection_dropped_soon_after_ready_keeps_backing_off() -> None:
    backoff = Backoff(POLICY, random.Random(1))
    for _ in range(5):
        backoff.next_delay_s()
    backoff.attempt_ended(ready_for_s=POLICY.healthy_after_s - 0.001)
    backoff.attempt_ended(ready_for_s=None)
    assert backoff.attempt == 5


def test_a_schedule_retried_for_ever_stays_at_the_cap_without_overflow() -> None:
    backoff = Backoff(POLICY, random.Random(2))
    delays = [backoff.next_delay_s() for _ in range(5000)]
    assert max(delays) <= POLICY.cap_s
    assert POLICY.ceiling_s(10**6) == POLICY.cap_s


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"base_s": 0.0}, "base_s"),
        ({"base_s": 2.0, "cap_s": 1.0}, "cap_s"),
        ({"healthy_after_s": -1.0}, "healthy_after_s"),
    ],
)
def test_a_backoff_policy_that_cannot_work_is_refused_naming_its_field(
    fields: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        BackoffPolicy(**fields)
