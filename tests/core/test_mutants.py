"""Tests written for the mutation run (`make mutants`, docs/mutants.md).

The first is the mutation run's end-to-end oracle: a few simulator seeds drive the real runtime
over the core, the store and the lease owner, and every promise the checkers know must hold.
The rest each kill a mutant the unit tests let survive; docs/mutants.md lists which.
"""

from __future__ import annotations

import pytest

from turngate.core.clock import ManualClock
from turngate.core.effects import CancelRun, EndRun, EndTurns, IgnoredStale, StartRun
from turngate.core.keys import (
    AGENT_ID_LEN_MAX,
    SEGMENT_LEN_MAX,
    SEGMENTS_MAX,
    SESSION_KEY_LEN_MAX,
    parse_session_key,
)
from turngate.core.lease import Lease, LeaseTerms
from turngate.core.queue import QueueMode, SessionQueue
from turngate.core.session import RunCancelled, RunFailed, RunReplied, SessionCore, SessionPolicy
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import AbortReason, Turn, TurnState, Usage
from turngate.errors import ErrorCode, InvalidSessionKeyError
from turngate.sim.runner import run_seed

# A short slice of `make sim`: about 40 ms a seed, every profile drawn at least once.
ORACLE_SEEDS = range(40)


@pytest.mark.parametrize("seed", ORACLE_SEEDS)
def test_a_short_simulator_run_keeps_every_promise(seed: int) -> None:
    result = run_seed(seed)
    assert result.ok, (result.failure, result.violations[:5], result.error[-800:])


# --- session keys: every limit is inclusive, and a refusal shows the key it refused ---


def test_a_key_at_every_length_limit_is_accepted_and_one_past_it_is_refused() -> None:
    agent = "a" * AGENT_ID_LEN_MAX
    segment = "s" * SEGMENT_LEN_MAX
    assert parse_session_key(f"agent:{agent}:main").agent_id == agent
    assert parse_session_key(f"agent:main:{segment}").rest == (segment,)
    many = ":".join(["s"] * SEGMENTS_MAX)
    assert len(parse_session_key(f"agent:main:{many}").rest) == SEGMENTS_MAX
    longest = "agent:main:" + ":".join(["x" * 90] * 5) + ":"
    longest += "y" * (SESSION_KEY_LEN_MAX - len(longest))
    assert str(parse_session_key(longest)) == longest
    for text in (
        f"agent:{agent}a:main",
        f"agent:main:{segment}s",
        f"agent:main:{many}:s",
        longest + "y",
    ):
        with pytest.raises(InvalidSessionKeyError):
            parse_session_key(text)


def test_a_refusal_names_the_type_it_got_instead_of_a_string() -> None:
    with pytest.raises(InvalidSessionKeyError, match="expected a string, got int"):
        parse_session_key(5)


def test_a_refused_key_of_80_characters_is_shown_whole_and_a_longer_one_cut_at_77() -> None:
    whole = "agent:main:" + "x" * 68 + "!"
    assert len(whole) == 80
    with pytest.raises(InvalidSessionKeyError) as shown:
        parse_session_key(whole)
    assert f"sessionKey {whole!r}:" in str(shown.value)
    longer = whole[:-1] + "x!"
    with pytest.raises(InvalidSessionKeyError) as cut:
        parse_session_key(longer)
    assert f"sessionKey {longer[:77] + '...'!r}:" in str(cut.value)


# --- the queue, the lease, token counts ---


def _turn(turn_id: str) -> Turn:
    return Turn(turn_id, "agent:main:main", "hi", accepted_at=0.0, deadline=100.0)


def test_taking_one_queued_turn_out_leaves_the_others_counted() -> None:
    queue = SessionQueue(turns_max=3)
    for turn_id in ("a", "b", "c"):
        queue.append(_turn(turn_id), collect=False)
    assert queue.is_full
    taken = queue.take("b")
    assert taken is not None
    assert taken.turn_id == "b"
    assert len(queue) == 2
    assert not queue.is_full
    assert [turn.turn_id for turn in queue.turns()] == ["a", "c"]


TERMS = LeaseTerms(stall_timeout_s=10.0, run_timeout_s=10.0, abort_grace_s=1.0)


def test_a_lease_whose_stall_and_run_deadlines_meet_expires_as_a_run_timeout() -> None:
    lease = Lease.grant("run", 1, TERMS, now=0.0, hard_deadline=100.0)
    assert lease.expiry() == (10.0, AbortReason.RUN_TIMEOUT)


