"""The checks of the simulator's checker on hand-made events and stores: lease terms, zombies,
a turn's ending written whole, and several gateway processes on one store."""

from __future__ import annotations

import pytest

from turngate.core.queue import QueueMode
from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.core.turn import TurnState
from turngate.errors import ErrorCode
from turngate.runtime.events import Event, EventKind
from turngate.sim.checkers import Checker, ClusterCheck, LeaseCheck
from turngate.sim.workload import ClientRecord, ClientTurn
from turngate.store.base import INTERRUPTED_CALL_RESULT, SessionClaim, TranscriptEntry, TurnRecord
from turngate.types import Epoch, RunId, TurnId, WallS

KEY = "agent:sim:main"
RUN = "t1"
STALL_S = 5.0
RUN_TIMEOUT_S = 20.0
GRACE_S = 1.0


def checker(turn_deadline: float | None = None) -> Checker:
    def deadline_of(turn_ids: list[str]) -> float | None:
        return turn_deadline

    def lease_of(session_key: str) -> tuple[str | None, int]:
        return None, 0

    terms = LeaseCheck(STALL_S, RUN_TIMEOUT_S, deadline_of)
    return Checker(GRACE_S, lease_of, 0.0, lease=terms)


def feed(check: Checker, *events: tuple[float, EventKind, ErrorCode | None]) -> list[str]:
    for at, kind, code in events:
        check.on_event(Event(kind, at, KEY, run_id=RUN, epoch=1, code=code))
    return [violation.line() for violation in check.violations]


def test_progress_just_before_each_stall_keeps_a_run_within_its_lease() -> None:
    lines = feed(
        checker(),
        (0.0, EventKind.LEASE_ACQUIRED, None),
        (4.99, EventKind.PROGRESS, None),
        (9.98, EventKind.PROGRESS, None),
        (14.97, EventKind.RUN_EXITED, None),
    )
    assert lines == []


def test_a_run_still_alive_past_its_stall_deadline_outlives_its_lease() -> None:
    # Its turn's deadline ended it, as run_timeout: on time for that, late for the stall.
    lines = feed(
        checker(turn_deadline=9.0),
        (0.0, EventKind.LEASE_ACQUIRED, None),
        (2.0, EventKind.PROGRESS, None),
        (9.0, EventKind.CANCEL_REQUESTED, ErrorCode.RUN_TIMEOUT),
    )
    assert len(lines) == 1
    assert lines[0].startswith("I4 at t=9.000000")
    assert "outlived its lease: due at t=7.000000 (stall_timeout" in lines[0]


def test_a_streaming_run_past_its_run_timeout_outlives_its_lease() -> None:
    events = [(0.0, EventKind.LEASE_ACQUIRED, None)]
    events += [(at, EventKind.PROGRESS, None) for at in (4.0, 8.0, 12.0, 16.0, 20.0, 24.0)]
    lines = feed(checker(), *events)
    assert len(lines) == 1
    assert "due at t=20.000000 (run_timeout" in lines[0]


def test_a_stall_abort_before_the_stall_deadline_is_early() -> None:
    lines = feed(
        checker(),
        (0.0, EventKind.LEASE_ACQUIRED, None),
        (3.0, EventKind.PROGRESS, None),
        (6.0, EventKind.CANCEL_REQUESTED, ErrorCode.STALLED),
    )
    assert len(lines) == 1
    assert "aborted as stalled 2.000s before its lease expired" in lines[0]


def test_a_run_timeout_at_the_turn_deadline_is_on_time() -> None:
    events = (
        (0.0, EventKind.LEASE_ACQUIRED, None),
        (4.0, EventKind.PROGRESS, None),
        (6.0, EventKind.CANCEL_REQUESTED, ErrorCode.RUN_TIMEOUT),
    )
    assert feed(checker(turn_deadline=6.0), *events) == []
    assert len(feed(checker(turn_deadline=None), *events)) == 1


def test_a_cancelled_run_alive_past_its_grace_without_a_fence_is_late() -> None:
    lines = feed(
        checker(),
        (0.0, EventKind.LEASE_ACQUIRED, None),
        (5.0, EventKind.CANCEL_REQUESTED, ErrorCode.STALLED),
        (7.0, EventKind.RUN_EXITED, None),
    )
    assert len(lines) == 1
    assert "exited 1.000s after its abort grace ran out" in lines[0]


