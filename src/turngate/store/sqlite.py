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
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import OUTCOME_EVENTS, Outcome, TurnEvent, TurnState
from turngate.errors import (
    SessionTakenError,
    StaleEpochError,
    StateDirError,
    StoreError,
)
from turngate.store.base import (
    INTERRUPTED_CALL_RESULT,
    Claimed,
    CronJobState,
    DeliveryOrder,
    Notice,
    SessionClaim,
    SessionRecord,
    StoreHealth,
    TranscriptEntry,
    TurnRecord,
)
from turngate.store.rows import (
    CLAIM_COLUMNS,
    CLAIM_SELECT,
    CLAIMABLE_SELECT,
    HOLD_SINGLETON,
    HOLDERS_OF_TURNS,
    INTERRUPTED_SELECT,
    OPEN_TURNS_SELECT,
    OUTCOME_SET,
    RELEASE_CLAIMS,
    RELEASE_SINGLETON,
    RENEW_CLAIMS,
    REQUEUE,
    SESSION_SELECT,
    TAKE_CLAIM,
    TURNS_SELECT,
    by_session,
    claim_from_row,
    entry_from_row,
    lease_refused,
    marks,
    may_take,
    not_held,
    outcome_values,
    resumed,
    state_guard,
    take_lease,
    turn_from_row,
)
from turngate.store.sqlite_checkpoint import CheckpointMode, checkpoints_for
from turngate.store.sqlite_commit import GroupCommits, storage_error
from turngate.store.sqlite_outbox import SqliteOutbox, insert_orders
from turngate.store.sqlite_schema import (
    CLAIM_COLUMNS_OF_V4_FILE,
    SCHEMA,
    SCHEMA_VERSION,
    SESSION_COLUMNS_ADDED,
    TRANSCRIPT_COLUMNS_ADDED,
    TURN_COLUMNS,
    TURN_COLUMNS_ADDED,
    TURN_COLUMNS_OF_V1_FILE,
    has_columns,
    migrate,
)
from turngate.store.sqlite_transcript import (
    TRANSCRIPT_COLUMNS,
    TRANSCRIPT_COLUMNS_OF_V3_FILE,
    append_items,
    close_calls,
    since_messages,
)
from turngate.store.transcript_tails import TranscriptTails
from turngate.types import Epoch, RunId, TurnId, WallS

_MAY_ENQUEUE = state_guard(TurnEvent.ENQUEUE)
_MAY_START = state_guard(TurnEvent.START)
_END_TURN = {
    state: f"UPDATE turns SET {OUTCOME_SET.format(p='?')} WHERE turn_id = ?"
    f" AND {state_guard(event)}"
    for state, event in OUTCOME_EVENTS.items()
}
"""Each terminal state's update, guarded: a turn ends only from a state the table ends it
from."""


