"""A run's tool steps in the store: written as they happen and fenced, every call closed by
the run's end or by the claim that takes its session over after a crash, and read back for a
resumed run."""

from __future__ import annotations

import pytest
import pytest_asyncio

from turngate.core.transcript import ToolCall, TranscriptItem, unanswered_calls
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, StaleEpochError
from turngate.store.base import INTERRUPTED_CALL_RESULT, Store, TurnRecord

KEY = "agent:main:main"
CALLS = TranscriptItem.calls([ToolCall("c1", "search", "{}"), ToolCall("c2", "fetch", "{}")])


def record(turn_id: str, message: str = "hi") -> TurnRecord:
    return TurnRecord(turn_id, KEY, "main", message, "followup", TurnState.ACCEPTED, 0.0, 60.0)


@pytest_asyncio.fixture
async def store(backend_store: Store) -> Store:
    await backend_store.accept_turn(record("a", "look it up"))
    await backend_store.start_run(KEY, "a", 1, ["a"], at=1.0)
    return backend_store


async def kinds_and_texts(store: Store) -> list[tuple[str, str]]:
    return [(e.kind.value, e.text) for e in await store.transcript(KEY, 100)]


@pytest.mark.asyncio
async def test_steps_are_written_by_the_holder_only(store: Store) -> None:
    await store.write_steps(KEY, "a", 1, [TranscriptItem.user("look it up", "a"), CALLS], at=2.0)
    for run_id, epoch in (("a", 2), ("x", 1)):
        with pytest.raises(StaleEpochError):
            await store.write_steps(KEY, run_id, epoch, [TranscriptItem.assistant("no")], at=3.0)
    entries = await store.transcript(KEY, 100)
    assert [e.item for e in entries] == [TranscriptItem.user("look it up", "a"), CALLS]
    assert entries[0].item.turn_id == "a"


@pytest.mark.asyncio
async def test_a_run_that_ends_without_replying_closes_its_open_calls_and_only_those(
    store: Store,
) -> None:
    await store.write_steps(KEY, "a", 1, [TranscriptItem.user("look it up", "a"), CALLS], at=2.0)
    done = TranscriptItem.tool_result("c1", "search", "found")
    await store.write_steps(KEY, "a", 1, [done], at=3.0)
    aborted = Outcome("a", TurnState.ABORTED, "a", code=ErrorCode.USER_ABORT, message="aborted")
    await store.end_run(KEY, "a", 1, [aborted], [], at=4.0, unanswered="cancelled")
    entries = await store.transcript(KEY, 100)
    assert [(e.kind.value, e.text, e.item.is_error) for e in entries[2:]] == [
        ("tool_result", "found", False),
        ("tool_result", "cancelled", True),
    ]
    assert entries[3].item.call_id == "c2"
    assert unanswered_calls([e.item for e in entries]) == []


@pytest.mark.asyncio
async def test_a_claim_taking_the_session_over_closes_the_calls_of_the_run_it_interrupted(
    store: Store,
) -> None:
    await store.accept_turn(record("b", "and this"))
    await store.join_run(KEY, "b", "a", 1, at=1.5)
    await store.write_steps(KEY, "a", 1, [TranscriptItem.user("look it up", "a"), CALLS], at=2.0)
    claimed = await store.claim_session(KEY, "local", at=9.0, ttl_s=10.0)
    # The turns of the interrupted run come back with that run's id, to resume as one.
    assert [(r.turn_id, r.state, r.attempts, r.run_id) for r in claimed.open_turns] == [
        ("a", TurnState.QUEUED, 1, "a"),
        ("b", TurnState.QUEUED, 1, "a"),
    ]
    # Stored so too: a holder stopping before they run again leaves them one batch still.
    again = await store.claim_session(KEY, "local", at=9.5, ttl_s=10.0)
    assert [(r.turn_id, r.attempts, r.run_id) for r in again.open_turns] == [
        ("a", 1, "a"),
        ("b", 1, "a"),
    ]
    entries = await store.transcript(KEY, 100)
    assert [(e.text, e.item.call_id, e.at_wall) for e in entries[2:]] == [
        (INTERRUPTED_CALL_RESULT, "c1", 9.0),
        (INTERRUPTED_CALL_RESULT, "c2", 9.0),
    ]
    await store.claim_session(KEY, "local", at=10.0, ttl_s=10.0)
    assert len(await store.transcript(KEY, 100)) == len(entries)  # nothing more to close


@pytest.mark.asyncio
async def test_a_resumed_run_reads_the_transcript_from_its_first_message(
    store: Store,
) -> None:
    await store.end_run(
        KEY,
        "a",
        1,
        [Outcome("a", TurnState.REPLIED, "a", reply="ok")],
        [TranscriptItem.user("look it up", "a"), TranscriptItem.assistant("ok")],
        at=2.0,
    )
    await store.accept_turn(record("b", "next"))
    await store.start_run(KEY, "b", 2, ["b"], at=3.0)
    await store.write_steps(KEY, "b", 2, [TranscriptItem.user("next", "b"), CALLS], at=4.0)
    since = await store.since_messages(KEY, ["b", "zz"], 100)
    assert [e.item for e in since] == [TranscriptItem.user("next", "b"), CALLS]
    assert await store.since_messages(KEY, ["zz"], 100) == []
    assert len(await store.since_messages(KEY, ["a"], 3)) == 3
