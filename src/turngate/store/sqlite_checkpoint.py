"""WAL checkpoints in a worker thread, off the event loop.

By default SQLite checkpoints inside the COMMIT that takes its write-ahead log past 1,000
pages: that commit copies the pages back into the database file and syncs it, on the event
loop, and every client waits (about one turn in 90 took 4 to 6 ms instead of 1). A gateway
turns that off (``PRAGMA wal_autocheckpoint=0``) and has :class:`BackgroundCheckpoints` run a
passive checkpoint on a connection of its own, in a worker thread, once enough rows changed
since the last one. A passive checkpoint never blocks a writer, and a writer never waits for
it: commits go on while it copies.

The simulator and the tests that drive a store on one thread keep SQLite's own checkpoints
(:class:`InlineCheckpoints`): a thread would make a seed's replay depend on timing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Literal

log = logging.getLogger("turngate.store")

CheckpointMode = Literal["inline", "background"]
"""Where WAL checkpoints run: in SQLite's commits, or in a worker thread."""

CHECKPOINT_ROWS = 2_000
"""Rows changed between two background checkpoints: about 200 turns, some 1,000 WAL pages
(SQLite's own default interval)."""
CLOSE_WAIT_S = 30.0
"""How long closing the store waits for a checkpoint under way."""


class InlineCheckpoints:
    """SQLite's own checkpoints, in the commit that needs one."""

    def configure(self, db: sqlite3.Connection) -> None:
        """Nothing to change."""

    def committed(self, db: sqlite3.Connection) -> None:
        """Nothing to do: SQLite checkpointed in the commit if it was time."""

    async def close(self) -> None:
        """Nothing to wait for."""


class BackgroundCheckpoints:
    """Passive checkpoints of the database at ``path`` in a worker thread, one at a time,
    each once :data:`CHECKPOINT_ROWS` rows changed since the previous one."""

    def __init__(self, path: Path, rows_between: int = CHECKPOINT_ROWS) -> None:
        self.path = path
        self._rows_between = rows_between
        self._changes_at_last = 0
        self._running: asyncio.Future[None] | None = None
        self._db: sqlite3.Connection | None = None
        self.done = 0
        """Checkpoints completed (for tests and curiosity)."""

    def configure(self, db: sqlite3.Connection) -> None:
        """Stop ``db``'s commits from checkpointing: this object does it."""
        db.execute("PRAGMA wal_autocheckpoint=0")

    def committed(self, db: sqlite3.Connection) -> None:
        """A commit on ``db`` succeeded: start a checkpoint if it is time and none runs."""
        changes = db.total_changes
        if self._running is not None or changes - self._changes_at_last < self._rows_between:
            return
        self._changes_at_last = changes
        running = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        self._running = running
        running.add_done_callback(self._finished)

    def _checkpoint(self) -> None:
        """In a worker thread: copy what the WAL holds back into the database file."""
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _finished(self, running: asyncio.Future[None]) -> None:
        self._running = None
        if running.cancelled():
            return
        error = running.exception()
        if error is None:
            self.done += 1
            return
        # The WAL keeps growing until a checkpoint succeeds; commits still work. The next
        # attempt comes after as many changes again.
        log.warning(
            "store %s: a WAL checkpoint failed (%s); the write-ahead log grows until one succeeds",
            self.path,
            error,
            extra={"event": "checkpoint_failed"},
        )

    async def close(self) -> None:
        """Wait for the checkpoint under way (at most :data:`CLOSE_WAIT_S`), then close the
        checkpoints' connection."""
        running = self._running
        if running is not None:
            try:
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await asyncio.shield(running)
            except TimeoutError:
                log.warning("store %s: a WAL checkpoint still runs at close", self.path)
                return  # its thread still uses the connection: leave it to the process exit
            except (sqlite3.Error, OSError):
                pass  # already logged by _finished
        db, self._db = self._db, None
        if db is not None:
            db.close()


def checkpoints_for(mode: CheckpointMode, path: Path) -> InlineCheckpoints | BackgroundCheckpoints:
    """The checkpoints of a store at ``path`` in ``mode``."""
    return BackgroundCheckpoints(path) if mode == "background" else InlineCheckpoints()
