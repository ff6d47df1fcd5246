"""Zombie writers: stale actors that still have the store's handle (invariant I6).

One process never issues a stale write of its own, so the fencing epoch of ``start_run`` and
``end_run`` only matters when an actor wakes up after it lost the session. Two kinds are
simulated, both writing straight through the live gateway's store, as another process on
the same database would:

- a **paused owner**: at a crash, each run in flight belongs to an owner that was only
  paused (a stopped process, a long GC pause), not killed. When the next life starts the
  same run again (recovery keeps the run id) under a newer epoch, the paused owner wakes and
  tries to record its run's end under its old epoch;
- a **second process**: it reads a session's epoch, sleeps, and once the session has moved
  past that epoch it tries to start a run under the epoch it read.

Every such write must be refused (``StaleEpochError``): the checker counts the refusals and
fails I6 on a write the store accepted. Their timing comes from a Random of their own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from turngate.core.transcript import TranscriptItem
from turngate.errors import StaleEpochError, StoreError
from turngate.runtime.events import Event, EventKind
from turngate.sim.checkers import Checker
from turngate.sim.trace import Trace
from turngate.sim.workload import Gateway
from turngate.store.base import Store

ATTEMPTS_MAX = 3
"""Writes one second process tries (each after a pause)."""
PAUSE_S = (0.5, 10.0)
"""How long a second process sleeps between looking at a session and writing."""


@dataclass(slots=True)
class Zombies:
    """The zombie writers of one schedule."""

    rng: random.Random
    gateway: Gateway
    checker: Checker
    trace: Trace
    epoch_of: Callable[[str], int]
    """The session's epoch in the store now (what a second process would read)."""
    wall_at_zero: float
    holding: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Per session, the run and epoch holding it in the current life."""
    paused: dict[tuple[str, str], int] = field(default_factory=dict)
    """(session, run) of an owner paused at a crash -> the epoch it still believes in."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def on_event(self, event: Event) -> None:
        """Follow the leases; wake a paused owner when its run starts again."""
        key, run_id, epoch = event.session_key, event.run_id, event.epoch
        if run_id is None or epoch is None:
            return
        if event.kind is EventKind.LEASE_ACQUIRED:
            self.holding[key] = (run_id, epoch)
            old = self.paused.pop((key, run_id), None)
            if old is not None and old < epoch:
                self._spawn(self._paused_owner(key, run_id, old))
        elif event.kind is EventKind.LEASE_RELEASED and self.holding.get(key) == (run_id, epoch):
            del self.holding[key]

    def crashed(self) -> None:
        """The gateway died: the owners of its runs in flight are paused, not gone."""
        for key, (run_id, epoch) in self.holding.items():
            self.paused[(key, run_id)] = epoch
        self.holding.clear()

    def second_processes(self, count: int, keys: list[str], safety_s: float) -> None:
        """Start ``count`` second processes, each on a session and at a time of its own."""
        for index in range(count):
            key = self.rng.choice(keys)
            at = self.rng.uniform(0.0, safety_s)
            self._spawn(self._second_process(index, key, at))

    async def wait(self) -> None:
        """Until every zombie has done what it was going to do."""
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(work))

    async def _paused_owner(self, key: str, run_id: str, epoch: int) -> None:
        store = self._store()
        if store is None:
            return
        loop = asyncio.get_running_loop()
        what = f"paused owner of run {run_id} wakes with epoch {epoch}: end_run"
        exchange = (
            TranscriptItem.user(f"zombie of {run_id}"),
            TranscriptItem.assistant("zombie reply"),
        )
        await self._attempt(
            key,
            what,
            store.end_run(key, run_id, epoch, (), exchange, self.wall_at_zero + loop.time()),
        )

    async def _second_process(self, index: int, key: str, at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, at - loop.time()))
        if self._store() is None:
            return
        seen = self.epoch_of(key)
        run_id = f"zombie-{index}"
        for _ in range(ATTEMPTS_MAX):
            await asyncio.sleep(self.rng.uniform(*PAUSE_S))
            store = self._store()
            if store is None or self.epoch_of(key) <= seen:
                continue  # not stale (yet): a write now would be a legitimate one
            what = f"second process read epoch {seen}, starts run {run_id} at {seen + 1}"
            await self._attempt(
                key,
                what,
                store.start_run(key, run_id, seen + 1, [], self.wall_at_zero + loop.time()),
            )

    async def _attempt(self, key: str, what: str, write: Coroutine[Any, Any, None]) -> None:
        at = asyncio.get_running_loop().time()
        try:
            await write
        except StaleEpochError:
            self.trace.mark(at, f"zombie {key}: {what}: refused (stale epoch)")
            self.checker.zombie_write(at, key, what, refused=True)
        except StoreError as exc:  # storage unavailable, or the store died with its life
            self.trace.mark(at, f"zombie {key}: {what}: lost ({exc.code})")
        else:
            self.trace.mark(at, f"zombie {key}: {what}: ACCEPTED")
            self.checker.zombie_write(at, key, what, refused=False)

    def _store(self) -> Store | None:
        engine = self.gateway.engine
        return None if engine is None else engine.store
