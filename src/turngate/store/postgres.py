"""The :class:`~turngate.store.base.Store` on PostgreSQL (psycopg 3, async, a connection pool).

Chosen by ``store = "postgresql://..."`` (or ``TURNGATE_STORE``). Every write is one
transaction; the same rules hold as on SQLite (:mod:`turngate.store.base`), and the turn
updates are guarded by the core's transition table as there (:func:`~turngate.store.rows.
state_guard`). A database that cannot be reached, or refuses writes, makes a write raise
:class:`~turngate.errors.StorageUnavailableError` (the caller may try it again) and shows in
:meth:`PostgresStore.health`; the pool reconnects by itself when the database is back. The
URL's password never reaches a message.

Several gateway processes may share one database, each running the sessions it claims
(:meth:`PostgresStore.claim_session`; a session row locked while it is claimed, so that two
processes claiming at once take turns) and telling the others of new turns and ended ones by
``NOTIFY`` (:meth:`PostgresStore.notify`, :meth:`PostgresStore.notices`).

One gateway process per instance name (``instance``, the name it claims sessions under): a
store holds an advisory lock on its name for as long as it is open, on a connection of its
own, and refuses to open while another process holds it (the PostgreSQL counterpart of the
state directory's lock): two processes with one name would each take the other's sessions as
an earlier life of its own. If the database restarts, the lock is taken again before the next
write; a store that finds it taken by another process meanwhile refuses every write
(``storage_unavailable``), and its runs are fenced by their epochs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from turngate.core.transcript import TranscriptItem, closing_results
from turngate.core.turn import OUTCOME_EVENTS, Outcome, TurnEvent
from turngate.errors import (
    SessionTakenError,
    StaleEpochError,
    StorageUnavailableError,
    StoreError,
)
from turngate.store.base import (
    INTERRUPTED_CALL_RESULT,
    Claimed,
    CronJobState,
    DeliveryOrder,
    Notice,
    NoticeKind,
    SessionClaim,
    SessionRecord,
    StoreHealth,
    TranscriptEntry,
    TurnRecord,
)
from turngate.store.postgres_outbox import PostgresOutbox, insert_orders
from turngate.store.postgres_schema import (
    INSTANCE_LOCK,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
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
    TRANSCRIPT_COLUMNS,
    TURN_COLUMNS,
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
    transcript_values,
    turn_from_row,
)
from turngate.types import Epoch, RunId, TurnId, WallS

POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
"""How long opening the store, or a write waiting for a connection, may wait for one."""
LOCK_CHECK_WRITES = 100
"""At most this many writes between two checks that the instance lock's connection lives."""
STATEMENT_TIMEOUT_MS = 30_000
"""No statement runs longer (a lock held by a stuck peer, a database overloaded)."""
NOTICE_CHANNEL = "turngate"
"""The ``LISTEN``/``NOTIFY`` channel of the processes sharing a database; a notice's payload
is ``<kind> <session key>``."""
RELISTEN_PAUSE_S = (0.1, 2.0)
"""The first and the longest pause before listening again on a new connection after the
last was lost (each failure doubles it)."""

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
        instance: str = "local",
    ) -> None:
        """``readonly``: never write, nor migrate (the ``sessions`` commands beside a running
        gateway); ``exclusive``: hold the lock on the ``instance`` name (a gateway does;
        ``db upgrade`` does not, so that it may run beside one); ``instance``: the name
        this process claims sessions under, unique among the processes sharing the
        database."""
        self.url = url
        self.instance = instance
        self._readonly = readonly
        self._exclusive = exclusive and not readonly
        self.shown = safe_url(url)
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None
        self._health = StoreHealth(writable=True)
        self._lock: AsyncConnection[tuple[Any, ...]] | None = None
        self._lock_turn = asyncio.Lock()
        self._lock_suspect = False
        """A write failed since the lock's connection was last seen alive."""
        self._writes_unchecked = 0
        self.outbox = PostgresOutbox(self)
        """Messages owed to chat platforms (see :mod:`~turngate.store.postgres_outbox`)."""

    # -- lifetime -------------------------------------------------------------------------

    async def open(self) -> None:
        pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            self.url,
            min_size=self._pool_size,
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
                    raise self._error(exc, "take the instance name's lock") from None
            if not self._readonly:
                await self._migrate()
        except BaseException:
            await self.close()
            raise

    @property
    def shared(self) -> bool:
        """True: several gateway processes may share the database."""
        return True

    async def _hold_store(self, *, opening: bool = False) -> None:
        """Hold the lock on this process's instance name (see the module docstring): take
        it, or take it again on a new connection if the one holding it was lost.

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
        # One check or re-take at a time: two writes re-taking at once would each open a
        # connection, and the loser would drop (or leak) the winner's lock.
        async with self._lock_turn:
            await self._check_or_take(opening)

    async def _check_or_take(self, opening: bool) -> None:
        lock = self._lock
        if lock is not None and not lock.closed and not lock.broken:
            if not self._lock_suspect and self._writes_unchecked < LOCK_CHECK_WRITES:
                return  # checked by the write that held the turn before this one
            try:
                await lock.execute("SELECT 1")
            except psycopg.Error:
                pass  # it died: take the lock again below
            else:
                self._lock_suspect, self._writes_unchecked = False, 0
                return
        if lock is not None:
            self._lock = None
            await lock.close()
        lock = await AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)
        )
        row = await (
            await lock.execute(
                "SELECT pg_try_advisory_lock(%s::integer, hashtext(%s))",
                (INSTANCE_LOCK, self.instance),
            )
        ).fetchone()
        if row is None or not row[0]:
            await lock.close()
            if opening:
                raise StoreError(
                    f"store {self.shown}: another gateway process runs as instance"
                    f" '{self.instance}' on this database; give each process its own instance"
                    " (the instance setting)"
                )
            raise StorageUnavailableError(
                f"storage {self.shown}: another gateway process took instance"
                f" '{self.instance}' on this database while this one's connection was lost;"
                " this process writes nothing more"
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

    async def get_turns(self, turn_ids: Sequence[TurnId]) -> list[TurnRecord]:
        if not turn_ids:
            return []
        rows = await self.fetch(
            "read turns",
            TURNS_SELECT.format(columns=TURN_COLUMNS, ids=marks("%s", len(turn_ids))),
            tuple(turn_ids),
        )
        return [turn_from_row(row) for row in rows]

    async def open_turns(self, session_key: str) -> list[TurnRecord]:
        rows = await self.fetch(
            "read a session's open turns",
            OPEN_TURNS_SELECT.format(columns=TURN_COLUMNS, p="%s"),
            (session_key,),
        )
        return [turn_from_row(row) for row in rows]

    # -- claims ---------------------------------------------------------------------------

    async def claim_session(
        self, session_key: str, holder: str, at: WallS, ttl_s: float
    ) -> Claimed:
        async with self.writing("claim a session") as db:
            # The row stays locked until the end: a process claiming at once waits, then
            # finds the session taken.
            cursor = await db.execute(CLAIM_SELECT.format(p="%s") + " FOR UPDATE", (session_key,))
            row = await cursor.fetchone()
            if row is None:
                return Claimed(SessionClaim(session_key, None, None, 0), taken=False)
            claim, lease_run_id = claim_from_row(row), row[4]
            if not may_take(claim, holder, at):
                return Claimed(claim, taken=False)
            await db.execute(TAKE_CLAIM.format(p="%s"), (holder, at + ttl_s, session_key))
            interrupted = await _end_previous(db, claim, lease_run_id, at)
            cursor = await db.execute(
                OPEN_TURNS_SELECT.format(columns=TURN_COLUMNS, p="%s"), (session_key,)
            )
            rows = await cursor.fetchall()
        held = SessionClaim(session_key, holder, at + ttl_s, claim.epoch)
        return Claimed(held, taken=True, open_turns=resumed(rows, interrupted))

    async def renew_claims(
        self, holder: str, session_keys: Sequence[str], at: WallS, ttl_s: float
    ) -> set[str]:
        if not session_keys:
            return set()
        async with self.writing("renew claims") as db:
            cursor = await db.execute(
                RENEW_CLAIMS.format(p="%s", keys=marks("%s", len(session_keys))),
                (at + ttl_s, holder, *session_keys),
            )
            rows = await cursor.fetchall()
        return {str(key) for (key,) in rows}

    async def release_claims(self, holder: str, session_keys: Sequence[str]) -> None:
        if not session_keys:
            return
        async with self.writing("release claims") as db:
            await db.execute(
                RELEASE_CLAIMS.format(p="%s", keys=marks("%s", len(session_keys))),
                (holder, *session_keys),
            )

    async def hold_singleton(self, name: str, holder: str, at: WallS, ttl_s: float) -> bool:
        async with self.writing("hold a singleton") as db:
            cursor = await db.execute(HOLD_SINGLETON.format(p="%s"), (name, holder, at + ttl_s, at))
            row = await cursor.fetchone()
        return row is not None

    async def release_singleton(self, name: str, holder: str) -> None:
        async with self.writing("release a singleton") as db:
            await db.execute(RELEASE_SINGLETON.format(p="%s"), (name, holder))

    async def session_claim(self, session_key: str) -> SessionClaim | None:
        row = await self._row(
            "read a session's claim",
            f"SELECT {CLAIM_COLUMNS} FROM sessions WHERE key = %s",
            (session_key,),
        )
        return None if row is None else claim_from_row(row)

    async def claimable(self, holder: str, at: WallS, limit: int) -> dict[str, list[TurnId]]:
        rows = await self.fetch(
            "list claimable sessions", CLAIMABLE_SELECT.format(p="%s"), (holder, at, limit)
        )
        return by_session(rows)

    async def notify(self, notice: Notice) -> None:
        async with self.writing("notify the other gateway processes") as db:
            await db.execute(
                "SELECT pg_notify(%s, %s)",
                (NOTICE_CHANNEL, f"{notice.kind.value} {notice.session_key}"),
            )

    async def notices(self) -> AsyncIterator[Notice]:
        """The notices of the processes sharing the database (this one's own too), on a
        connection of their own; a lost connection is made again after a pause (see
        :data:`RELISTEN_PAUSE_S`), and notices sent meanwhile are lost. The connection is
        closed when the iteration ends."""
        first, longest = RELISTEN_PAUSE_S
        pause = first
        while True:
            listener = await self._listener()
            if listener is not None:
                pause = first
                try:
                    async with aclosing(listener.notifies()) as notes:
                        async for note in notes:
                            notice = notice_of(note.payload)
                            if notice is not None:
                                yield notice
                except psycopg.Error:
                    pass  # the connection was lost: listen again on a new one
                finally:
                    await listener.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    async def _listener(self) -> AsyncConnection[tuple[Any, ...]] | None:
        """A new connection listening on :data:`NOTICE_CHANNEL`, or None if none can be
        made now."""
        try:
            listener = await AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=int(CONNECT_TIMEOUT_S),
                # It only reads: TCP keepalives notice a peer gone without a word.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
            )
        except psycopg.Error:
            return None
        try:
            await listener.execute(f"LISTEN {NOTICE_CHANNEL}")
        except psycopg.Error:
            await listener.close()
            return None
        return listener

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
        async with self.writing("start a run") as db:
            taken = await db.execute(*take_lease("%s", session_key, run_id, epoch, at, holder))
            if taken.rowcount != 1:
                cursor = await db.execute(CLAIM_SELECT.format(p="%s"), (session_key,))
                row = await cursor.fetchone()
                claim = None if row is None else claim_from_row(row)
                raise lease_refused(session_key, run_id, epoch, holder, claim)
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
        self,
        outcomes: Sequence[Outcome],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        holder: str | None = None,
    ) -> None:
        async with self.writing("record turn outcomes") as db:
            if holder is not None and outcomes:
                # FOR SHARE: no claim changes hands until these outcomes are written.
                cursor = await db.execute(
                    HOLDERS_OF_TURNS.format(ids=marks("%s", len(outcomes))) + " FOR SHARE",
                    [o.turn_id for o in outcomes],
                )
                lost = not_held(await cursor.fetchall(), holder)
                if lost is not None:
                    raise SessionTakenError(lost, holder)
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


async def _end_previous(
    db: AsyncConnection[tuple[Any, ...]],
    claim: SessionClaim,
    lease_run_id: RunId | None,
    at: WallS,
) -> dict[TurnId, RunId]:
    """End what the session's previous holder (or an earlier life of its new one) left: close
    its run's open tool calls, queue its running turns again; returns the turns that were
    running, each with its run. The caller freed the lease in the same transaction."""
    key = claim.session_key
    if lease_run_id is not None:
        await _close_calls(db, key, lease_run_id, claim.epoch, INTERRUPTED_CALL_RESULT, at)
    cursor = await db.execute(INTERRUPTED_SELECT.format(p="%s"), (key,))
    interrupted = {str(turn_id): str(run_id) for turn_id, run_id in await cursor.fetchall()}
    await db.execute(REQUEUE.format(p="%s"), (key,))
    return interrupted


def notice_of(payload: str) -> Notice | None:
    """The notice a ``NOTIFY`` payload (``<kind> <session key>``) tells, or None for one
    this code cannot read (sent by a newer turngate, or by hand)."""
    kind, _, session_key = payload.partition(" ")
    try:
        return Notice(NoticeKind(kind), session_key) if session_key else None
    except ValueError:
        return None


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
