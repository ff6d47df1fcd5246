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
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from turngate.core.turn import Outcome, TurnState, Usage
from turngate.errors import (
    ErrorCode,
    StaleEpochError,
    StateDirError,
    StorageUnavailableError,
    StoreError,
)
from turngate.store.base import (
    CronJobState,
    SessionRecord,
    StoreHealth,
    TranscriptEntry,
    TurnRecord,
)
from turngate.types import Epoch, RunId, TurnId, WallS

SCHEMA_VERSION = 2
"""The schema this code writes, kept in ``PRAGMA user_version``. 1: the first. 2: ``turns``
gains ``prompt_tokens`` and ``completion_tokens`` (null when the provider reported no usage,
and for turns recorded before). Opening a version-1 file for writing adds them; a read-only
open reads a version-1 file as it is, each turn's usage unknown."""

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
    delivery TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
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
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cron_jobs (
    job_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_fire_wall REAL NOT NULL,
    last_fire_wall REAL
);
"""

_TURN_COLUMNS_V1 = (
    "turn_id, session_key, message, queue_mode, state, accepted_wall, timeout_s, seq, attempts,"
    " run_id, epoch, started_wall, ended_wall, reply, error_code, error_message, lane, delivery"
)
_TURN_COLUMNS_ADDED = (("prompt_tokens", "INTEGER"), ("completion_tokens", "INTEGER"))
"""Columns of ``turns`` added since version 1, with their declarations (all nullable)."""
_TURN_COLUMNS = _TURN_COLUMNS_V1 + "".join(f", {name}" for name, _ in _TURN_COLUMNS_ADDED)
_TURN_COLUMNS_OF_V1_FILE = _TURN_COLUMNS_V1 + ", NULL" * len(_TURN_COLUMNS_ADDED)
"""What a read-only open of a version-1 file selects: the added columns read as unknown."""
_OPEN_STATES = ("accepted", "queued", "running")


class _GroupCommit:
    """One group transaction: the writes of one loop iteration, committed together, and who
    waits for that commit. ``lost`` is set when the transaction is gone before its commit
    (SQLite rolls a whole transaction back on ``SQLITE_FULL`` and some I/O errors)."""

    __slots__ = ("lost", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.lost: StoreError | None = None


class SqliteStore:
    """The :class:`~turngate.store.base.Store` on one SQLite file.

    ``readonly`` opens the file for reading only (the ``sessions`` commands beside a running
    gateway): no schema change, no write. ``connection_factory`` replaces
    :class:`sqlite3.Connection` (the simulator's failing disk).
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: Literal["normal", "full"] = "normal",
        readonly: bool = False,
        connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
    ) -> None:
        self.path = path
        self._durability = durability
        self._readonly = readonly
        self._factory = connection_factory
        self._db: sqlite3.Connection | None = None
        self._turn_columns = _TURN_COLUMNS
        """What a turn's SELECT reads (a read-only open of an older file lacks columns)."""
        self._group: _GroupCommit | None = None
        self._write_failure: str | None = None
        self._write_failures = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path}: used before open() or after close()")
        return self._db

    def health(self) -> StoreHealth:
        """Whether the last write committed, and why not."""
        return StoreHealth(
            self._write_failure is None, self._write_failure or "", self._write_failures
        )

    # -- writing: savepoints inside one group transaction per loop iteration ---------------

    @asynccontextmanager
    async def _write(self, doing: str) -> AsyncIterator[sqlite3.Connection]:
        """One atomic write; returns once it is committed, or raises
        :class:`~turngate.errors.StorageUnavailableError` when it was not."""
        with self._op(doing) as (db, group):
            yield db
        await self._durable(group)

    @contextmanager
    def _op(self, doing: str) -> Iterator[tuple[sqlite3.Connection, _GroupCommit]]:
        """One atomic operation inside the current group transaction (a savepoint)."""
        db = self.db
        group = self._group
        if group is None:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failed(exc, doing) from None
            group = self._group = _GroupCommit()
            asyncio.get_running_loop().call_soon(self._commit, group)
        try:
            db.execute("SAVEPOINT op")
        except sqlite3.Error as exc:
            error = self._failed(exc, doing)
            self._lose(group, error)
            raise error from None
        try:
            yield db, group
        except sqlite3.Error as exc:
            error = self._failed(exc, doing)
            self._undo(group, error)
            raise error from None
        except BaseException:
            self._undo(group, None)
            raise
        try:
            db.execute("RELEASE op")
        except sqlite3.Error as exc:
            error = self._failed(exc, doing)
            self._lose(group, error)
            raise error from None

    def _undo(self, group: _GroupCommit, error: StoreError | None) -> None:
        """Roll one operation back, keeping the rest of its group if SQLite kept it."""
        db = self.db
        if db.in_transaction:
            try:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
                return
            except sqlite3.Error as exc:
                error = self._failed(exc, "undo a write")
        # SQLite rolled the whole transaction back (SQLITE_FULL does): every write of the
        # group is gone, so none of them may be acknowledged.
        self._lose(group, error or StorageUnavailableError(f"storage {self.path}: lost a write"))

    def _lose(self, group: _GroupCommit, error: StoreError) -> None:
        """The group's transaction is gone: fail everyone waiting on it, start afresh."""
        group.lost = error
        if self._group is group:
            self._group = None
        db = self._db
        if db is not None and db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        _fail(group.waiters, error)

    async def _durable(self, group: _GroupCommit) -> None:
        """Return once ``group`` is committed; raise if it was lost."""
        if group.lost is not None:
            raise _copy(group.lost)
        waiter = asyncio.get_running_loop().create_future()
        group.waiters.append(waiter)
        await waiter

    def _commit(self, group: _GroupCommit) -> None:
        if group.lost is not None:
            return
        if self._group is group:
            self._group = None
        db = self._db
        try:
            if db is None:
                raise sqlite3.OperationalError("the store was closed before its commit")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT may or may not have rolled back already (SQLITE_FULL does):
            # finish the job without raising, so that every waiter below hears of it.
            if db is not None and db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            group.lost = self._failed(exc, "commit")
            _fail(group.waiters, group.lost)
            return
        self._write_failure = None
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _failed(self, exc: sqlite3.Error, doing: str) -> StoreError:
        """The turngate error for a failed SQLite call; a write failure marks the store
        unhealthy until a commit succeeds again."""
        error = storage_error(self.path, exc, doing)
        if isinstance(error, StorageUnavailableError):
            self._write_failure = error.message
            self._write_failures += 1
        return error

    @contextmanager
    def _reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A read; a failing disk is reported as :class:`StorageUnavailableError`."""
        try:
            yield self.db
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, doing) from None

    def _rows(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._reading(doing) as db:
            return db.execute(sql, params).fetchall()

    def _row(self, doing: str, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._reading(doing) as db:
            return db.execute(sql, params).fetchone()

    async def probe(self) -> None:
        """Write one small row, to learn whether storage takes writes again."""
        async with self._write("probe storage") as db:
            db.execute(
                "INSERT INTO probe (id, n) VALUES (1, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1"
            )

    # -- lifetime -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._readonly:
            db = self._connect(f"{self.path.as_uri()}?mode=ro", uri=True)
            self._check_version(db)
            try:
                columns = _turn_columns_of(db)
            except sqlite3.Error as exc:
                db.close()
                raise storage_error(self.path, exc, "read its schema") from None
            # Read-only: an older file is read as it is, never migrated.
            if not all(name in columns for name, _ in _TURN_COLUMNS_ADDED):
                self._turn_columns = _TURN_COLUMNS_OF_V1_FILE
            self._db = db
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(
                f"state dir {self.path.parent}: cannot create it ({exc.strerror})"
            ) from None
        db = self._connect(str(self.path))
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._durability.upper()}")
            db.execute("PRAGMA foreign_keys=ON")
            self._check_version(db)
            _migrate(db)
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise storage_error(self.path, exc, "create its schema") from None
        self._db = db

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
                factory=self._factory,
            )
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, "open the database") from None
        return db

    def _check_version(self, db: sqlite3.Connection) -> None:
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            db.close()
            raise storage_error(self.path, exc, "read the schema version") from None
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"store {self.path}: schema version {version} is newer than this turngate"
                f" understands ({SCHEMA_VERSION})"
            )

    async def close(self) -> None:
        group = self._group
        if group is not None:
            self._commit(group)
        if self._db is not None:
            self._db.close()
            self._db = None

    def abandon(self) -> None:
        """Drop the connection as a killed process would: uncommitted writes are lost, and
        whoever waits for them gets an error instead of an acknowledgement. For crash
        simulation only."""
        group, self._group = self._group, None
        db, self._db = self._db, None
        if group is not None:
            group.lost = StoreError(f"store {self.path}: the process went away")
            _fail(group.waiters, group.lost)
        if db is not None:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()

    # -- turns ----------------------------------------------------------------------------

    async def accept_turn(self, record: TurnRecord) -> TurnRecord | None:
        async with self._write("store the turn") as db:
            row = db.execute(
                f"SELECT {self._turn_columns} FROM turns WHERE turn_id = ?", (record.turn_id,)
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
        return existing

    async def get_turn(self, turn_id: TurnId) -> TurnRecord | None:
        row = self._row(
            "read a turn",
            f"SELECT {self._turn_columns} FROM turns WHERE turn_id = ?",
            (turn_id,),
        )
        return None if row is None else self._turn(row)

    async def mark_queued(self, turn_ids: Sequence[TurnId]) -> None:
        async with self._write("mark turns queued") as db:
            db.executemany(
                "UPDATE turns SET state = 'queued' WHERE turn_id = ? AND state = 'accepted'",
                [(turn_id,) for turn_id in turn_ids],
            )

    async def session_epoch(self, session_key: str) -> Epoch:
        row = self._row(
            "read a session's epoch", "SELECT epoch FROM sessions WHERE key = ?", (session_key,)
        )
        return 0 if row is None else int(row[0])

    async def start_run(
        self, session_key: str, run_id: RunId, epoch: Epoch, turn_ids: Sequence[TurnId], at: WallS
    ) -> None:
        async with self._write("start a run") as db:
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

    async def join_run(
        self, session_key: str, turn_id: TurnId, run_id: RunId, epoch: Epoch, at: WallS
    ) -> None:
        async with self._write("join a run") as db:
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

    async def end_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[tuple[str, str]],
        at: WallS,
    ) -> None:
        async with self._write("end a run") as db:
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

    async def end_turns(self, outcomes: Sequence[Outcome], at: WallS) -> None:
        async with self._write("record turn outcomes") as db:
            self._record_outcomes(db, outcomes, at)

    @staticmethod
    def _record_outcomes(db: sqlite3.Connection, outcomes: Sequence[Outcome], at: WallS) -> None:
        db.executemany(
            "UPDATE turns SET state = ?, run_id = ?, reply = ?, error_code = ?,"
            " error_message = ?, ended_wall = ?, prompt_tokens = ?, completion_tokens = ?"
            " WHERE turn_id = ? AND state IN ('accepted', 'queued', 'running')",
            [
                (
                    o.state.value,
                    o.run_id,
                    o.reply,
                    None if o.code is None else o.code.value,
                    o.message or None,
                    at,
                    None if o.usage is None else o.usage.prompt_tokens,
                    None if o.usage is None else o.usage.completion_tokens,
                    o.turn_id,
                )
                for o in outcomes
            ],
        )

    async def recover(self) -> list[TurnRecord]:
        async with self._write("recover open turns") as db:
            db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL"
                " WHERE lease_run_id IS NOT NULL"
            )
            db.execute(
                "UPDATE turns SET state = 'queued', attempts = attempts + 1, run_id = NULL,"
                " epoch = NULL, started_wall = NULL WHERE state = 'running'"
            )
            rows = db.execute(
                f"SELECT {self._turn_columns} FROM turns WHERE state IN (?, ?, ?) ORDER BY seq",
                _OPEN_STATES,
            ).fetchall()
        return [self._turn(row) for row in rows]

    async def set_delivery(self, turn_id: TurnId, delivery: str) -> None:
        async with self._write("record a delivery") as db:
            db.execute("UPDATE turns SET delivery = ? WHERE turn_id = ?", (delivery, turn_id))

    async def cron_jobs(self) -> list[CronJobState]:
        rows = self._rows(
            "read cron jobs",
            "SELECT job_id, agent_id, schedule, next_fire_wall, last_fire_wall FROM cron_jobs"
            " ORDER BY job_id",
        )
        return [CronJobState(*row) for row in rows]

    async def save_cron_job(self, state: CronJobState) -> None:
        async with self._write("save a cron job") as db:
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

    # -- reading --------------------------------------------------------------------------

    async def transcript(self, session_key: str, limit: int) -> list[TranscriptEntry]:
        rows = self._rows(
            "read a transcript",
            "SELECT seq, session_key, role, text, run_id, epoch, at_wall FROM transcript"
            " WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        )
        return [TranscriptEntry(*row) for row in reversed(rows)]

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        rows = self._rows(
            "list sessions",
            f"{_SESSION_SELECT} ORDER BY s.updated_wall DESC, s.key LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [SessionRecord(*row) for row in rows]

    async def session(self, session_key: str) -> SessionRecord | None:
        row = self._row("read a session", f"{_SESSION_SELECT} WHERE s.key = ?", (session_key,))
        return None if row is None else SessionRecord(*row)

    async def session_turns(self, session_key: str, limit: int) -> list[TurnRecord]:
        rows = self._rows(
            "read a session's turns",
            f"SELECT {self._turn_columns} FROM turns WHERE session_key = ?"
            " ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        )
        return [self._turn(row) for row in reversed(rows)]

    async def count_sessions(self) -> int:
        return int(self._row("count sessions", "SELECT COUNT(*) FROM sessions")[0])

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
            prompt_tokens,
            completion_tokens,
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
            usage=(
                None
                if prompt_tokens is None or completion_tokens is None
                else Usage(int(prompt_tokens), int(completion_tokens))
            ),
        )


_SESSION_SELECT = (
    "SELECT s.key, s.agent_id, s.epoch, s.lease_run_id, s.lease_granted_wall, s.created_wall,"
    " s.updated_wall,"
    " (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key),"
    " (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key"
    "  AND t.state IN ('accepted', 'queued', 'running'))"
    " FROM sessions s"
)


def _turn_columns_of(db: sqlite3.Connection) -> set[str]:
    """The columns the file's ``turns`` table has (none when it has no such table)."""
    return {str(row[1]) for row in db.execute("PRAGMA table_info(turns)")}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file made by an older turngate to this schema, keeping its data.

    Decided by the columns present rather than by the version alone, so that a migration cut
    short (or a file whose version was written by hand) is finished, not repeated. A file
    that needs nothing sees no write at all; one that does is changed in one immediate
    transaction, so that two processes opening it at once do not both add a column.
    """
    if not _columns_missing(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, declaration in _columns_missing(db):
            db.execute(f"ALTER TABLE turns ADD COLUMN {name} {declaration}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _columns_missing(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """The added columns an older file's ``turns`` lacks; none for a new file (no table yet:
    the schema script makes it whole)."""
    present = _turn_columns_of(db)
    if not present:
        return []
    return [(name, decl) for name, decl in _TURN_COLUMNS_ADDED if name not in present]


_BUG_CLASSES = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)
"""SQLite errors that say the statement was wrong, not that the disk failed."""


def storage_error(path: Path, exc: sqlite3.Error, doing: str) -> StoreError:
    """The one translation of a SQLite error: a full, failing, read-only, locked or corrupt
    database is :class:`StorageUnavailableError`; anything else is a turngate bug."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if isinstance(exc, _BUG_CLASSES):
        return StoreError(f"store {path}: could not {doing}: {exc} [{name}]")
    return StorageUnavailableError(f"storage {path}: could not {doing}: {exc} [{name}]")


def _copy(error: StoreError) -> StoreError:
    """A fresh exception like ``error``: one raised object per waiter, so that tracebacks
    do not pile up on a shared instance."""
    return type(error)(error.message)


def _fail(waiters: list[asyncio.Future[None]], error: StoreError) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(_copy(error))
    waiters.clear()
