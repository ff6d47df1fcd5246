"""A disk that refuses writes: the SQLite store never acknowledges what it did not write,
never leaves a writer waiting, and works again by itself when the disk does."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from turngate.core.turn import TurnState
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
