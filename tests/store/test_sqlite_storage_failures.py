"""A disk that refuses writes: the SQLite store never acknowledges what it did not write,
never leaves a writer waiting, and works again by itself when the disk does."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, StorageUnavailableError
from turngate.store.base import TurnRecord
from turngate.store.sqlite import SqliteStore

KEY = "agent:main:main"
WAIT_S = 5.0
"""Upper bound on any store call here: a writer left waiting fails the test, not the run."""
BIG = "x" * 50_000
"""A message that needs new database pages."""


def turn(turn_id: str, message: str = "hi") -> TurnRecord:
    return TurnRecord(turn_id, KEY, "main", message, "followup", TurnState.ACCEPTED, 0.0, 60.0)


class CommitFails(sqlite3.Connection):
    """COMMIT fails like on a full disk (the transaction is already rolled back) while
    :attr:`failing` is set."""

    failing = False

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if sql == "COMMIT" and CommitFails.failing:
            super().execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return super().executemany(sql, parameters)


async def accept_all(store: SqliteStore, records: list[TurnRecord]) -> list[Any]:
    """Accept ``records`` in one loop iteration (one group commit); each result or error."""
    async with asyncio.timeout(WAIT_S):
        return await asyncio.gather(
            *(store.accept_turn(record) for record in records), return_exceptions=True
        )


def test_a_failed_commit_fails_every_write_of_its_group_and_nobody_waits_forever(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "turngate.db", connection_factory=CommitFails)
        await store.open()
        try:
            CommitFails.failing = True
            results = await accept_all(store, [turn("a"), turn("b"), turn("c")])
            assert all(isinstance(r, StorageUnavailableError) for r in results), results
            assert results[0].code is ErrorCode.STORAGE_UNAVAILABLE
            assert "disk is full" in results[0].message
            assert not store.health().writable
            assert "disk is full" in store.health().reason
            assert [await store.get_turn(t) for t in "abc"] == [None, None, None]

            CommitFails.failing = False
            assert await accept_all(store, [turn("a")]) == [None]
            assert store.health().writable
            stored = await store.get_turn("a")
            assert stored is not None
        finally:
            CommitFails.failing = False
            await store.close()

    asyncio.run(main())


def test_a_full_disk_mid_transaction_loses_the_whole_group_and_acknowledges_none_of_it(
    tmp_path: Path,
) -> None:
    """SQLite rolls the whole transaction back on SQLITE_FULL, so a small write that
    succeeded in the same group commit is gone too: its writer must hear so."""

    async def main() -> None:
        store = SqliteStore(tmp_path / "turngate.db")
        await store.open()
        try:
            await store.accept_turn(turn("before"))
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages}")
            small, big = await accept_all(store, [turn("small"), turn("big", BIG)])
            assert isinstance(big, StorageUnavailableError), big
            assert isinstance(small, StorageUnavailableError), small
            assert await store.get_turn("small") is None
            assert await store.get_turn("big") is None

            store.db.execute("PRAGMA max_page_count = 1073741823")
            assert await accept_all(store, [turn("small"), turn("big", BIG)]) == [None, None]
            assert await store.get_turn("big") is not None
        finally:
            await store.close()

    asyncio.run(main())


def test_the_store_reports_storage_unavailable_for_a_database_it_cannot_open(
    tmp_path: Path,
) -> None:
    (tmp_path / "turngate.db").write_bytes(b"this is not a database" * 100)

    async def main() -> None:
        store = SqliteStore(tmp_path / "turngate.db")
        with pytest.raises(StorageUnavailableError) as caught:
            await store.open()
        assert "not a database" in caught.value.message

    asyncio.run(main())


def test_a_transcript_read_after_a_lost_run_end_shows_what_the_file_holds(
    tmp_path: Path,
) -> None:
    """The store keeps recent transcript tails in memory; a run's end whose commit failed
    must not be in them, or the next run would tell its model of an exchange that never
    happened."""

    async def main() -> None:
        path = tmp_path / "turngate.db"
        store = SqliteStore(path, connection_factory=CommitFails)
        await store.open()
        try:
            said = [TranscriptItem.user("hi", "t1"), TranscriptItem.assistant("echo: hi")]
            await ended_run(store, "t1", "r1", said)
            assert [e.text for e in await store.transcript(KEY, 40)] == ["hi", "echo: hi"]

            lost = [TranscriptItem.user("again", "t2"), TranscriptItem.assistant("echo: again")]
            with pytest.raises(StorageUnavailableError):
                await ended_run(store, "t2", "r2", lost, end_fails=True)

            kept = [(e.seq, e.text) for e in await store.transcript(KEY, 40)]
            assert kept == [(1, "hi"), (2, "echo: hi")]
            reader = SqliteStore(path, readonly=True)
            await reader.open()
            try:
                assert [(e.seq, e.text) for e in await reader.transcript(KEY, 40)] == kept
            finally:
                await reader.close()
        finally:
            CommitFails.failing = False
            await store.close()

    asyncio.run(main())


async def ended_run(
    store: SqliteStore,
    turn_id: str,
    run_id: str,
    exchange: list[TranscriptItem],
    *,
    end_fails: bool = False,
) -> None:
    """Accept ``turn_id``, run it as ``run_id`` and end it replied with ``exchange`` (the
    end's commit failing if ``end_fails``)."""
    async with asyncio.timeout(WAIT_S):
        await store.accept_turn(turn(turn_id))
        epoch = await store.session_epoch(KEY) + 1
        await store.start_run(KEY, run_id, epoch, [turn_id], 1.0)
        reply = Outcome(turn_id, TurnState.REPLIED, run_id=run_id, reply=exchange[-1].text)
        CommitFails.failing = end_fails
        try:
            await store.end_run(KEY, run_id, epoch, [reply], exchange, 2.0)
        finally:
            CommitFails.failing = False
