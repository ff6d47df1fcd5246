"""A disk that fills up, or a database that goes away: storage outages for the simulator.

During an outage, writes to the SQLite file fail the way a full disk makes them fail: a
statement (``INSERT``, ``UPDATE``, ``DELETE``) or the ``COMMIT`` itself raises
``database or disk is full``, and SQLite has already rolled the whole transaction back (it
does so on ``SQLITE_FULL``), so every write of the group transaction is lost, not just the one
that failed. In an outage that also fails reads (``reads``: the database is unreachable, as a
PostgreSQL server restarting is), a ``SELECT`` fails too, with ``disk I/O error``. Whether one
statement fails is drawn from the run's Random, so a seed replays exactly.

:class:`Outages` also answers the checker's question: could storage have delayed an event at
time ``t``? Turns cannot end while their end cannot be written down; the runtime catches up
within its retry pause of storage coming back.

The disk also reports every successful ``COMMIT`` (:attr:`Outages.on_commit`): the durable
points at which the runner can crash the gateway (``sim/runner.py``).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from turngate.runtime.owner import STORAGE_RETRY_MAX_S

WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")
FULL = "database or disk is full"
UNREACHABLE = "disk I/O error"
CATCH_UP_S = STORAGE_RETRY_MAX_S + 0.5
"""After an outage, how long the runtime may take to notice that writes work again (its
longest pause between attempts, plus a little)."""


@dataclass(frozen=True, slots=True)
class Outage:
    """Writes fail from ``start`` until ``end`` (virtual seconds), each with ``p_fail``; with
    ``reads``, reads too."""

    start: float
    end: float
    p_fail: float
    reads: bool = False


class Outages:
    """The outages of one run, and a disk that fails during them."""

    def __init__(self, outages: Sequence[Outage], rng: random.Random) -> None:
        self.outages = tuple(outages)
        self.rng = rng
        self.current: Outage | None = None
        self.failed = 0
        self.on_commit: Callable[[], None] | None = None
        """Called right after each ``COMMIT`` that succeeded, before anything else runs."""
        self.observing = False
        """True while the simulator itself reads the store (its checks are not the gateway's
        reads: no outage fails them)."""

    def excuses(self, at: float, slack_s: float) -> bool:
        """Whether an outage may explain a delay noticed at ``at``: one began before it and
        ended no more than ``CATCH_UP_S + slack_s`` before it."""
        return any(o.start <= at <= o.end + CATCH_UP_S + slack_s for o in self.outages)

    @contextmanager
    def observed(self) -> Iterator[None]:
        """A read of the simulator's own (see :attr:`observing`)."""
        self.observing = True
        try:
            yield
        finally:
            self.observing = False

    def connection_factory(self) -> type[sqlite3.Connection]:
        """A :class:`sqlite3.Connection` class whose writes fail during outages."""
        return _connection_class(self)

    def fails(self, sql: str) -> str | None:
        """Why this statement fails now, or None: a write or a commit during an outage, a
        read during one that fails reads."""
        outage = self.current
        if outage is None or self.observing:
            return None
        statement = sql.lstrip()[:6].upper()
        if statement in WRITE_VERBS or statement == "COMMIT":
            why = FULL
        elif statement == "SELECT" and outage.reads:
            why = UNREACHABLE
        else:
            return None
        if self.rng.random() >= outage.p_fail:
            return None
        self.failed += 1
        return why


def _connection_class(disk: Outages) -> type[sqlite3.Connection]:
    class FailingDiskConnection(sqlite3.Connection):
        """Writes fail like on a full disk while ``disk`` has an outage."""

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            self._check(sql)
            cursor = super().execute(sql, parameters)
            if disk.on_commit is not None and sql.lstrip()[:6].upper() == "COMMIT":
                disk.on_commit()
            return cursor

        def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
            self._check(sql)
            return super().executemany(sql, parameters)

        def _check(self, sql: str) -> None:
            why = disk.fails(sql)
            if why is not None:
                if self.in_transaction:
                    super().execute("ROLLBACK")
                raise sqlite3.OperationalError(why)

    return FailingDiskConnection


def draw_outages(rng: random.Random, safety_s: float) -> tuple[Outage, ...]:
    """Storage outages inside the safety phase, one after the other: none in most runs; else
    one to three, from a blip to twenty seconds, failing some or all writes, and half of them
    reads too."""
    if rng.random() < 0.7:
        return ()
    outages = []
    after = 0.0
    for _ in range(rng.randint(1, 3)):
        start = rng.uniform(after, safety_s)
        end = min(start + rng.choice([0.05, 0.5, 3.0, 20.0]), safety_s)
        outages.append(Outage(start, end, rng.choice([0.3, 1.0]), rng.random() < 0.5))
        after = end
    return tuple(outages)
