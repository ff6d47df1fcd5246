"""The :class:`~turngate.store.base.Store` on PostgreSQL (psycopg 3, async, a connection pool).

Chosen by ``store = "postgresql://..."`` (or ``TURNGATE_STORE``). Every write is one
transaction; the same rules hold as on SQLite (:mod:`turngate.store.base`), and the turn
updates are guarded by the core's transition table as there (:func:`~turngate.store.rows.
state_guard`). A database that cannot be reached, or refuses writes, makes a write raise
:class:`~turngate.errors.StorageUnavailableError` (the caller may try it again) and shows in
:meth:`PostgresStore.health`; the pool reconnects by itself when the database is back. The
URL's password never reaches a message.

One gateway process per database, for now: a store holds an advisory lock for as long as it is
open, on a connection of its own, and refuses to open while another holds it (the
PostgreSQL counterpart of the state directory's lock). Until sessions are owned across
processes, two gateways on one database would each recover the other's running turns. If the
database restarts, the lock is taken again before the next write; a store that finds it taken
by another process meanwhile refuses every write (``storage_unavailable``), and its runs are
fenced by their epochs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from turngate.core.transcript import TranscriptItem, closing_results
from turngate.core.turn import OUTCOME_EVENTS, Outcome, TurnEvent
from turngate.errors import StaleEpochError, StorageUnavailableError, StoreError
from turngate.store.base import (
    INTERRUPTED_CALL_RESULT,
    CronJobState,
    DeliveryOrder,
    SessionRecord,
    StoreHealth,
    TranscriptEntry,
    TurnRecord,
)
from turngate.store.postgres_outbox import PostgresOutbox, insert_orders
from turngate.store.postgres_schema import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_LOCK,
)
from turngate.store.rows import (
    OUTCOME_SET,
    SESSION_SELECT,
    TRANSCRIPT_COLUMNS,
    TURN_COLUMNS,
    entry_from_row,
    outcome_values,
    state_guard,
    transcript_values,
    turn_from_row,
)
from turngate.types import Epoch, RunId, TurnId, WallS

POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
"""How long opening the store, or a write waiting for a connection, may wait for one."""
LOCK_CHECK_WRITES = 100
"""At most this many writes between two checks that the store lock's connection lives."""
STATEMENT_TIMEOUT_MS = 30_000
"""No statement runs longer (a lock held by a stuck peer, a database overloaded)."""

_UNAVAILABLE = (
    psycopg.OperationalError,
    errors.DiskFull,
    errors.InsufficientResources,
    errors.QueryCanceled,
    errors.ReadOnlySqlTransaction,
    errors.AdminShutdown,
    errors.CannotConnectNow,
)
"""Errors of a database that cannot take the write now (unreachable, full, read-only, shutting
down, a statement timed out): the write may be tried again. Anything else is a bug."""

_MAY_ENQUEUE = state_guard(TurnEvent.ENQUEUE)
_MAY_START = state_guard(TurnEvent.START)
_MAY_REQUEUE = state_guard(TurnEvent.REQUEUE)
_MAY_END = {state: state_guard(event) for state, event in OUTCOME_EVENTS.items()}


