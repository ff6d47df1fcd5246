"""The default store: one SQLite file in the state directory, in WAL mode.

Calls run on the event loop's thread, synchronously. Each is one short transaction on a local
file (tens of microseconds), far cheaper than a hop to a worker thread, and it keeps the
runtime deterministic under the simulator's loop. ``synchronous=NORMAL`` in WAL mode survives
a crash of the gateway process (what invariant I7 is about); ``durability="full"`` also
survives power loss, at the cost of an fsync per commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, StaleEpochError, StoreError
from turngate.store.base import CronJobState, SessionRecord, TranscriptEntry, TurnRecord
from turngate.types import Epoch, RunId, TurnId, WallS

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_run_id TEXT,
    lease_granted_wall REAL,
    created_wall REAL NOT NULL,
    updated_wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    message TEXT NOT NULL,
    queue_mode TEXT NOT NULL,
    state TEXT NOT NULL,
    accepted_wall REAL NOT NULL,
    timeout_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    epoch INTEGER,
    started_wall REAL,
    ended_wall REAL,
    reply TEXT,
    error_code TEXT,
    error_message TEXT,
    lane TEXT NOT NULL DEFAULT 'direct',
    delivery TEXT
);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns(session_key, seq);
CREATE INDEX IF NOT EXISTS turns_open ON turns(state)
    WHERE state IN ('accepted', 'queued', 'running');
CREATE TABLE IF NOT EXISTS transcript (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at_wall REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transcript_by_session ON transcript(session_key, seq);
CREATE TABLE IF NOT EXISTS cron_jobs (
    job_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_fire_wall REAL NOT NULL,
    last_fire_wall REAL
);
"""

_TURN_COLUMNS = (
    "turn_id, session_key, message, queue_mode, state, accepted_wall, timeout_s, seq, attempts,"
    " run_id, epoch, started_wall, ended_wall, reply, error_code, error_message, lane, delivery"
)
_OPEN_STATES = ("accepted", "queued", "running")