def test_a_lease_restarted_when_its_run_really_starts_counts_both_clocks_from_then() -> None:
    lease = Lease.grant("run", 1, TERMS, now=0.0, hard_deadline=100.0)
    lease.restart(4.0)
    assert lease.expiry() == (14.0, AbortReason.RUN_TIMEOUT)
    assert lease.deadline() == 14.0


@pytest.mark.parametrize("count", [-1, 1.0, True, None])
def test_a_token_count_that_is_not_an_int_of_zero_or_more_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match=f"prompt_tokens: .* got {count!r}"):
        Usage(count, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"completion_tokens: .* got {count!r}"):
        Usage(0, count)  # type: ignore[arg-type]


def test_zero_tokens_is_a_valid_count() -> None:
    assert Usage(0, 0).total_tokens == 0


# --- one session's commands: reports, cancellation, fencing, unstick ---

SESSION_KEY = "agent:main:main"
SESSION_TERMS = LeaseTerms(stall_timeout_s=10.0, run_timeout_s=100.0, abort_grace_s=2.0)


def _session() -> SessionCore:
    return SessionCore(SESSION_KEY, 0, SessionPolicy(10, SESSION_TERMS))


def _queued(turn_id: str) -> Turn:
    return Turn(turn_id, SESSION_KEY, f"message {turn_id}", accepted_at=0.0, deadline=1000.0)


def _running(session: SessionCore, *turn_ids: str) -> None:
    for turn_id in turn_ids:
        session.submit(_queued(turn_id), QueueMode.FOLLOWUP, now=0.0)


def test_the_lease_a_starting_run_gets_names_that_run_and_its_epoch() -> None:
    session = _session()
    _running(session, "a")
    assert session.active is not None
    assert (session.active.lease.run_id, session.active.lease.epoch) == ("a", 1)


def test_a_reply_is_written_to_the_transcript_as_the_users_messages_then_the_assistants() -> None:
    session = _session()
    _running(session, "a")
    (end,) = session.run_ended("a", 1, RunReplied("hello"), now=1.0)
    assert isinstance(end, EndRun)
    assert end.exchange == (
        TranscriptItem.user("message a", "a"),
        TranscriptItem.assistant("hello"),
    )


def test_a_run_that_fails_or_is_cancelled_writes_nothing_to_the_transcript() -> None:
    for result in (RunFailed(ErrorCode.PROVIDER_ERROR, "boom"), RunCancelled()):
        session = _session()
        _running(session, "a")
        (end,) = session.run_ended("a", 1, result, now=1.0)
        assert isinstance(end, EndRun)
        assert end.exchange == ()


def test_a_run_really_starting_later_than_decided_gets_its_whole_stall_timeout_from_then() -> None:
    session = _session()
    _running(session, "a")
    assert session.next_deadline() == 10.0
    session.run_started("a", 1, now=4.0)
    assert session.next_deadline() == 14.0
    assert session.tick(13.9) == []


def test_a_start_reported_under_another_run_or_epoch_moves_no_clock() -> None:
    session = _session()
    _running(session, "a")
    session.run_started("b", 1, now=4.0)
    session.run_started("a", 2, now=4.0)
    assert session.next_deadline() == 10.0


def test_progress_from_a_run_that_no_longer_holds_the_session_is_ignored_and_says_whose() -> None:
    session = _session()
    _running(session, "a")
    assert session.progress("a", 2, now=1.0) == [IgnoredStale("a", 2, "progress")]
    assert session.progress("old", 1, now=1.0) == [IgnoredStale("old", 1, "progress")]
    assert session.next_deadline() == 10.0
    session.run_ended("a", 1, RunReplied("done"), now=2.0)
    # Idle now: a late delta of the ended run changes nothing either.
    assert session.progress("a", 1, now=3.0) == [IgnoredStale("a", 1, "progress")]
    assert session.is_idle


def test_a_cancelled_run_gets_its_whole_grace_before_it_is_fenced() -> None:
    session = _session()
    _running(session, "a")
    session.abort(None, now=1.0)
    assert session.next_deadline() == 3.0
    assert session.tick(2.9) == []
    assert session.active is not None
    (end,) = session.tick(3.0)
    assert isinstance(end, EndRun)
    assert end.fenced
    assert session.active is None


