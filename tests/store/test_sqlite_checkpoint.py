"""A gateway's SQLite store copies its write-ahead log back into the database file in a
worker thread, never in a commit on the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from turngate.core.turn import TurnState
from turngate.store.base import TurnRecord
from turngate.store.sqlite import SqliteStore
from turngate.store.sqlite_checkpoint import CHECKPOINT_ROWS, BackgroundCheckpoints

WAIT_S = 30.0
BATCH = CHECKPOINT_ROWS // 2
"""Accepts in one commit: each changes two rows (its session, its turn)."""


def turn(n: int) -> TurnRecord:
    return TurnRecord(
        f"t{n}", f"agent:main:s{n % 7}", "main", "hi", "followup", TurnState.ACCEPTED, 0.0, 60.0
    )


def test_checkpoints_run_in_a_worker_thread_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "turngate.db"
    threads: list[int] = []
    checkpoint = BackgroundCheckpoints._checkpoint

    def recorded(self: BackgroundCheckpoints) -> None:
        threads.append(threading.get_ident())
        checkpoint(self)

    async def main() -> int:
        store = SqliteStore(path, checkpoints="background")
        await store.open()
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        async with asyncio.timeout(WAIT_S):
            for batch in range(3):
                await asyncio.gather(
                    *(store.accept_turn(turn(n)) for n in range(batch * BATCH, (batch + 1) * BATCH))
                )
            await store.close()  # waits for the checkpoint under way
        checkpoints = store._checkpoints
        assert isinstance(checkpoints, BackgroundCheckpoints)
        return checkpoints.done

    BackgroundCheckpoints._checkpoint = recorded  # type: ignore[method-assign]
    try:
        done = asyncio.run(main())
    finally:
        BackgroundCheckpoints._checkpoint = checkpoint  # type: ignore[method-assign]
    assert done >= 1
    assert threads
    assert threading.get_ident() not in threads

    async def count() -> int:
        reader = SqliteStore(path, readonly=True)
        await reader.open()
        try:
            return int(reader.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0])
        finally:
            await reader.close()

    assert asyncio.run(count()) == 3 * BATCH


def test_the_simulators_store_keeps_sqlites_own_checkpoints(tmp_path: Path) -> None:
    async def main() -> int:
        store = SqliteStore(tmp_path / "turngate.db")
        await store.open()
        try:
            return int(store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        finally:
            await store.close()

    assert asyncio.run(main()) == 1000
