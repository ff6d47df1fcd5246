"""One session's coordination, driven by hand: commands in, effects out, time as a value."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from turngate.core.effects import (
    CancelRun,
    Effect,
    EndRun,
    EndTurns,
    Enqueued,
    IgnoredStale,
    StartRun,
    Steered,
)
from turngate.core.lease import LeaseTerms
from turngate.core.queue import QueueMode
from turngate.core.session import (
    RunCancelled,
    RunFailed,
    RunReplied,
    SessionCore,
    SessionPolicy,
)
from turngate.core.turn import AbortReason, Outcome, Turn, TurnState, Usage
from turngate.errors import ErrorCode

KEY = "agent:main:main"
TERMS = LeaseTerms(stall_timeout_s=10.0, run_timeout_s=100.0, abort_grace_s=2.0)


def new_session(queue_turns_max: int = 10, epoch: int = 0) -> SessionCore:
    return SessionCore(KEY, epoch, SessionPolicy(queue_turns_max, TERMS))


def turn(turn_id: str, at: float = 0.0, deadline: float = 1000.0) -> Turn:
    return Turn(turn_id, KEY, f"message {turn_id}", accepted_at=at, deadline=deadline)


def starts(effects: Sequence[Effect]) -> list[StartRun]:
    return [e for e in effects if isinstance(e, StartRun)]


def outcomes(effects: Sequence[Effect]) -> list[Outcome]:
    found: list[Outcome] = []
    for effect in effects:
        if isinstance(effect, EndRun | EndTurns):
            found.extend(effect.outcomes)
    return found


def test_first_turn_on_an_idle_session_starts_at_once_with_the_next_epoch() -> None:
    session = new_session(epoch=7)
    effects = session.submit(turn("a"), QueueMode.FOLLOWUP, now=0.0)
    assert effects == [Enqueued(("a",)), StartRun("a", 8, (session.active.batch.turns[0],))]  # type: ignore[union-attr]
    assert session.active is not None
    assert session.active.lease.epoch == 8


def test_second_send_queues_behind_running_turn_and_starts_after_release() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    assert starts(session.submit(turn("b"), QueueMode.FOLLOWUP, 0.1)) == []
    effects = session.run_ended("a", 1, RunReplied("echo a"), 0.5)
    # Exactly two effects, in this order: a's run ends (releasing epoch 1), then b starts
    # under the next epoch.
    end, start = effects
    assert isinstance(end, EndRun)
    assert isinstance(start, StartRun)
    assert (end.run_id, end.epoch) == ("a", 1)
    assert [(o.turn_id, o.state, o.reply) for o in end.outcomes] == [
        ("a", TurnState.REPLIED, "echo a")
    ]
    assert (start.run_id, start.epoch, [t.turn_id for t in start.turns]) == ("b", 2, ["b"])


def test_release_comes_before_the_next_start_in_every_effect_list() -> None:
    session = new_session()
    for name in "abc":
        session.submit(turn(name), QueueMode.FOLLOWUP, 0.0)
    effects = session.run_ended("a", 1, RunReplied("x"), 1.0)
    kinds = [type(e) for e in effects]
    assert kinds.index(EndRun) < kinds.index(StartRun)


def test_sequential_sends_never_meet_a_busy_session_in_reject_mode() -> None:
    # Seeds 000/001: a send right after the previous reply must find the session free.
    session = new_session()
    for index in range(10):
        effects = session.submit(turn(f"t{index}"), QueueMode.REJECT, float(index))
        assert starts(effects), f"call {index} was not started at once"
        ended = session.run_ended(f"t{index}", index + 1, RunReplied("ok"), float(index))
        assert outcomes(ended)[0].state is TurnState.REPLIED
        assert session.is_idle


def test_reject_mode_refuses_with_busy_while_a_turn_runs() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    effects = session.submit(turn("b"), QueueMode.REJECT, 0.1)
    [refused] = outcomes(effects)
    assert refused.state is TurnState.REJECTED
    assert refused.code is ErrorCode.BUSY
    assert KEY in refused.message


def test_collect_merges_messages_that_arrive_while_a_turn_runs_into_one_next_turn() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.COLLECT, 0.0)
    for name in "bcd":
        assert starts(session.submit(turn(name), QueueMode.COLLECT, 0.1)) == []
    effects = session.run_ended("a", 1, RunReplied("A"), 1.0)
    [start] = starts(effects)
    assert start.run_id == "b"
    assert [t.turn_id for t in start.turns] == ["b", "c", "d"]
    ended = outcomes(session.run_ended("b", 2, RunReplied("BCD"), 2.0))
    assert [(o.turn_id, o.run_id, o.reply) for o in ended] == [
        ("b", "b", "BCD"),
        ("c", "b", "BCD"),
        ("d", "b", "BCD"),
    ]
    assert [o.merged for o in ended] == [False, True, True]


def test_a_followup_after_a_collect_batch_gets_its_own_turn() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.COLLECT, 0.0)
    session.submit(turn("c"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("d"), QueueMode.COLLECT, 0.0)
    assert [s.run_id for s in starts(session.run_ended("a", 1, RunReplied("x"), 1))] == ["b"]
    assert [s.run_id for s in starts(session.run_ended("b", 2, RunReplied("x"), 2))] == ["c"]
    assert [s.run_id for s in starts(session.run_ended("c", 3, RunReplied("x"), 3))] == ["d"]


def test_interrupt_supersedes_the_running_turn_and_everything_queued_before_it() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.1)
    effects = session.submit(turn("c"), QueueMode.INTERRUPT, 0.2)
    [queued_gone] = outcomes(effects)
    assert (queued_gone.turn_id, queued_gone.state, queued_gone.code) == (
        "b",
        TurnState.ABORTED,
        ErrorCode.SUPERSEDED,
    )
    assert CancelRun("a", 1, AbortReason.SUPERSEDED) in effects
    assert starts(effects) == [], "the new turn waits for the release"
    effects = session.run_ended("a", 1, RunCancelled(), 0.3)
    [running_gone] = outcomes(effects)
    assert (running_gone.turn_id, running_gone.code) == ("a", ErrorCode.SUPERSEDED)
    assert [s.run_id for s in starts(effects)] == ["c"]


def test_queue_overflow_refuses_the_newest_message_with_queue_full() -> None:
    session = new_session(queue_turns_max=2)
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("c"), QueueMode.FOLLOWUP, 0.0)
    [refused] = outcomes(session.submit(turn("d"), QueueMode.FOLLOWUP, 0.0))
    assert (refused.turn_id, refused.state, refused.code) == (
        "d",
        TurnState.REJECTED,
        ErrorCode.QUEUE_FULL,
    )
    assert "queue is full" in refused.message
    assert len(session.queue) == 2


def test_a_stalled_run_is_cancelled_at_its_stall_deadline_and_the_next_turn_then_runs() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 1.0)
    assert session.next_deadline() == 10.0
    assert session.tick(9.999) == []
    assert session.tick(10.0) == [CancelRun("a", 1, AbortReason.STALLED)]
    effects = session.run_ended("a", 1, RunCancelled(), 10.1)
    [aborted] = outcomes(effects)
    assert (aborted.state, aborted.code) == (TurnState.ABORTED, ErrorCode.STALLED)
    assert "stall_timeout" in aborted.message
    assert [s.run_id for s in starts(effects)] == ["b"]


def test_progress_keeps_a_slow_run_alive_until_its_run_timeout() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    for now in range(5, 100, 5):
        assert session.progress("a", 1, float(now)) == []
        assert session.tick(float(now)) == []
    assert session.tick(100.0) == [CancelRun("a", 1, AbortReason.RUN_TIMEOUT)]


def test_a_run_that_ignores_cancellation_is_fenced_after_the_grace_and_the_session_moves_on() -> (
    None
):
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.0)
    session.tick(10.0)
    assert session.next_deadline() == 12.0
    effects = session.tick(12.0)
    end = effects[0]
    assert isinstance(end, EndRun)
    assert end.fenced
    assert end.outcomes[0].code is ErrorCode.STALLED
    assert "fenced" in end.outcomes[0].message
    [start] = starts(effects)
    assert (start.run_id, start.epoch) == ("b", 2)
    # The zombie finally reports: nothing changes.
    assert session.run_ended("a", 1, RunReplied("late"), 20.0) == [
        IgnoredStale("a", 1, "end (RunReplied)")
    ]
    assert session.active is not None
    assert session.active.run_id == "b"


def test_a_cancellation_carried_out_late_gets_its_whole_abort_grace_from_then() -> None:
    """The revoke was decided at 10 s but carried out at 25 s (the step's earlier write
    waited for storage): the run is fenced at 27 s, not at once."""
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    [cancel] = [e for e in session.tick(10.0) if isinstance(e, CancelRun)]
    session.cancel_sent(cancel.run_id, cancel.epoch, 25.0)
    assert session.next_deadline() == 27.0
    assert not any(isinstance(e, EndRun) for e in session.tick(26.0))
    [end] = [e for e in session.tick(27.0) if isinstance(e, EndRun)]
    assert end.fenced


def test_a_queued_turn_past_its_deadline_expires_without_running() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.progress("a", 1, 4.0)
    session.submit(turn("b", at=1.0, deadline=5.0), QueueMode.FOLLOWUP, 1.0)
    assert session.next_deadline() == 5.0
    [expired] = outcomes(session.tick(5.0))
    assert (expired.turn_id, expired.state, expired.code) == (
        "b",
        TurnState.EXPIRED,
        ErrorCode.TURN_EXPIRED,
    )


def test_user_abort_cancels_the_running_turn_or_removes_one_queued_turn() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.0)
    effects, ids = session.abort("b", 1.0)
    assert ids == ["b"]
    assert outcomes(effects)[0].code is ErrorCode.USER_ABORT
    effects, ids = session.abort(None, 1.0)
    assert ids == ["a"]
    assert effects == [CancelRun("a", 1, AbortReason.USER_ABORT)]
    assert outcomes(session.run_ended("a", 1, RunCancelled(), 1.5))[0].code is ErrorCode.USER_ABORT
    assert session.abort("nope", 2.0) == ([], [])


def test_a_failed_run_ends_its_turn_failed_with_the_providers_message() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    [failed] = outcomes(session.run_ended("a", 1, RunFailed(ErrorCode.PROVIDER_ERROR, "503"), 1))
    assert (failed.state, failed.code, failed.message) == (
        TurnState.FAILED,
        ErrorCode.PROVIDER_ERROR,
        "503",
    )


# -- properties ---------------------------------------------------------------------------

MODES = st.sampled_from(list(QueueMode))
COMMANDS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), MODES),
        st.tuples(st.just("reply"), st.none()),
        st.tuples(st.just("fail"), st.none()),
        st.tuples(st.just("cancelled"), st.none()),
        st.tuples(st.just("progress"), st.none()),
        st.tuples(st.just("abort"), st.none()),
        st.tuples(st.just("wait"), st.floats(0.0, 30.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(COMMANDS)
def test_any_schedule_ends_every_turn_exactly_once_with_one_run_at_a_time(
    commands: list[tuple[str, object]],
) -> None:
    session = new_session(queue_turns_max=4)
    now = 0.0
    submitted: list[str] = []
    ended: dict[str, Outcome] = {}
    epochs: list[int] = []
    running: set[str] = set()

    def apply(effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, StartRun):
                assert not running, "two runs at once"
                assert not epochs or effect.epoch > epochs[-1]
                epochs.append(effect.epoch)
                running.add(effect.run_id)
            if isinstance(effect, EndRun):
                running.discard(effect.run_id)
            for outcome in outcomes([effect]):
                assert outcome.turn_id not in ended, "a turn ended twice"
                ended[outcome.turn_id] = outcome

    for index, (name, arg) in enumerate(commands):
        active = session.active
        if name == "submit":
            assert isinstance(arg, QueueMode)
            turn_id = f"t{index}"
            submitted.append(turn_id)
            apply(session.submit(turn(turn_id, now, now + 50.0), arg, now))
        elif name == "wait":
            assert isinstance(arg, float)
            now += arg
            apply(session.tick(now))
        elif name == "abort":
            apply(session.abort(None, now)[0])
        elif active is not None:
            epoch = active.lease.epoch
            if name == "progress":
                apply(session.progress(active.run_id, epoch, now))
            elif name == "reply":
                apply(session.run_ended(active.run_id, epoch, RunReplied("r"), now))
            elif name == "fail":
                result = RunFailed(ErrorCode.PROVIDER_ERROR, "x")
                apply(session.run_ended(active.run_id, epoch, result, now))
            else:
                apply(session.run_ended(active.run_id, epoch, RunCancelled(), now))
    # Liveness: with no more faults, everything settles by its deadlines.
    for _ in range(200):
        deadline = session.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        apply(session.tick(now))
    assert session.is_idle
    assert set(ended) == set(submitted)


def test_a_steered_message_waits_and_joins_the_run_when_it_asks_before_its_next_step() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    steer = turn("b")
    assert session.submit(steer, QueueMode.STEER, 0.1) == [Enqueued(("b",))]
    assert steer.state.value == "queued"
    assert session.take_steered("a", 1) == [Steered("a", 1, steer)]
    assert steer.state is TurnState.RUNNING
    assert session.take_steered("a", 1) == []
    ended = outcomes(session.run_ended("a", 1, RunReplied("A"), 1.0))
    assert [(o.turn_id, o.run_id, o.reply) for o in ended] == [("a", "a", "A"), ("b", "a", "A")]


def test_a_steered_message_the_run_never_asks_for_runs_as_the_next_turn() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.STEER, 0.1)
    effects = session.run_ended("a", 1, RunReplied("A"), 1.0)
    assert [e.turns[0].turn_id for e in effects if isinstance(e, StartRun)] == ["b"]


def test_only_steered_messages_at_the_head_join_and_never_a_cancelled_or_stale_run() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("c"), QueueMode.STEER, 0.1)
    assert session.take_steered("a", 1) == []  # c waits behind b: order first
    assert [t.turn_id for t in session.queue.turns()] == ["b", "c"]
    assert session.take_steered("a", 0) == [IgnoredStale("a", 0, "a request for steered messages")]
    session.queue.take_all()
    session.submit(turn("d"), QueueMode.STEER, 0.2)
    session.abort(None, 0.3)
    assert session.take_steered("a", 1) == []
    assert [t.turn_id for t in session.queue.turns()] == ["d"]


def test_every_turn_a_run_served_carries_the_run_s_whole_usage() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.COLLECT, 0.0)
    for name in "bc":
        session.submit(turn(name), QueueMode.COLLECT, 0.1)
    usage = Usage(prompt_tokens=40, completion_tokens=2)
    first = outcomes(session.run_ended("a", 1, RunReplied("A", usage=Usage(9, 1)), 1.0))
    merged = outcomes(session.run_ended("b", 2, RunReplied("BC", usage=usage), 2.0))
    assert [o.usage for o in first] == [Usage(9, 1)]
    assert [(o.turn_id, o.usage) for o in merged] == [("b", usage), ("c", usage)]
    assert merged[0].usage is not None
    assert merged[0].usage.total_tokens == 42


def test_a_failed_run_and_a_run_whose_provider_told_nothing_carry_no_usage() -> None:
    session = new_session()
    session.submit(turn("a"), QueueMode.FOLLOWUP, 0.0)
    session.submit(turn("b"), QueueMode.FOLLOWUP, 0.0)
    [failed] = outcomes(session.run_ended("a", 1, RunFailed(ErrorCode.PROVIDER_ERROR, "x"), 1.0))
    [untold] = outcomes(session.run_ended("b", 2, RunReplied("B"), 2.0))
    assert (failed.usage, untold.usage) == (None, None)