def test_a_run_fenced_after_a_user_abort_ends_its_turns_as_user_aborts() -> None:
    session = _session()
    _running(session, "a")
    session.abort(None, now=1.0)
    (end,) = session.tick(3.0)
    assert isinstance(end, EndRun)
    (outcome,) = end.outcomes
    assert (outcome.state, outcome.code) == (TurnState.ABORTED, ErrorCode.USER_ABORT)
    assert outcome.message == (
        f"session {SESSION_KEY}: run a aborted by the user"
        "; the run ignored cancellation and was fenced"
    )


def test_a_cancelled_run_that_ends_by_itself_is_not_said_to_have_been_fenced() -> None:
    session = _session()
    _running(session, "a")
    session.abort(None, now=1.0)
    (end,) = session.run_ended("a", 1, RunCancelled(), now=1.5)
    assert isinstance(end, EndRun)
    assert not end.fenced
    (outcome,) = end.outcomes
    assert (outcome.state, outcome.code) == (TurnState.ABORTED, ErrorCode.USER_ABORT)
    assert outcome.message == f"session {SESSION_KEY}: run a aborted by the user"


def test_a_queued_turn_aborted_by_the_user_ends_with_a_message_naming_it() -> None:
    session = _session()
    _running(session, "a", "b")
    effects, ids = session.abort("b", now=1.0)
    assert ids == ["b"]
    (end,) = effects
    assert isinstance(end, EndTurns)
    (outcome,) = end.outcomes
    assert (outcome.turn_id, outcome.state, outcome.code) == (
        "b",
        TurnState.ABORTED,
        ErrorCode.USER_ABORT,
    )
    assert outcome.message == f"session {SESSION_KEY}: turn b aborted by the user"


def test_aborting_nothing_on_an_idle_session_does_nothing() -> None:
    session = _session()
    assert session.abort(None, now=1.0) == ([], [])
    assert session.abort("ghost", now=1.0) == ([], [])


def test_unsticking_an_idle_session_does_nothing() -> None:
    assert _session().unstick(now=1.0) == ([], [])


def test_unsticking_a_running_session_fences_its_run_at_once_and_starts_the_next() -> None:
    session = _session()
    _running(session, "a", "b")
    effects, ids = session.unstick(now=5.0)
    assert ids == ["a"]
    cancel, end, start = effects
    assert cancel == CancelRun("a", 1, AbortReason.USER_ABORT)
    assert isinstance(end, EndRun)
    assert (end.run_id, end.epoch, end.fenced, end.exchange) == ("a", 1, True, ())
    (outcome,) = end.outcomes
    assert (outcome.turn_id, outcome.state, outcome.code) == (
        "a",
        TurnState.ABORTED,
        ErrorCode.USER_ABORT,
    )
    assert outcome.message == (
        f"session {SESSION_KEY}: run a aborted by the user"
        "; the run ignored cancellation and was fenced"
    )
    assert isinstance(start, StartRun)
    assert (start.run_id, start.epoch, [t.turn_id for t in start.turns]) == ("b", 2, ["b"])
    # The fenced run's late report changes nothing.
    assert session.run_ended("a", 1, RunCancelled(), now=6.0) == [
        IgnoredStale("a", 1, "end (RunCancelled)")
    ]
    assert session.active is not None
    assert session.active.run_id == "b"


def test_unsticking_a_run_already_being_cancelled_fences_it_without_cancelling_it_twice() -> None:
    session = _session()
    _running(session, "a")
    session.submit(_queued("b"), QueueMode.INTERRUPT, now=1.0)
    effects, ids = session.unstick(now=1.5)
    assert ids == ["a"]
    end, start = effects
    assert isinstance(end, EndRun)
    assert end.fenced
    (outcome,) = end.outcomes
    assert outcome.code == ErrorCode.SUPERSEDED
    assert isinstance(start, StartRun)
    assert start.run_id == "b"


# --- the manual clock the core's tests may drive ---


def test_a_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock()
    assert (clock.now(), clock.wall()) == (0.0, 1_700_000_000.0)
    assert clock.advance(2.5) == 2.5
    assert (clock.now(), clock.wall()) == (2.5, 1_700_000_002.5)
    assert clock.advance(0) == 2.5
    with pytest.raises(ValueError, match=r"backward \(-1\)"):
        clock.advance(-1)
    assert clock.now() == 2.5


def test_a_manual_clock_keeps_its_wall_time_offset_from_its_start() -> None:
    clock = ManualClock(start=100.0, wall_start=5_000.0)
    assert (clock.now(), clock.wall()) == (100.0, 5_000.0)
    clock.advance(1.0)
    assert (clock.now(), clock.wall()) == (101.0, 5_001.0)