class SqliteStore:
    """The :class:`~turngate.store.base.Store` on one SQLite file.

    ``readonly`` opens the file for reading only (the ``sessions`` commands beside a running
    gateway): no schema change, no write. ``connection_factory`` replaces
    :class:`sqlite3.Connection` (the simulator's failing disk).

    One gateway process uses the file at a time (the state directory's lock): the store is
    not :attr:`shared`, and no notice passes between processes.
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: Literal["normal", "full"] = "normal",
        readonly: bool = False,
        connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
        checkpoints: CheckpointMode = "inline",
    ) -> None:
        self.path = path
        self._checkpoints = checkpoints_for(checkpoints, path)
        self._durability = durability
        self._readonly = readonly
        self._factory = connection_factory
        self._tails = TranscriptTails()
        """The last entries of recently used transcripts (none kept by a read-only open:
        another process writes the file)."""
        self._tx = GroupCommits(
            path, on_rollback=self._tails.forget_all, on_commit=self._checkpoints.committed
        )
        self.outbox = SqliteOutbox(self._tx)
        """Messages owed to chat platforms (see :mod:`~turngate.store.sqlite_outbox`)."""
        self._turn_columns = TURN_COLUMNS
        """What a turn's SELECT reads (a read-only open of an older file lacks columns)."""
        self._transcript_columns = TRANSCRIPT_COLUMNS
        """What a transcript entry's SELECT reads (likewise)."""
        self._claim_columns = CLAIM_COLUMNS
        """What a session's claim SELECT reads (likewise)."""

    @property
    def shared(self) -> bool:
        """False: one gateway process uses the file at a time."""
        return False

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        return self._tx.connection

    def health(self) -> StoreHealth:
        """Whether the last write committed, and why not."""
        return self._tx.health()

    async def probe(self) -> None:
        """Write one small row, to learn whether storage takes writes again."""
        async with self._tx.write("probe storage") as db:
            db.execute(
                "INSERT INTO probe (id, n) VALUES (1, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1"
            )

    # -- lifetime -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._readonly:
            db = self._connect(f"{self.path.as_uri()}?mode=ro", uri=True)
            self._check_version(db)
            try:
                turns_whole = has_columns(db, "turns", TURN_COLUMNS_ADDED)
                transcript_typed = has_columns(db, "transcript", TRANSCRIPT_COLUMNS_ADDED)
                claims = has_columns(db, "sessions", SESSION_COLUMNS_ADDED)
                outbox = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
                ).fetchone()
            except sqlite3.Error as exc:
                db.close()
                raise storage_error(self.path, exc, "read its schema") from None
            # Read-only: an older file is read as it is, never migrated.
            if not turns_whole:
                self._turn_columns = TURN_COLUMNS_OF_V1_FILE
            if not transcript_typed:
                self._transcript_columns = TRANSCRIPT_COLUMNS_OF_V3_FILE
            if not claims:
                self._claim_columns = CLAIM_COLUMNS_OF_V4_FILE
            self.outbox.present = outbox is not None
            self._tx.db = db
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
            self._checkpoints.configure(db)
            self._check_version(db)
            migrate(db)
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise storage_error(self.path, exc, "create its schema") from None
        self._tx.db = db

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
        self._tx.flush()
        self._tails.forget_all()
        await self._checkpoints.close()
        db, self._tx.db = self._tx.db, None
        if db is not None:
            db.close()

    def abandon(self) -> None:
        """Drop the connection as a killed process would: uncommitted writes are lost, and
        whoever waits for them gets an error instead of an acknowledgement. For crash
        simulation only."""
        self._tx.abandon()
        db, self._tx.db = self._tx.db, None
        if db is not None:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()

    # -- turns ----------------------------------------------------------------------------

    async def accept_turn(self, record: TurnRecord) -> TurnRecord | None:
        async with self._tx.write("store the turn") as db:
            row = db.execute(
                f"SELECT {self._turn_columns} FROM turns WHERE turn_id = ?", (record.turn_id,)
            ).fetchone()
            if row is not None:
                existing: TurnRecord | None = turn_from_row(row)
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
        row = self._tx.row(
            "read a turn",
            f"SELECT {self._turn_columns} FROM turns WHERE turn_id = ?",
            (turn_id,),
        )
        return None if row is None else turn_from_row(row)

    async def mark_queued(self, turn_ids: Sequence[TurnId]) -> None:
        async with self._tx.write("mark turns queued") as db:
            db.executemany(
                f"UPDATE turns SET state = 'queued' WHERE turn_id = ? AND {_MAY_ENQUEUE}",
                [(turn_id,) for turn_id in turn_ids],
            )

    async def session_epoch(self, session_key: str) -> Epoch:
        row = self._tx.row(
            "read a session's epoch", "SELECT epoch FROM sessions WHERE key = ?", (session_key,)
        )
        return 0 if row is None else int(row[0])

    async def get_turns(self, turn_ids: Sequence[TurnId]) -> list[TurnRecord]:
        if not turn_ids:
            return []
        rows = self._tx.rows(
            "read turns",
            TURNS_SELECT.format(columns=self._turn_columns, ids=marks("?", len(turn_ids))),
            tuple(turn_ids),
        )
        return [turn_from_row(row) for row in rows]

    async def open_turns(self, session_key: str) -> list[TurnRecord]:
        rows = self._tx.rows(
            "read a session's open turns",
            OPEN_TURNS_SELECT.format(columns=self._turn_columns, p="?"),
            (session_key,),
        )
        return [turn_from_row(row) for row in rows]

    # -- claims ---------------------------------------------------------------------------

    async def claim_session(
        self, session_key: str, holder: str, at: WallS, ttl_s: float
    ) -> Claimed:
        async with self._tx.write("claim a session") as db:
            row = db.execute(CLAIM_SELECT.format(p="?"), (session_key,)).fetchone()
            if row is None:
                return Claimed(SessionClaim(session_key, None, None, 0), taken=False)
            claim, lease_run_id = claim_from_row(row), row[4]
            if not may_take(claim, holder, at):
                return Claimed(claim, taken=False)
            db.execute(TAKE_CLAIM.format(p="?"), (holder, at + ttl_s, session_key))
            interrupted = _end_previous(db, claim, lease_run_id, at)
            self._tails.forget(session_key)
            rows = db.execute(
                OPEN_TURNS_SELECT.format(columns=self._turn_columns, p="?"), (session_key,)
            ).fetchall()
        held = SessionClaim(session_key, holder, at + ttl_s, claim.epoch)
        return Claimed(held, taken=True, open_turns=resumed(rows, interrupted))

    async def renew_claims(
        self, holder: str, session_keys: Sequence[str], at: WallS, ttl_s: float
    ) -> set[str]:
        if not session_keys:
            return set()
        async with self._tx.write("renew claims") as db:
            rows = db.execute(
                RENEW_CLAIMS.format(p="?", keys=marks("?", len(session_keys))),
                (at + ttl_s, holder, *session_keys),
            ).fetchall()
        return {str(key) for (key,) in rows}

    async def release_claims(self, holder: str, session_keys: Sequence[str]) -> None:
        if not session_keys:
            return
        async with self._tx.write("release claims") as db:
            db.execute(
                RELEASE_CLAIMS.format(p="?", keys=marks("?", len(session_keys))),
                (holder, *session_keys),
            )

    async def hold_singleton(self, name: str, holder: str, at: WallS, ttl_s: float) -> bool:
        async with self._tx.write("hold a singleton") as db:
            row = db.execute(
                HOLD_SINGLETON.format(p="?"), (name, holder, at + ttl_s, at)
            ).fetchone()
        return row is not None

    async def release_singleton(self, name: str, holder: str) -> None:
        async with self._tx.write("release a singleton") as db:
            db.execute(RELEASE_SINGLETON.format(p="?"), (name, holder))

    async def session_claim(self, session_key: str) -> SessionClaim | None:
        row = self._tx.row(
            "read a session's claim",
            f"SELECT {self._claim_columns} FROM sessions WHERE key = ?",
            (session_key,),
        )
        return None if row is None else claim_from_row(row)

    async def claimable(self, holder: str, at: WallS, limit: int) -> dict[str, list[TurnId]]:
        rows = self._tx.rows(
            "list claimable sessions", CLAIMABLE_SELECT.format(p="?"), (holder, at, limit)
        )
        return by_session(rows)

    async def notify(self, notice: Notice) -> None:
        """Nothing: no other process shares the file."""

    async def notices(self) -> AsyncIterator[Notice]:
        """Waits for ever: no other process shares the file to send one."""
        never: asyncio.Future[Notice] = asyncio.get_running_loop().create_future()
        yield await never

    # -- runs -----------------------------------------------------------------------------

    async def start_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        turn_ids: Sequence[TurnId],
        at: WallS,
        holder: str | None = None,
    ) -> None:
        async with self._tx.write("start a run") as db:
            taking = take_lease("?", session_key, run_id, epoch, at, holder)
            if db.execute(*taking).rowcount != 1:
                row = db.execute(CLAIM_SELECT.format(p="?"), (session_key,)).fetchone()
                claim = None if row is None else claim_from_row(row)
                raise lease_refused(session_key, run_id, epoch, holder, claim)
            db.executemany(
                "UPDATE turns SET state = 'running', run_id = ?, epoch = ?, started_wall = ?"
                f" WHERE turn_id = ? AND {_MAY_START}",
                [(run_id, epoch, at, turn_id) for turn_id in turn_ids],
            )

    async def join_run(
        self, session_key: str, turn_id: TurnId, run_id: RunId, epoch: Epoch, at: WallS
    ) -> None:
        async with self._tx.write("join a run") as db:
            holds = db.execute(
                "SELECT 1 FROM sessions WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (session_key, run_id, epoch),
            ).fetchone()
            if holds is None:
                raise StaleEpochError(session_key, run_id, epoch)
            db.execute(
                "UPDATE turns SET state = 'running', run_id = ?, epoch = ?, started_wall = ?"
                f" WHERE turn_id = ? AND {_MAY_START}",
                (run_id, epoch, at, turn_id),
            )

    async def write_steps(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        items: Sequence[TranscriptItem],
        at: WallS,
    ) -> None:
        async with self._tx.write("write a run's step") as db:
            holds = db.execute(
                "SELECT 1 FROM sessions WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (session_key, run_id, epoch),
            ).fetchone()
            if holds is None:
                raise StaleEpochError(session_key, run_id, epoch)
            self._tails.appended(
                session_key, append_items(db, session_key, items, run_id, epoch, at)
            )

    async def end_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[TranscriptItem],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        unanswered: str | None = None,
    ) -> None:
        async with self._tx.write("end a run") as db:
            released = db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL,"
                " updated_wall = ? WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (at, session_key, run_id, epoch),
            ).rowcount
            if released != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            closed = close_calls(db, session_key, run_id, epoch, unanswered, at)
            self._tails.appended(session_key, closed)
            self._tails.appended(
                session_key, append_items(db, session_key, exchange, run_id, epoch, at)
            )
            self._record_outcomes(db, outcomes, at)
            insert_orders(db, orders, at)

    async def end_turns(
        self,
        outcomes: Sequence[Outcome],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        holder: str | None = None,
    ) -> None:
        async with self._tx.write("record turn outcomes") as db:
            if holder is not None and outcomes:
                holders = db.execute(
                    HOLDERS_OF_TURNS.format(ids=marks("?", len(outcomes))),
                    [o.turn_id for o in outcomes],
                ).fetchall()
                lost = not_held(holders, holder)
                if lost is not None:
                    raise SessionTakenError(lost, holder)
            self._record_outcomes(db, outcomes, at)
            insert_orders(db, orders, at)

    @staticmethod
    def _record_outcomes(db: sqlite3.Connection, outcomes: Sequence[Outcome], at: WallS) -> None:
        for outcome in outcomes:
            db.execute(_END_TURN[outcome.state], outcome_values(outcome, at))

    async def since_messages(
        self, session_key: str, turn_ids: Sequence[TurnId], limit: int
    ) -> list[TranscriptEntry]:
        with self._tx.reading("read a transcript from a turn's message") as db:
            return since_messages(db, session_key, turn_ids, limit)

    async def set_delivery(self, turn_id: TurnId, delivery: str) -> None:
        async with self._tx.write("record a delivery") as db:
            db.execute("UPDATE turns SET delivery = ? WHERE turn_id = ?", (delivery, turn_id))

    async def cron_jobs(self) -> list[CronJobState]:
        rows = self._tx.rows(
            "read cron jobs",
            "SELECT job_id, agent_id, schedule, next_fire_wall, last_fire_wall FROM cron_jobs"
            " ORDER BY job_id",
        )
        return [CronJobState(*row) for row in rows]

    async def save_cron_job(self, state: CronJobState) -> None:
        async with self._tx.write("save a cron job") as db:
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
        kept = self._tails.read(session_key, limit)
        if kept is not None:
            return kept
        rows = self._tx.rows(
            "read a transcript",
            f"SELECT {self._transcript_columns} FROM transcript"
            " WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        )
        entries = [entry_from_row(row) for row in reversed(rows)]
        if not self._readonly:
            self._tails.keep(session_key, entries, limit)
        return entries

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        rows = self._tx.rows(
            "list sessions",
            f"{SESSION_SELECT} ORDER BY s.updated_wall DESC, s.key LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [SessionRecord(*row) for row in rows]

    async def session(self, session_key: str) -> SessionRecord | None:
        row = self._tx.row("read a session", f"{SESSION_SELECT} WHERE s.key = ?", (session_key,))
        return None if row is None else SessionRecord(*row)

    async def session_turns(self, session_key: str, limit: int) -> list[TurnRecord]:
        rows = self._tx.rows(
            "read a session's turns",
            f"SELECT {self._turn_columns} FROM turns WHERE session_key = ?"
            " ORDER BY seq DESC LIMIT ?",
            (session_key, limit),
        )
        return [turn_from_row(row) for row in reversed(rows)]

    async def count_sessions(self) -> int:
        return int(self._tx.row("count sessions", "SELECT COUNT(*) FROM sessions")[0])


def _end_previous(
    db: sqlite3.Connection, claim: SessionClaim, lease_run_id: RunId | None, at: WallS
) -> dict[TurnId, RunId]:
    """End what the session's previous holder (or an earlier life of its new one) left: close
    its run's open tool calls, queue its running turns again; returns the turns that were
    running, each with its run. The caller freed the lease in the same transaction."""
    key = claim.session_key
    if lease_run_id is not None:
        close_calls(db, key, lease_run_id, claim.epoch, INTERRUPTED_CALL_RESULT, at)
    interrupted = dict(db.execute(INTERRUPTED_SELECT.format(p="?"), (key,)).fetchall())
    db.execute(REQUEUE.format(p="?"), (key,))
    return interrupted
