"""Typed transcript entries in the SQLite file: written with a run's end and read back as they
were, tool calls and results included; a row that makes no valid entry is a store error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.core.turn import Outcome, TurnState
from turngate.errors import StoreError
from turngate.store.base import TurnRecord
from turngate.store.sqlite import SqliteStore

KEY = "agent:main:main"

EXCHANGE = (
    TranscriptItem.user("plan a trip"),
    TranscriptItem.calls(
        [
            ToolCall("c1", "weather", '{"city": "Lisbon"}'),
            ToolCall("c2", "flights", '{"to": "LIS", "cut off'),  # not JSON: kept verbatim
        ]
    ),
    TranscriptItem.tool_result("c1", "weather", "sunny, 24°C"),
    TranscriptItem.tool_result("c2", "flights", "arguments are not JSON", is_error=True),
    TranscriptItem.assistant("Lisbon is sunny."),
)


async def replied_with(path: Path, exchange: tuple[TranscriptItem, ...]) -> SqliteStore:
    """An open store at ``path`` where one turn replied with ``exchange``."""
    store = SqliteStore(path)
    await store.open()
    record = TurnRecord("t1", KEY, "main", "plan a trip", "followup", TurnState.ACCEPTED, 0.0, 60)
    await store.accept_turn(record)
    await store.start_run(KEY, "t1", 1, ["t1"], at=1.0)
    outcome = Outcome("t1", TurnState.REPLIED, "t1", reply="Lisbon is sunny.")
    await store.end_run(KEY, "t1", 1, [outcome], exchange, at=2.0)
    return store


@pytest.mark.asyncio
async def test_tool_calls_and_results_read_back_as_they_were_written(tmp_path: Path) -> None:
    store = await replied_with(tmp_path / "turngate.db", EXCHANGE)
    try:
        written = await store.transcript(KEY, 10)
        last_two = await store.transcript(KEY, 2)
    finally:
        await store.close()
    assert tuple(e.item for e in written) == EXCHANGE
    assert [e.kind for e in written] == [
        "user",
        "tool_calls",
        "tool_result",
        "tool_result",
        "assistant",
    ]
    assert {(e.run_id, e.epoch, e.at_wall) for e in written} == {("t1", 1, 2.0)}
    assert [e.item for e in last_two] == list(EXCHANGE[3:])
    # Read-only, as the sessions commands read it: the same entries.
    reader = SqliteStore(tmp_path / "turngate.db", readonly=True)
    await reader.open()
    try:
        assert await reader.transcript(KEY, 10) == written
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_each_kind_is_stored_with_the_role_an_sql_reader_expects(tmp_path: Path) -> None:
    store = await replied_with(tmp_path / "turngate.db", EXCHANGE)
    await store.close()
    db = sqlite3.connect(tmp_path / "turngate.db")
    try:
        roles = [row[0] for row in db.execute("SELECT role FROM transcript ORDER BY seq")]
    finally:
        db.close()
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]


@pytest.mark.asyncio
async def test_a_row_that_makes_no_valid_entry_is_a_store_error_naming_it(tmp_path: Path) -> None:
    store = await replied_with(tmp_path / "turngate.db", EXCHANGE)
    try:
        store.db.execute("UPDATE transcript SET data = '{}' WHERE kind = 'tool_result'")
        with pytest.raises(StoreError) as caught:
            await store.transcript(KEY, 10)
    finally:
        await store.close()
    assert caught.value.message.startswith(f"session {KEY}: transcript entry #3 cannot be read")