def test_a_zombie_write_must_be_refused() -> None:
    check = checker()
    check.zombie_write(1.0, KEY, "paused owner", refused=True)
    assert (check.zombie_refused, check.violations) == (1, [])
    check.zombie_write(2.0, KEY, "second process", refused=False)
    assert [violation.invariant for violation in check.violations] == ["I6"]


# -- the store at the end: a turn's ending written whole (issue 11, class 4) ----------------

REPLY = "sim: hello"


def turn(state: TurnState = TurnState.REPLIED, ended_at: float = 2.0) -> TurnRecord:
    replied = state is TurnState.REPLIED
    return TurnRecord(
        TurnId(RUN),
        KEY,
        "sim",
        "hello",
        "followup",
        state,
        WallS(0.0),
        60.0,
        seq=1,
        run_id=RunId(RUN),
        epoch=Epoch(1),
        ended_wall=WallS(ended_at),
        reply=REPLY if replied else None,
    )


HELLO = TranscriptItem.user("hello", RUN)
ANSWER = TranscriptItem.assistant(REPLY)


def entry(seq: int, item: TranscriptItem) -> TranscriptEntry:
    return TranscriptEntry(seq, KEY, item, RunId(RUN), Epoch(1), WallS(2.0))


def finish(stored: TurnRecord, *entries: TranscriptEntry) -> list[str]:
    check = checker()
    feed(
        check,
        (1.0, EventKind.LEASE_ACQUIRED, None),
        (2.0, EventKind.LEASE_RELEASED, None),
        (2.0, EventKind.RUN_EXITED, None),
    )
    check.finish(ClientRecord(), {stored.turn_id: stored}, list(entries), 0, 10.0)
    return [violation.line() for violation in check.violations]


def test_a_replied_turn_with_its_message_and_reply_is_whole() -> None:
    assert finish(turn(), entry(1, HELLO), entry(2, ANSWER)) == []


def test_tool_calls_and_results_are_neither_a_turns_message_nor_its_reply() -> None:
    call = ToolCall("c1", "search", '{"q": "hello"}')
    lines = finish(
        turn(),
        entry(1, HELLO),
        entry(2, TranscriptItem.calls([call])),
        entry(3, TranscriptItem.tool_result("c1", "search", "hello", is_error=True)),
        entry(4, ANSWER),
    )
    assert lines == []


def test_a_replied_turn_without_its_exchange_was_not_written_whole() -> None:
    lines = finish(turn())
    assert [line[:2] for line in lines] == ["I1", "I1"]
    assert "has its message 0 times" in lines[0]
    assert "its run wrote nothing to the transcript" in lines[1]


def test_a_reply_written_twice_means_two_writers() -> None:
    lines = finish(
        turn(),
        entry(1, HELLO),
        entry(2, ANSWER),
        entry(3, ANSWER),
    )
    assert [line[:2] for line in lines] == ["I3"]
    assert "has 2 texts of that run, expected 1" in lines[0]


def test_a_reply_of_a_run_whose_turn_did_not_reply_is_an_ending_denied() -> None:
    lines = finish(turn(TurnState.FAILED), entry(1, HELLO), entry(2, ANSWER))
    assert [line[:2] for line in lines] == ["I1", "I1"]
    assert "no turn it replied to" in lines[1]


CALL = ToolCall("c1", "search", "{}")


def test_a_run_that_failed_after_calling_tools_keeps_its_steps() -> None:
    lines = finish(
        turn(TurnState.FAILED),
        entry(1, HELLO),
        entry(2, TranscriptItem.assistant("Let me look.")),
        entry(3, TranscriptItem.calls([CALL])),
        entry(4, TranscriptItem.tool_result("c1", "search", "cancelled", is_error=True)),
    )
    assert lines == []


def test_a_failed_run_s_answer_is_an_ending_denied_even_after_tool_steps() -> None:
    lines = finish(
        turn(TurnState.FAILED),
        entry(1, HELLO),
        entry(2, TranscriptItem.calls([CALL])),
        entry(3, TranscriptItem.tool_result("c1", "search", "found")),
        entry(4, ANSWER),
    )
    assert [line[:2] for line in lines] == ["I1"]
    assert "has an answer in the transcript but no turn it replied to" in lines[0]