class SqliteStore:
    """The :class:`~turngate.store.base.Store` on one SQLite file."""

    def __init__(self, path: Path, *, durability: Literal["normal", "full"] = "normal") -> None:
        self.path = path
        self._durability = durability
        self._db: sqlite3.Connection | None = None
        self._commit_waiters: list[asyncio.Future[None]] = []

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path}: used before open() or after close()")
        return self._db

    @contextmanager
    def _op(self) -> Iterator[sqlite3.Connection]:
        """One atomic operation inside the current group transaction (a savepoint)."""
        db = self.db
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_soon(self._commit)
        db.execute("SAVEPOINT op")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
            raise
        db.execute("RELEASE op")

    async def _durable(self) -> None:
        """Return once everything written so far is committed (group commit)."""
        if self._db is None or not self._db.in_transaction:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._commit_waiters.append(waiter)
        await waiter

    def _commit(self) -> None:
        waiters, self._commit_waiters = self._commit_waiters, []
        error: BaseException | None = None
        db = self._db
        if db is not None and db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                error = StoreError(f"store {self.path}: commit failed ({exc})")
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot open ({exc})") from exc
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._durability.upper()}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"store {self.path}: schema version {version} is newer than this turngate"
                f" understands ({SCHEMA_VERSION})"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db

    async def close(self) -> None:
        self._commit()
        if self._db is not None:
            self._db.close()
            self._db = None

    def abandon(self) -> None:
        """Drop the connection as a killed process would: uncommitted writes are lost, and
        whoever waits for them gets an error instead of an acknowledgement. For crash
        simulation only."""
        db, self._db = self._db, None
        waiters, self._commit_waiters = self._commit_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(StoreError(f"store {self.path}: the process went away"))
        if db is not None:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()

    # -- turns ----------------------------------------------------------------------------

    async def accept_turn(self, record: TurnRecord) -> TurnRecord | None:
        with self._op() as db:
            row = db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE turn_id = ?", (record.turn_id,)
            ).fetchone()
            if row is not None:
                existing: TurnRecord | None = self._turn(row)
            else:
                existing = None
                db.execute(
                    "INSERT INTO sessions (key, agent_id, created_wall, updated_wall)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET updated_wall = excluded.updated_wall",
                    (
                        record.session_key,
                        record.agent_id,
                        record.accepted_wall,
                        record.accepted_wall,
                    ),
                )
                db.execute(
                    "INSERT INTO turns (turn_id, session_key, message, queue_mode, state,"
                    " accepted_wall, timeout_s, lane) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.turn_id,
                        record.session_key,
                        record.message,
                        record.queue_mode,
                        TurnState.ACCEPTED.value,
                        record.accepted_wall,
                        record.timeout_s,
                        record.lane,
                    ),
                )
        await self._durable()
        return existing

    async def get_turn(self, turn_id: TurnId) -> TurnRecord | None:
        row = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE turn_id = ?", (turn_id,)
        ).fetchone()
        return None if row is None else self._turn(row)

    async def mark_queued(self, turn_ids: Sequence[TurnId]) -> None:
        with self._op() as db:
            db.executemany(
                "UPDATE turns SET state = 'queued' WHERE turn_id = ? AND state = 'accepted'",
                [(turn_id,) for turn_id in turn_ids],
            )
        await self._durable()

    async def session_epoch(self, session_key: str) -> Epoch:
        row = self.db.execute("SELECT epoch FROM sessions WHERE key = ?", (session_key,)).fetchone()
        return 0 if row is None else int(row[0])

    async def start_run(
        self, session_key: str, run_id: RunId, epoch: Epoch, turn_ids: Sequence[TurnId], at: WallS
    ) -> None:
        with self._op() as db:
            taken = db.execute(
                "UPDATE sessions SET epoch = ?, lease_run_id = ?, lease_granted_wall = ?,"
                " updated_wall = ? WHERE key = ? AND epoch = ? AND lease_run_id IS NULL",
                (epoch, run_id, at, at, session_key, epoch - 1),
            ).rowcount
            if taken != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            db.executemany(
                "UPDATE turns SET state = 'running', run_id = ?, epoch = ?, started_wall = ?"
                " WHERE turn_id = ? AND state IN ('accepted', 'queued')",
                [(run_id, epoch, at, turn_id) for turn_id in turn_ids],
            )
        await self._durable()

    async def join_run(
        self, session_key: str, turn_id: TurnId, run_id: RunId, epoch: Epoch, at: WallS
    ) -> None:
        with self._op() as db:
            holds = db.execute(
                "SELECT 1 FROM sessions WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (session_key, run_id, epoch),
            ).fetchone()
            if holds is None:
                raise StaleEpochError(session_key, run_id, epoch)
            db.execute(
                "UPDATE turns SET state = 'running', run_id = ?, epoch = ?, started_wall = ?"
                " WHERE turn_id = ? AND state IN ('accepted', 'queued')",
                (run_id, epoch, at, turn_id),
            )
        await self._durable()

    async def end_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[tuple[str, str]],
        at: WallS,
    ) -> None:
        with self._op() as db:
            released = db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL,"
                " updated_wall = ? WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (at, session_key, run_id, epoch),
            ).rowcount
            if released != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            db.executemany(
                "INSERT INTO transcript (session_key, role, text, run_id, epoch, at_wall)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(session_key, role, text, run_id, epoch, at) for role, text in exchange],
            )
            self._record_outcomes(db, outcomes, at)
        await self._durable()

    async def end_turns(self, outcomes: Sequence[Outcome], at: WallS) -> None:
        with self._op() as db:
            self._record_outcomes(db, outcomes, at)
        await self._durable()

    @staticmethod
    def _record_outcomes(db: sqlite3.Connection, outcomes: Sequence[Outcome], at: WallS) -> None:
        db.executemany(
            "UPDATE turns SET state = ?, run_id = ?, reply = ?, error_code = ?,"
            " error_message = ?, ended_wall = ?"
            " WHERE turn_id = ? AND state IN ('accepted', 'queued', 'running')",
            [
                (
                    o.state.value,
                    o.run_id,
                    o.reply,
                    None if o.code is None else o.code.value,
                    o.message or None,
                    at,
                    o.turn_id,
                )
                for o in outcomes
            ],
        )

    async def recover(self) -> list[TurnRecord]:
        with self._op() as db:
            db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL"
                " WHERE lease_run_id IS NOT NULL"
            )
            db.execute(
                "UPDATE turns SET state = 'queued', attempts = attempts + 1, run_id = NULL,"
                " epoch = NULL, started_wall = NULL WHERE state = 'running'"
            )
            rows = db.execute(
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE state IN (?, ?, ?) ORDER BY seq",
                _OPEN_STATES,
            ).fetchall()
        await self._durable()
        return [self._turn(row) for row in rows]

    async def set_delivery(self, turn_id: TurnId, delivery: str) -> None:
        with self._op() as db:
            db.execute("UPDATE turns SET delivery = ? WHERE turn_id = ?", (delivery, turn_id))
        await self._durable()

    async def cron_jobs(self) -> list[CronJobState]:
        rows = self.db.execute(
            "SELECT job_id, agent_id, schedule, next_fire_wall, last_fire_wall FROM cron_jobs"
            " ORDER BY job_id"
        ).fetchall()
        return [CronJobState(*row) for row in rows]

    async def save_cron_job(self, state: CronJobState) -> None:
        with self._op() as db:
            db.execute(
                "INSERT INTO cron_jobs (job_id, agent_id, schedule, next_fire_wall,"
                " last_fire_wall) VALUES (?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET"
                " agent_id = excluded.agent_id, schedule = excluded.schedule,"
                " next_fire_wall = excluded.next_fire_wall,"
                " last_fire_wall = excluded.last_fire_wall",
                (
                    state.job_id,
                    state.agent_id,
                    state.schedule,
                    state.next_fire_wall,
                    state.last_fire_wall,
                ),
            )
        await self._durable()

    # -- reading --------------------------------------------------------------------------

    async def transcript(self, session_key: str, limit: int) -> list[TranscriptEntry]:
        rows = self.db.execute(
            "SELECT seq, session_key, role, text, run_id, epoch, at_wall FROM transcript"
            " WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        ).fetchall()
        return [TranscriptEntry(*row) for row in reversed(rows)]

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        rows = self.db.execute(
            f"{_SESSION_SELECT} ORDER BY s.updated_wall DESC, s.key LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        return [SessionRecord(*row) for row in rows]

    async def session(self, session_key: str) -> SessionRecord | None:
        row = self.db.execute(f"{_SESSION_SELECT} WHERE s.key = ?", (session_key,)).fetchone()
        return None if row is None else SessionRecord(*row)

    async def session_turns(self, session_key: str, limit: int) -> list[TurnRecord]:
        rows = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        ).fetchall()
        return [self._turn(row) for row in reversed(rows)]

    async def count_sessions(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    @staticmethod
    def _turn(row: tuple[Any, ...]) -> TurnRecord:
        (
            turn_id,
            session_key,
            message,
            queue_mode,
            state,
            accepted_wall,
            timeout_s,
            seq,
            attempts,
            run_id,
            epoch,
            started_wall,
            ended_wall,
            reply,
            error_code,
            error_message,
            lane,
            delivery,
        ) = row
        return TurnRecord(
            turn_id=str(turn_id),
            session_key=str(session_key),
            agent_id=str(session_key).split(":", 2)[1],
            message=str(message),
            queue_mode=str(queue_mode),
            state=TurnState(state),
            accepted_wall=float(accepted_wall),
            timeout_s=float(timeout_s),
            seq=int(seq),
            attempts=int(attempts),
            run_id=None if run_id is None else str(run_id),
            epoch=None if epoch is None else int(epoch),
            started_wall=None if started_wall is None else float(started_wall),
            ended_wall=None if ended_wall is None else float(ended_wall),
            reply=None if reply is None else str(reply),
            error_code=None if error_code is None else ErrorCode(error_code),
            error_message=None if error_message is None else str(error_message),
            lane=str(lane),
            delivery=None if delivery is None else str(delivery),
        )


_SESSION_SELECT = (
    "SELECT s.key, s.agent_id, s.epoch, s.lease_run_id, s.lease_granted_wall, s.created_wall,"
    " s.updated_wall,"
    " (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key),"
    " (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key"
    "  AND t.state IN ('accepted', 'queued', 'running'))"
    " FROM sessions s"
)
