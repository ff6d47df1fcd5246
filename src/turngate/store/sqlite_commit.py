"""The writes of one SQLite connection, grouped: all the writes of one event-loop iteration go
into one transaction (each in a savepoint of its own), committed once at the end of the
iteration, and each writer returns only once that commit is durable.

A group can be *lost* before its commit: SQLite rolls a whole transaction back on
``SQLITE_FULL`` and some I/O errors, and a COMMIT can fail. Every writer of a lost group is
told (:class:`~turngate.errors.StorageUnavailableError`), never acknowledged, never left
waiting; the store is unhealthy (:meth:`GroupCommits.health`) until a commit succeeds again.
Every SQLite error is translated in one place, :func:`storage_error`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

from turngate.errors import StorageUnavailableError, StoreError
from turngate.store.base import StoreHealth


class _GroupCommit:
    """One group transaction: the writes of one loop iteration, committed together, and who
    waits for that commit. ``lost`` is set when the transaction is gone before its commit
    (SQLite rolls a whole transaction back on ``SQLITE_FULL`` and some I/O errors)."""

    __slots__ = ("lost", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.lost: StoreError | None = None


class GroupCommits:
    """The group transactions of one connection (:attr:`db`, set when the store opens)."""

    def __init__(
        self,
        path: Path,
        *,
        on_rollback: Callable[[], None] = lambda: None,
        on_commit: Callable[[sqlite3.Connection], None] = lambda db: None,
    ) -> None:
        self.path = path
        self._on_commit = on_commit
        """Told of every successful commit (a WAL checkpoint may be due)."""
        self._on_rollback = on_rollback
        """Told whenever a write is rolled back (what the store keeps in memory of its
        writes may be gone from the file)."""
        self.db: sqlite3.Connection | None = None
        self._group: _GroupCommit | None = None
        self._write_failure: str | None = None
        self._write_failures = 0

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (a :class:`StoreError` before open or after close)."""
        if self.db is None:
            raise StoreError(f"store {self.path}: used before open() or after close()")
        return self.db

    def health(self) -> StoreHealth:
        """Whether the last write committed, and why not."""
        return StoreHealth(
            self._write_failure is None, self._write_failure or "", self._write_failures
        )

    @asynccontextmanager
    async def write(self, doing: str) -> AsyncIterator[sqlite3.Connection]:
        """One atomic write; returns once it is committed, or raises
        :class:`~turngate.errors.StorageUnavailableError` when it was not."""
        with self._op(doing) as (db, group):
            yield db
        await self._durable(group)

    @contextmanager
    def _op(self, doing: str) -> Iterator[tuple[sqlite3.Connection, _GroupCommit]]:
        """One atomic operation inside the current group transaction (a savepoint)."""
        db = self.connection
        group = self._group
        if group is None:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.failed(exc, doing) from None
            group = self._group = _GroupCommit()
            asyncio.get_running_loop().call_soon(self._commit, group)
        try:
            db.execute("SAVEPOINT op")
        except sqlite3.Error as exc:
            error = self.failed(exc, doing)
            self._lose(group, error)
            raise error from None
        try:
            yield db, group
        except sqlite3.Error as exc:
            error = self.failed(exc, doing)
            self._undo(group, error)
            raise error from None
        except BaseException:
            self._undo(group, None)
            raise
        try:
            db.execute("RELEASE op")
        except sqlite3.Error as exc:
            error = self.failed(exc, doing)
            self._lose(group, error)
            raise error from None

    def _undo(self, group: _GroupCommit, error: StoreError | None) -> None:
        """Roll one operation back, keeping the rest of its group if SQLite kept it."""
        db = self.connection
        self._on_rollback()
        if db.in_transaction:
            try:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
                return
            except sqlite3.Error as exc:
                error = self.failed(exc, "undo a write")
        # SQLite rolled the whole transaction back (SQLITE_FULL does): every write of the
        # group is gone, so none of them may be acknowledged.
        self._lose(group, error or StorageUnavailableError(f"storage {self.path}: lost a write"))

    def _lose(self, group: _GroupCommit, error: StoreError) -> None:
        """The group's transaction is gone: fail everyone waiting on it, start afresh."""
        group.lost = error
        self._on_rollback()
        if self._group is group:
            self._group = None
        db = self.db
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
        db = self.db
        try:
            if db is None:
                raise sqlite3.OperationalError("the store was closed before its commit")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT may or may not have rolled back already (SQLITE_FULL does):
            # finish the job without raising, so that every waiter below hears of it.
            self._on_rollback()
            if db is not None and db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            group.lost = self.failed(exc, "commit")
            _fail(group.waiters, group.lost)
            return
        self._write_failure = None
        self._on_commit(db)
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def failed(self, exc: sqlite3.Error, doing: str) -> StoreError:
        """The turngate error for a failed SQLite call; a write failure marks the store
        unhealthy until a commit succeeds again."""
        error = storage_error(self.path, exc, doing)
        if isinstance(error, StorageUnavailableError):
            self._write_failure = error.message
            self._write_failures += 1
        return error

    @contextmanager
    def reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A read; a failing disk is reported as :class:`StorageUnavailableError`."""
        try:
            yield self.connection
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc, doing) from None

    def rows(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.reading(doing) as db:
            return db.execute(sql, params).fetchall()

    def row(self, doing: str, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.reading(doing) as db:
            return db.execute(sql, params).fetchone()

    def flush(self) -> None:
        """Commit the group still open, if any (at close)."""
        group = self._group
        if group is not None:
            self._commit(group)

    def abandon(self) -> None:
        """Fail the open group's writers as a killed process would (crash simulation)."""
        group, self._group = self._group, None
        self._on_rollback()
        if group is not None:
            group.lost = StoreError(f"store {self.path}: the process went away")
            _fail(group.waiters, group.lost)


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