@pytest.mark.parametrize(
    ("results", "found"),
    [
        ((), "tool call c1 has 0 results in the transcript, expected exactly 1"),
        (("a", "b"), "tool call c1 has 2 results in the transcript, expected exactly 1"),
    ],
)
def test_every_tool_call_has_exactly_one_result(results: tuple[str, ...], found: str) -> None:
    lines = finish(
        turn(TurnState.FAILED),
        entry(1, HELLO),
        entry(2, TranscriptItem.calls([CALL])),
        *(
            entry(3 + index, TranscriptItem.tool_result("c1", "search", text))
            for index, text in enumerate(results)
        ),
    )
    assert [line[:3] for line in lines] == ["I10"]
    assert found in lines[0]


def test_a_result_without_its_call_is_found() -> None:
    lines = finish(
        turn(TurnState.FAILED),
        entry(1, HELLO),
        entry(2, TranscriptItem.tool_result("c9", "search", "from nowhere")),
    )
    assert [line[:3] for line in lines] == ["I1 ", "I10"]
    assert "a result of tool call c9 with no call before it" in lines[1]


def test_the_result_recovery_wrote_after_the_run_held_the_session_is_not_a_stale_write() -> None:
    late = TranscriptEntry(
        4,
        KEY,
        TranscriptItem.tool_result("c1", "search", INTERRUPTED_CALL_RESULT, is_error=True),
        RunId(RUN),
        Epoch(1),
        WallS(9.0),
    )
    lines = finish(
        turn(TurnState.FAILED),
        entry(1, HELLO),
        entry(2, TranscriptItem.calls([CALL])),
        late,
    )
    assert lines == []


def acked_and_crashed(*, after_commit: bool) -> list[str]:
    """A turn whose end was committed at t=2, when the gateway crashed: no ``ended`` event;
    its client learned the outcome from the store after the restart."""
    check = checker()
    feed(check, (1.0, EventKind.LEASE_ACQUIRED, None))
    check.crashed(2.0, after_commit=after_commit)
    check.new_life(2)
    stored = turn()
    record = ClientRecord()
    record.acked[RUN] = ClientTurn(RUN, KEY, "hello", QueueMode.FOLLOWUP)
    outcome = stored.outcome()
    assert outcome is not None
    record.outcomes[RUN] = outcome
    transcript = [entry(1, HELLO), entry(2, ANSWER)]
    check.finish(record, {stored.turn_id: stored}, transcript, 0, 10.0)
    return [violation.line() for violation in check.violations]


def test_a_turn_ended_by_the_commit_a_crash_followed_is_told_after_the_restart() -> None:
    assert acked_and_crashed(after_commit=True) == []
    # A crash at a time drawn in advance comes when every task is blocked: never between a
    # commit and its writers, so a turn it ended unseen is a turn ended without its event.
    assert [line[:2] for line in acked_and_crashed(after_commit=False)] == ["I1"]


# -- several gateway processes on one store ---------------------------------------------------

CLAIM_TTL_S = 6.0


class CutOff:
    """Process p2 was cut off from the store from t=10 to t=20; nothing else happened."""

    def blocked(self, process: str, at: float, slack_s: float) -> bool:
        return process == "p2" and 10.0 <= at <= 20.0 + slack_s

    def delays(self, at: float, slack_s: float) -> bool:
        return False


def cluster_checker() -> Checker:
    def lease_of(session_key: str) -> tuple[str | None, int]:
        return None, 0

    return Checker(GRACE_S, lease_of, 0.0, cluster=ClusterCheck(CLAIM_TTL_S, CutOff()))


def claim(holder: str | None, expires: float) -> SessionClaim:
    return SessionClaim(KEY, holder, WallS(expires), Epoch(0))


def event(
    check: Checker, at: float, kind: EventKind, process: str, epoch: int = 1, run: str = RUN
) -> None:
    check.on_event(Event(kind, at, KEY, run_id=run, epoch=epoch), process)


def ended(check: Checker, turns: dict[str, TurnRecord] | None = None) -> list[str]:
    check.finish(ClientRecord(), turns or {}, [], check.abnormal, 100.0)
    return [violation.line() for violation in check.violations]