def safe_url(url: str) -> str:
    """``url`` as messages may show it: host, port and database, never a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    host, port, name = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    return f"postgresql://{host}{':' + str(port) if port else ''}/{name}"


class PostgresStore:
    """See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        readonly: bool = False,
        exclusive: bool = True,
    ) -> None:
        """``readonly``: never write, nor migrate (the ``sessions`` commands beside a running
        gateway); ``exclusive``: hold the store lock (a gateway does; ``db upgrade`` does
        not, so that it may run beside one)."""
        self.url = url
        self._readonly = readonly
        self._exclusive = exclusive and not readonly
        self.shown = safe_url(url)
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None
        self._health = StoreHealth(writable=True)
        self._lock: AsyncConnection[tuple[Any, ...]] | None = None
        self._lock_suspect = False
        """A write failed since the lock's connection was last seen alive."""
        self._writes_unchecked = 0
        self.outbox = PostgresOutbox(self)
        """Messages owed to chat platforms (see :mod:`~turngate.store.postgres_outbox`)."""

    # -- lifetime -------------------------------------------------------------------------

    async def open(self) -> None:
        pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"},
            name="turngate",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await pool.close()
            raise StorageUnavailableError(
                f"store {self.shown}: no connection within {CONNECT_TIMEOUT_S:g}s"
                " (is PostgreSQL running there, and does it let this user in?)"
            ) from None
        self._pool = pool
        try:
            if self._exclusive:
                try:
                    await self._hold_store(opening=True)
                except psycopg.Error as exc:
                    raise self._error(exc, "take the store's lock") from None
            if not self._readonly:
                await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _hold_store(self, *, opening: bool = False) -> None:
        """Hold this database's store lock (see the module docstring): take it, or take it
        again on a new connection if the one holding it was lost.

        A connection that died (the database restarted) is known only once it is used, and
        the lock died with it: so the lock's connection is asked whether it lives before a
        write after any failed one (a restart breaks every pooled connection, so the first
        write after one fails) and at least every :data:`LOCK_CHECK_WRITES` writes.
        """
        lock = self._lock
        if lock is not None and not lock.closed and not lock.broken:
            self._writes_unchecked += 1
            if not self._lock_suspect and self._writes_unchecked < LOCK_CHECK_WRITES:
                return
            try:
                await lock.execute("SELECT 1")
            except psycopg.Error:
                pass  # it died: take the lock again below
            else:
                self._lock_suspect, self._writes_unchecked = False, 0
                return
        if lock is not None:
            await lock.close()
            self._lock = None
        lock = await AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
        )
        row = await (
            await lock.execute("SELECT pg_try_advisory_lock(%s)", (STORE_LOCK,))
        ).fetchone()
        if row is None or not row[0]:
            await lock.close()
            if opening:
                raise StoreError(
                    f"store {self.shown}: another gateway process is using this database;"
                    " one process per database until sessions are owned across processes"
                )
            raise StorageUnavailableError(
                f"storage {self.shown}: another gateway process took this database while its"
                " connection was lost; this process writes nothing more"
            )
        self._lock = lock
        self._lock_suspect, self._writes_unchecked = False, 0

    async def _migrate(self) -> None:
        async with self.writing("create or migrate the schema") as db:
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await db.execute(
                "CREATE TABLE IF NOT EXISTS turngate_schema (version INTEGER NOT NULL)"
            )
            row = await (await db.execute("SELECT version FROM turngate_schema")).fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.shown}: schema version {version} is newer than this turngate"
                    f" understands ({SCHEMA_VERSION})"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                await db.execute(MIGRATIONS[step])
            if row is None:
                await db.execute(
                    "INSERT INTO turngate_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
            else:
                await db.execute("UPDATE turngate_schema SET version = %s", (SCHEMA_VERSION,))

    async def schema_version(self) -> int:
        """The version the database's schema is at; 0 before any (``turngate doctor``)."""
        made = await self._row(
            "read the schema version", "SELECT to_regclass('turngate_schema') IS NOT NULL"
        )
        if not made[0]:
            return 0
        row = await self._row("read the schema version", "SELECT version FROM turngate_schema")
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            await lock.close()

    def health(self) -> StoreHealth:
        return self._health

    async def probe(self) -> None:
        async with self.writing("probe storage") as db:
            await db.execute(
                "INSERT INTO probe (id, n) VALUES (1, 1)"
                " ON CONFLICT (id) DO UPDATE SET n = probe.n + 1"
            )

    # -- transactions ---------------------------------------------------------------------

    @asynccontextmanager
    async def writing(self, doing: str) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        """One write transaction; committed when the block ends, rolled back if it raises.
        A database that cannot take it raises :class:`StorageUnavailableError`."""
        if self._readonly:
            raise StoreError(f"store {self.shown}: opened read-only, cannot {doing}")
        try:
            if self._exclusive:
                await self._hold_store()
            async with self._connection() as db, db.transaction():
                yield db
        except (psycopg.Error, PoolTimeout) as exc:
            self._lock_suspect = True
            error = self._error(exc, doing)
            if isinstance(error, StorageUnavailableError):
                failures = self._health.write_failures + 1
                self._health = StoreHealth(False, error.message, failures)
            raise error from None
        self._health = StoreHealth(True, "", self._health.write_failures)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        if self._pool is None:
            raise StoreError(f"store {self.shown}: not open")
        async with self._pool.connection() as db:
            yield db

    async def fetch(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows ``sql`` reads (outside any write transaction)."""
        try:
            async with self._connection() as db:
                return await (await db.execute(sql, params)).fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc, doing) from None

    async def _row(self, doing: str, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.fetch(doing, sql, params)
        return rows[0] if rows else None

    def _error(self, exc: Exception, doing: str) -> StoreError:
        """The one translation of a database error (see :data:`_UNAVAILABLE`)."""
        name = type(exc).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
        if isinstance(exc, (*_UNAVAILABLE, PoolTimeout)):
            return StorageUnavailableError(
                f"storage {self.shown}: could not {doing}: {first} [{name}]"
            )
        return StoreError(f"store {self.shown}: could not {doing}: {first} [{name}]")

    # -- turns ----------------------------------------------------------------------------

    async def accept_turn(self, record: TurnRecord) -> TurnRecord | None:
        async with self.writing("store the turn") as db:
            existing = await _turn(db, record.turn_id)
            if existing is not None:
                return existing
            await db.execute(
                "INSERT INTO sessions (key, agent_id, created_wall, updated_wall)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET updated_wall = EXCLUDED.updated_wall",
                (record.session_key, record.agent_id, record.accepted_wall, record.accepted_wall),
            )
            stored = await db.execute(
                "INSERT INTO turns (turn_id, session_key, message, queue_mode, state,"
                " accepted_wall, timeout_s, lane) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (turn_id) DO NOTHING",
                (
                    record.turn_id,
                    record.session_key,
                    record.message,
                    record.queue_mode,
                    record.state.value,
                    record.accepted_wall,
                    record.timeout_s,
                    record.lane,
                ),
            )
            if stored.rowcount != 1:
                # Another process stored the same turn since this one looked: it is theirs.
                return await _turn(db, record.turn_id)
            return None

    async def get_turn(self, turn_id: TurnId) -> TurnRecord | None:
        row = await self._row(
            "read a turn", f"SELECT {TURN_COLUMNS} FROM turns WHERE turn_id = %s", (turn_id,)
        )
        return None if row is None else turn_from_row(row)

    async def mark_queued(self, turn_ids: Sequence[TurnId]) -> None:
        async with self.writing("mark turns queued") as db, db.cursor() as cur:
            await cur.executemany(
                f"UPDATE turns SET state = 'queued' WHERE turn_id = %s AND {_MAY_ENQUEUE}",
                [(turn_id,) for turn_id in turn_ids],
            )

    async def session_epoch(self, session_key: str) -> Epoch:
        row = await self._row(
            "read a session's epoch", "SELECT epoch FROM sessions WHERE key = %s", (session_key,)
        )
        return 0 if row is None else int(row[0])

    async def start_run(
        self, session_key: str, run_id: RunId, epoch: Epoch, turn_ids: Sequence[TurnId], at: WallS
    ) -> None:
        async with self.writing("start a run") as db:
            taken = await db.execute(
                "UPDATE sessions SET epoch = %s, lease_run_id = %s, lease_granted_wall = %s,"
                " updated_wall = %s WHERE key = %s AND epoch = %s AND lease_run_id IS NULL",
                (epoch, run_id, at, at, session_key, epoch - 1),
            )
            if taken.rowcount != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            async with db.cursor() as cur:
                await cur.executemany(
                    "UPDATE turns SET state = 'running', run_id = %s, epoch = %s,"
                    f" started_wall = %s WHERE turn_id = %s AND {_MAY_START}",
                    [(run_id, epoch, at, turn_id) for turn_id in turn_ids],
                )

    async def join_run(
        self, session_key: str, turn_id: TurnId, run_id: RunId, epoch: Epoch, at: WallS
    ) -> None:
        async with self.writing("join a run") as db:
            await _hold(db, session_key, run_id, epoch)
            await db.execute(
                "UPDATE turns SET state = 'running', run_id = %s, epoch = %s, started_wall = %s"
                f" WHERE turn_id = %s AND {_MAY_START}",
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
        async with self.writing("write a run's step") as db:
            await _hold(db, session_key, run_id, epoch)
            await _append(db, session_key, items, run_id, epoch, at)

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
        async with self.writing("end a run") as db:
            released = await db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL,"
                " updated_wall = %s WHERE key = %s AND lease_run_id = %s AND epoch = %s",
                (at, session_key, run_id, epoch),
            )
            if released.rowcount != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            await _close_calls(db, session_key, run_id, epoch, unanswered, at)
            await _append(db, session_key, exchange, run_id, epoch, at)
            await _record_outcomes(db, outcomes, at)
            await insert_orders(db, orders, at)

    async def end_turns(
        self, outcomes: Sequence[Outcome], at: WallS, orders: Sequence[DeliveryOrder] = ()
    ) -> None:
        async with self.writing("record turn outcomes") as db:
            await _record_outcomes(db, outcomes, at)
            await insert_orders(db, orders, at)

    async def since_messages(
        self, session_key: str, turn_ids: Sequence[TurnId], limit: int
    ) -> list[TranscriptEntry]:
        if not turn_ids:
            return []
        rows = await self.fetch(
            "read a transcript from a turn's message",
            f"SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE session_key = %s AND seq >= ("
            "SELECT MIN(seq) FROM transcript WHERE session_key = %s AND kind = 'user'"
            " AND (data::jsonb) ->> 'turn_id' = ANY(%s)) ORDER BY seq LIMIT %s",
            (session_key, session_key, list(turn_ids), limit),
        )
        return [entry_from_row(row) for row in rows]

    async def recover(self, at: WallS) -> list[TurnRecord]:
        async with self.writing("recover open turns") as db:
            held = await (
                await db.execute(
                    "SELECT key, lease_run_id, epoch FROM sessions"
                    " WHERE lease_run_id IS NOT NULL FOR UPDATE"
                )
            ).fetchall()
            for session_key, run_id, epoch in held:
                await _close_calls(db, session_key, run_id, epoch, INTERRUPTED_CALL_RESULT, at)
            interrupted = dict(
                await (
                    await db.execute(f"SELECT turn_id, run_id FROM turns WHERE {_MAY_REQUEUE}")
                ).fetchall()
            )
            await db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL"
                " WHERE lease_run_id IS NOT NULL"
            )
            await db.execute(
                "UPDATE turns SET state = 'queued', attempts = attempts + 1, run_id = NULL,"
                f" epoch = NULL, started_wall = NULL WHERE {_MAY_REQUEUE}"
            )
            rows = await (
                await db.execute(
                    f"SELECT {TURN_COLUMNS} FROM turns"
                    " WHERE state IN ('accepted', 'queued', 'running') ORDER BY seq"
                )
            ).fetchall()
        records = [turn_from_row(row) for row in rows]
        return [replace(r, run_id=interrupted.get(r.turn_id)) for r in records]

    async def set_delivery(self, turn_id: TurnId, delivery: str) -> None:
        async with self.writing("record a delivery") as db:
            await db.execute(
                "UPDATE turns SET delivery = %s WHERE turn_id = %s", (delivery, turn_id)
            )

    async def cron_jobs(self) -> list[CronJobState]:
        rows = await self.fetch(
            "read cron jobs",
            "SELECT job_id, agent_id, schedule, next_fire_wall, last_fire_wall FROM cron_jobs"
            " ORDER BY job_id",
        )
        return [CronJobState(*row) for row in rows]

    async def save_cron_job(self, state: CronJobState) -> None:
        async with self.writing("save a cron job") as db:
            await db.execute(
                "INSERT INTO cron_jobs (job_id, agent_id, schedule, next_fire_wall,"
                " last_fire_wall) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE"
                " SET agent_id = EXCLUDED.agent_id, schedule = EXCLUDED.schedule,"
                " next_fire_wall = EXCLUDED.next_fire_wall,"
                " last_fire_wall = EXCLUDED.last_fire_wall",
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
        rows = await self.fetch(
            "read a transcript",
            f"SELECT {TRANSCRIPT_COLUMNS} FROM transcript"
            " WHERE session_key = %s ORDER BY seq DESC LIMIT %s",
            (session_key, limit),
        )
        return [entry_from_row(row) for row in reversed(rows)]

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        rows = await self.fetch(
            "list sessions",
            f"{SESSION_SELECT} ORDER BY s.updated_wall DESC, s.key LIMIT %s OFFSET %s",
            (limit, offset),
        )
        return [_session(row) for row in rows]

    async def session(self, session_key: str) -> SessionRecord | None:
        row = await self._row(
            "read a session", f"{SESSION_SELECT} WHERE s.key = %s", (session_key,)
        )
        return None if row is None else _session(row)

    async def session_turns(self, session_key: str, limit: int) -> list[TurnRecord]:
        rows = await self.fetch(
            "read a session's turns",
            f"SELECT {TURN_COLUMNS} FROM turns WHERE session_key = %s ORDER BY seq DESC LIMIT %s",
            (session_key, limit),
        )
        return [turn_from_row(row) for row in reversed(rows)]

    async def count_sessions(self) -> int:
        row = await self._row("count sessions", "SELECT COUNT(*) FROM sessions")
        return int(row[0])


def _session(row: Sequence[Any]) -> SessionRecord:
    key, agent_id, epoch, run_id, granted, created, updated, total, open_ = row
    return SessionRecord(
        key, agent_id, int(epoch), run_id, granted, created, updated, int(total), int(open_)
    )


async def _turn(db: AsyncConnection[tuple[Any, ...]], turn_id: TurnId) -> TurnRecord | None:
    cursor = await db.execute(f"SELECT {TURN_COLUMNS} FROM turns WHERE turn_id = %s", (turn_id,))
    row = await cursor.fetchone()
    return None if row is None else turn_from_row(row)


async def _hold(
    db: AsyncConnection[tuple[Any, ...]], session_key: str, run_id: RunId, epoch: Epoch
) -> None:
    """Raise :class:`StaleEpochError` unless ``(run_id, epoch)`` holds the session's lease; the
    row stays locked until the transaction ends, so the lease cannot change under the write."""
    cursor = await db.execute(
        "SELECT 1 FROM sessions WHERE key = %s AND lease_run_id = %s AND epoch = %s FOR UPDATE",
        (session_key, run_id, epoch),
    )
    if await cursor.fetchone() is None:
        raise StaleEpochError(session_key, run_id, epoch)


async def _append(
    db: AsyncConnection[tuple[Any, ...]],
    session_key: str,
    items: Sequence[TranscriptItem],
    run_id: RunId,
    epoch: Epoch,
    at: WallS,
) -> None:
    """Append ``items`` to the session's transcript, stamped with the run that wrote them."""
    if not items:
        return
    async with db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO transcript (session_key, role, text, run_id, epoch, at_wall, kind,"
            " data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [transcript_values(session_key, item, run_id, epoch, at) for item in items],
        )


async def _close_calls(
    db: AsyncConnection[tuple[Any, ...]],
    session_key: str,
    run_id: RunId,
    epoch: Epoch,
    why: str | None,
    at: WallS,
) -> None:
    """Give every tool call ``(run_id, epoch)`` left without a result an error result saying
    ``why`` (nothing when ``why`` is None)."""
    if why is None:
        return
    cursor = await db.execute(
        f"SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE session_key = %s AND run_id = %s"
        " AND epoch = %s AND kind IN ('tool_calls', 'tool_result') ORDER BY seq",
        (session_key, run_id, epoch),
    )
    items = [entry_from_row(row).item for row in await cursor.fetchall()]
    await _append(db, session_key, closing_results(items, why), run_id, epoch, at)


async def _record_outcomes(
    db: AsyncConnection[tuple[Any, ...]], outcomes: Sequence[Outcome], at: WallS
) -> None:
    async with db.cursor() as cur:
        for state, guard in _MAY_END.items():
            ended = [o for o in outcomes if o.state is state]
            if not ended:
                continue
            await cur.executemany(
                f"UPDATE turns SET {OUTCOME_SET.format(p='%s')} WHERE turn_id = %s AND {guard}",
                [outcome_values(o, at) for o in ended],
            )