def test_a_process_that_lost_its_session_has_its_late_writes_refused_as_it_should() -> None:
    check = cluster_checker()
    check.session_taken(0.0, KEY, "p2", None)
    event(check, 1.0, EventKind.LEASE_ACQUIRED, "p2")
    # p2 was cut off; its claim ran out at t=16 and p1 took the session at t=17. p2's end
    # was refused in the same tick, heard before p1 heard that its take committed.
    event(check, 17.0, EventKind.STALE_WRITE_REFUSED, "p2")
    check.session_taken(17.0, KEY, "p1", claim("p2", 16.0))
    event(check, 17.0, EventKind.LEASE_ACQUIRED, "p1", epoch=2)
    event(check, 21.0, EventKind.STEP_REFUSED, "p2")
    assert ended(check) == []


def test_a_write_refused_though_no_other_process_took_the_session_is_a_stale_actor() -> None:
    check = cluster_checker()
    check.session_taken(0.0, KEY, "p1", None)
    event(check, 1.0, EventKind.LEASE_ACQUIRED, "p1")
    event(check, 5.0, EventKind.STALE_WRITE_REFUSED, "p1")
    lines = ended(check)
    assert [line[:2] for line in lines] == ["I6"]
    assert "though no other process took the session since" in lines[0]


def test_a_run_started_by_a_process_that_does_not_hold_the_session_breaks_exclusion() -> None:
    check = cluster_checker()
    check.session_taken(0.0, KEY, "p1", None)
    event(check, 1.0, EventKind.LEASE_ACQUIRED, "p2")
    lines = [violation.line() for violation in check.violations]
    assert [line[:2] for line in lines] == ["I3"]
    assert "started in process p2, which does not hold the session (p1 took it" in lines[0]


def test_a_session_is_taken_only_once_its_claim_expired() -> None:
    check = cluster_checker()
    check.session_taken(3.0, KEY, "p2", claim("p1", 6.0))
    lines = [violation.line() for violation in check.violations]
    assert [line[:2] for line in lines] == ["I3"]
    assert "whose claim had not expired (it expires at t=6.000000)" in lines[0]


@pytest.mark.parametrize(
    ("holder", "expired", "fine"),
    [
        ("p2", 16.0, True),  # cut off from t=10: it could not renew
        ("p2", 27.0, False),  # back at t=20, it renewed, then stopped renewing
        ("p1", 16.0, False),  # never in trouble
        ("p3", 16.0, True),  # its own earlier life: a restart takes its sessions back at once
    ],
)
def test_a_session_is_taken_only_from_a_process_that_could_not_renew_its_claim(
    holder: str, expired: float, fine: bool
) -> None:
    check = cluster_checker()
    check.session_taken(expired + 1.0, KEY, "p3", claim(holder, expired))
    lines = [violation.line() for violation in check.violations]
    assert lines == [] if fine else "it stopped renewing it" in lines[0]


def started_in_p1(order: tuple[str, ...]) -> list[str]:
    """Turns t1 (accepted by p2, handed over) and t2, t3 (accepted by p1), started by p1 in
    ``order``."""
    check = cluster_checker()
    check.session_taken(0.0, KEY, "p1", None)
    for turn_id, process in (("t1", "p2"), ("t2", "p1"), ("t3", "p1")):
        check.on_event(Event(EventKind.ACCEPTED, 0.0, KEY, turn_id=turn_id), process)
    for turn_id in order:
        started = Event(EventKind.STARTED, 1.0, KEY, run_id=turn_id, turn_id=turn_id, epoch=1)
        check.on_event(started, "p1")
    turns = {
        t: TurnRecord(
            TurnId(t), KEY, "sim", t, "followup", TurnState.ABORTED, WallS(0.0), 60.0, seq
        )
        for seq, t in enumerate(("t1", "t2", "t3"), start=1)
    }
    return ended(check, turns)


def test_order_is_checked_among_the_turns_a_process_accepted_itself() -> None:
    # p1 learns of t1 at a poll, after it started t2: a turn handed over may come late.
    assert started_in_p1(("t2", "t1", "t3")) == []
    lines = started_in_p1(("t1", "t3", "t2"))
    assert [line[:2] for line in lines] == ["I2"]
    assert "process p1, life 0: turn #2 started after turn #3" in lines[0]
