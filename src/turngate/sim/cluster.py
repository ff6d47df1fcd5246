"""Several gateway processes on one store: a share of the seeds runs two or three.

The processes share one SQLite store in this one Python process: the same contract as
several gateway processes on one PostgreSQL database (``store/base.py``: a session's turns run
only in the process holding its claim). Each process is an :class:`~turngate.runtime.engine.
Engine` with a name of its own, its own event bus and short claim timings, drawn per seed.
Clients spread their turns over the processes, as behind a load balancer: each request goes
to one of the processes that are up (:class:`ClusterGateway`), a retry perhaps to another.

Faults, drawn in advance (:class:`ProcessFault`), each of one process:

- a **crash**: the process's store calls fail from then on, as a killed process's connection
  would (``the process went away``), and its tasks are cancelled; it releases nothing, so
  its claims stay in the store until they expire. It restarts later under the same name and
  takes its own sessions back at once. A crash waits for the process's store calls under way
  to be answered (:meth:`ProcessView.quiet`): the store is shared, so a crash cannot roll
  back that process's writes alone, and a write it committed must not go unheard;
- a **pause**: the process is cut off from the store for a while (every call raises
  ``storage_unavailable``), often past its claim's time to live, so that another process
  takes its sessions over; when it is back, its late writes must be refused.

Each process reaches the store through a :class:`ProcessView`, which tells the checker when
its process takes a session (:meth:`~turngate.sim.checkers.Checker.session_taken`), and when
each process was in trouble (:class:`Downtime`): what may excuse a late outcome or fence.

Chat platforms, the gateway's edges, zombie writers and crashes between two commits assume
one engine: seeds with any of them keep one process (:func:`draw_cluster`).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from turngate.errors import StorageUnavailableError, StoreError
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventBus
from turngate.sim.checkers import Checker
from turngate.sim.disk import CATCH_UP_S, Outages
from turngate.sim.surfaces import Surface
from turngate.sim.trace import Trace
from turngate.sim.workload import Gateway
from turngate.store.base import Claimed, SessionClaim, Store
from turngate.store.rows import CLAIM_SELECT, claim_from_row
from turngate.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from turngate.sim.world import SimParams

CLUSTER_SHARE = 0.4
"""Share of the seeds that may run several processes (those without a feature that assumes
one engine: about 40% of all) that do: about one seed in six."""
PROCESS_NAMES = ("p1", "p2", "p3")
CLAIM_TTL_S = (3.0, 10.0)
CLAIM_POLL_S = (0.5, 1.0)
FAULT_COUNTS = (0, 1, 2, 2, 3)
"""How many crashes and pauses a seed draws (one of these)."""
PAUSE_TTLS = (0.3, 2.5)
"""A pause lasts this many claim TTLs: over one, another process takes its sessions."""
DOWNTIME_TTLS = (0.0, 2.0)
"""A crashed process stays down this many claim TTLs."""
STARTS_MAX = 100
RESTART_PAUSE_S = 1.0
"""A process that cannot start (storage refuses its first writes) tries again this later."""


class FaultKind(enum.StrEnum):
    """What happens to a process."""

    CRASH = "crash"
    PAUSE = "pause"


@dataclass(frozen=True, slots=True)
class ProcessFault:
    """``process`` crashes (down for ``duration_s``) or pauses (cut off for ``duration_s``)
    at ``at`` (virtual seconds)."""

    at: float
    process: str
    kind: FaultKind
    duration_s: float


@dataclass(frozen=True, slots=True)
class ClusterParams:
    """A seed's gateway processes, their claim timings and their faults."""

    processes: tuple[str, ...]
    claim_ttl_s: float
    claim_poll_s: float
    faults: tuple[ProcessFault, ...] = ()

    @classmethod
    def draw(cls, rng: random.Random, safety_s: float) -> ClusterParams:
        """Two or three processes, their timings, and their faults in ``[0, safety_s]``."""
        processes = PROCESS_NAMES[: rng.choice([2, 2, 3])]
        ttl = rng.uniform(*CLAIM_TTL_S)
        poll = rng.uniform(*CLAIM_POLL_S)
        return cls(processes, ttl, poll, _draw_faults(rng, processes, ttl, safety_s))

    @property
    def takeover_s(self) -> float:
        """How long after a process stopped renewing its claims another may take its
        sessions: the claims' time to live, and a poll of the taker's (two, for one that just
        passed)."""
        return self.claim_ttl_s + 2 * self.claim_poll_s

    def line(self) -> str:
        """The parameters on one line."""
        faults = ",".join(
            f"{f.process}:{f.kind.value}@{f.at:.1f}+{f.duration_s:.1f}s" for f in self.faults
        )
        return (
            f"{'+'.join(self.processes)} claim_ttl={self.claim_ttl_s:.1f}s"
            f" claim_poll={self.claim_poll_s:.2f}s faults={faults or '-'}"
        )


def _draw_faults(
    rng: random.Random, processes: tuple[str, ...], ttl_s: float, safety_s: float
) -> tuple[ProcessFault, ...]:
    """Crashes and pauses in the safety phase, each of a process not down or paused then (as
    drawn: one whose restart storage slowed may still be; the cluster then skips the fault)."""
    busy_until = dict.fromkeys(processes, 0.0)
    faults = []
    for at in sorted(rng.uniform(0.0, safety_s) for _ in range(rng.choice(FAULT_COUNTS))):
        free = [name for name in processes if busy_until[name] <= at]
        if not free:
            continue
        name = rng.choice(free)
        if rng.random() < 0.5:
            kind, duration = FaultKind.CRASH, ttl_s * rng.uniform(*DOWNTIME_TTLS)
        else:
            kind, duration = FaultKind.PAUSE, ttl_s * rng.uniform(*PAUSE_TTLS)
        faults.append(ProcessFault(at, name, kind, duration))
        busy_until[name] = at + duration
    return tuple(faults)


def draw_cluster(seed: int, params: SimParams) -> ClusterParams | None:
    """The processes of ``seed`` when it runs several (from a Random of its own), else None:
    one process for most seeds, and for every seed with a feature that assumes one engine
    (a chat platform, the gateway's edges, zombie writers, a crash between two commits), so
    that those keep the schedules they had."""
    rng = random.Random(f"processes-{seed}")
    if rng.random() >= CLUSTER_SHARE:
        return None
    if (
        params.channel is not None
        or params.surfaces != (Surface.ENGINE,)
        or params.zombies
        or params.crash_after_commit
    ):
        return None
    return ClusterParams.draw(rng, params.safety_s)


@dataclass(slots=True)
class _Spell:
    process: str
    start: float
    end: float = math.inf
    """When it was over (infinite while it lasts)."""


@dataclass(slots=True)
class Downtime:
    """When each process was down or cut off from the store (the checker's
    :class:`~turngate.sim.checkers.ProcessTrouble`)."""

    takeover_s: float
    """See :attr:`ClusterParams.takeover_s`."""
    spells: list[_Spell] = field(default_factory=list)

    def begin(self, process: str, at: float) -> _Spell:
        """``process`` is down or cut off from ``at``; end the spell it returns when over."""
        spell = _Spell(process, at)
        self.spells.append(spell)
        return spell

    def blocked(self, process: str, at: float, slack_s: float) -> bool:
        """Whether ``process`` may have been unable to write at ``at``: its spell began by
        then and was over no more than its catching up and ``slack_s`` before."""
        return any(
            s.process == process and s.start <= at <= s.end + CATCH_UP_S + slack_s
            for s in self.spells
        )

    def delays(self, at: float, slack_s: float) -> bool:
        """Whether a spell may delay an outcome at ``at``: the sessions its process held wait
        for it to be back, or for another process to take them over."""
        return any(
            s.start <= at <= max(s.end, s.start + self.takeover_s) + CATCH_UP_S + slack_s
            for s in self.spells
        )


class ProcessView:
    """One simulated process's handle on the shared store. Opening and closing it is the
    cluster's business (the database outlives the processes); while ``cut`` every call
    raises ``storage_unavailable``, as over a network partition; once ``dead`` (crashed)
    every call fails as over a killed process's connection. A session taken is reported."""

    def __init__(
        self,
        store: SqliteStore,
        name: str,
        claim_of: Callable[[str], SessionClaim | None],
        took: Callable[[str, str, SessionClaim | None], None],
    ) -> None:
        self._store = store
        self.name = name
        self._claim_of = claim_of
        """Reads a session's claim as the store has it now (the simulator's own read)."""
        self._took = took
        """Called with this process's name, the session and its claim before, on a take."""
        self.cut = False
        self.dead = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def shared(self) -> bool:
        """True: several simulated processes share the store (the file underneath does not
        know it)."""
        return True

    async def open(self) -> None:
        """The cluster opened the store."""

    async def close(self) -> None:
        """The cluster closes the store."""

    async def claim_session(
        self, session_key: str, holder: str, at: float, ttl_s: float
    ) -> Claimed:
        """The store's, reporting a session taken. The claim before is read right before
        the store's call, which runs on at once: no other task writes in between."""
        before = self._claim_of(session_key)
        claim = self._guarded("claim_session", self._store.claim_session)
        claimed = cast(Claimed, await claim(session_key, holder, at, ttl_s))
        if claimed.taken:
            self._took(self.name, session_key, before)
        return claimed

    def __getattr__(self, name: str) -> Any:
        # The store's calls are guarded; the rest (its health, the stream of notices, which
        # SQLite never sends) is the store's own.
        attribute = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._guarded(name, attribute)

    def _guarded(
        self, name: str, method: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise StoreError(f"process {self.name}: the process went away ({name})")
            if self.cut:
                raise StorageUnavailableError(
                    f"process {self.name}: cut off from the store ({name})"
                )
            self._in_flight += 1
            self._idle.clear()
            try:
                return await method(*args, **kwargs)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

        return call

    async def quiet(self) -> None:
        """Until none of this process's store calls is under way: each caller has had its
        answer (and acted on it, up to its next wait)."""
        while self._in_flight:
            await self._idle.wait()


@dataclass(slots=True)
class ClusterGateway(Gateway):
    """The processes the clients talk to, as behind a load balancer: each request goes to
    one of those up, drawn from a Random of its own (a cut-off process is up, as far as the
    balancer can tell)."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    engines: dict[str, Engine] = field(default_factory=dict)

    def pick(self) -> Engine | None:
        """One of the processes up (None while all are down)."""
        names = sorted(self.engines)
        return self.engines[self.rng.choice(names)] if names else None

    def started(self, name: str, engine: Engine) -> None:
        """``name`` is up, as ``engine``."""
        self.engines[name] = engine
        self.up.set()

    def stopped(self, name: str) -> None:
        """``name`` is down: no request goes to it."""
        self.engines.pop(name, None)
        if not self.engines:
            self.up.clear()


@dataclass(slots=True)
class _Process:
    """One life of one process."""

    name: str
    life: int
    view: ProcessView
    engine: Engine
    task: asyncio.Task[None]
    stop: asyncio.Event


EngineFactory = Callable[[str, Store, EventBus], Engine]
"""Builds the engine of a process (its name, its view of the store, its event bus)."""
Lane = Callable[[Engine], Coroutine[Any, Any, None]]
"""A lane a process runs while faults are on (the heartbeat, in the first process)."""


@dataclass(slots=True)
class Cluster:
    """The gateway processes of one seed: starts them, crashes, pauses and restarts them as
    drawn, and stops them at the end."""

    params: ClusterParams
    store: SqliteStore
    build: EngineFactory
    checker: Checker
    trace: Trace
    disk: Outages
    gateway: ClusterGateway
    downtime: Downtime
    lane: Lane | None = None
    running: dict[str, _Process] = field(default_factory=dict)
    """The processes up now, by name."""
    lives: dict[str, int] = field(default_factory=dict)
    dying: list[asyncio.Task[None]] = field(default_factory=list)
    """The tasks of crashed lives (awaited at the end)."""
    lanes: list[asyncio.Task[None]] = field(default_factory=list)
    lanes_on: bool = True

    async def start_all(self) -> None:
        """Start every process, in name order."""
        for name in self.params.processes:
            await self.start(name)

    async def run_faults(self) -> None:
        """Crash and pause the processes as drawn; returns once every one is over."""
        async with asyncio.TaskGroup() as faults:
            for fault in self.params.faults:
                faults.create_task(self._fault(fault), name=f"{fault.kind} of {fault.process}")

    def stop_lanes(self) -> None:
        """Faults are over: lanes stop, and no process starts one again."""
        self.lanes_on = False
        for task in self.lanes:
            task.cancel()

    def settled(self) -> bool:
        """Whether every process is idle and no turn in the store is open."""
        if not all(p.engine.snapshot().settled for p in self.running.values()):
            return False
        with self.disk.observed():
            row = self.store.db.execute(
                "SELECT COUNT(*) FROM turns WHERE state IN ('accepted', 'queued', 'running')"
            ).fetchone()
        return int(row[0]) == 0

    async def settle(self, budget_s: float) -> bool:
        """Until :meth:`settled`, for at most ``budget_s``; whether it settled. Every step
        towards it ends with an event of some process (a turn's end, a run's release)."""
        done = asyncio.Event()

        def check(event: Event | None = None) -> None:
            if self.settled():
                done.set()

        unsubscribe = [p.engine.events.subscribe(check) for p in self.running.values()]
        check()
        try:
            async with asyncio.timeout(budget_s):
                await done.wait()
        except TimeoutError:
            return False
        finally:
            for stop in unsubscribe:
                stop()
        return True

    async def stop(self) -> None:
        """Stop every process as the gateway stops (it releases its claims)."""
        for name in sorted(self.running):
            process = self.running.pop(name)
            self.gateway.stopped(name)
            process.stop.set()
            await process.task
            process.engine.events = EventBus()

    # -- one process ----------------------------------------------------------------------

    async def start(self, name: str) -> None:
        """Start a life of ``name``, trying again while storage refuses its first writes."""
        life = self.lives[name] = self.lives.get(name, 0) + 1
        loop = asyncio.get_running_loop()
        for _ in range(STARTS_MAX):
            process = await self._try_start(name, life)
            if process is not None:
                self.running[name] = process
                self.gateway.started(name, process.engine)
                return
            self.trace.mark(loop.time(), f"{name}: gateway life {life} could not start (storage)")
            await asyncio.sleep(RESTART_PAUSE_S)
        raise RuntimeError(f"{name}: gateway life {life} did not start in {STARTS_MAX} attempts")

    async def _try_start(self, name: str, life: int) -> _Process | None:
        loop = asyncio.get_running_loop()
        self.checker.new_life(life, process=name)
        self.trace.mark(loop.time(), f"{name}: gateway life {life} starts")
        bus = EventBus()

        def observe(event: Event) -> None:
            self.trace.event(life, event, name)
            self.checker.on_event(event, name)

        bus.subscribe(observe)
        view = ProcessView(self.store, name, self._claim_of, self._took)
        engine = self.build(name, cast(Store, view), bus)
        ready = asyncio.Event()
        stop = asyncio.Event()

        async def live() -> None:
            async with engine, asyncio.TaskGroup() as lanes:
                if self.lane is not None and self.lanes_on and name == self.params.processes[0]:
                    self.lanes.append(lanes.create_task(self.lane(engine), name="lane"))
                ready.set()
                await stop.wait()

        task = loop.create_task(live(), name=f"{name} life {life}")
        if not await started(task, ready):
            return None
        return _Process(name, life, view, engine, task, stop)

    async def _fault(self, fault: ProcessFault) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, fault.at - loop.time()))
        process = self.running.get(fault.process)
        if process is None or process.view.cut:
            self.trace.mark(loop.time(), f"{fault.process}: {fault.kind} skipped (down or cut)")
            return
        spell = self.downtime.begin(fault.process, loop.time())
        if fault.kind is FaultKind.CRASH:
            await self._crash(process)
            await asyncio.sleep(fault.duration_s)
            await self.start(fault.process)
        else:
            self.trace.mark(loop.time(), f"{fault.process}: cut off from the store")
            process.view.cut = True
            await asyncio.sleep(fault.duration_s)
            process.view.cut = False
            self.trace.mark(loop.time(), f"{fault.process}: reaches the store again")
        spell.end = loop.time()

    async def _crash(self, process: _Process) -> None:
        """Kill ``process``: once its store calls under way are answered, its calls fail,
        its events go nowhere, and its tasks are cancelled (its claims stay)."""
        self.running.pop(process.name)
        self.gateway.stopped(process.name)
        await process.view.quiet()
        at = asyncio.get_running_loop().time()
        self.trace.mark(at, f"{process.name}: gateway life {process.life} crashes")
        self.checker.crashed(at, process=process.name)
        process.view.dead = True
        process.engine.events = EventBus()
        process.task.cancel()
        self.dying.append(process.task)

    # -- what the views report ------------------------------------------------------------

    def _claim_of(self, session_key: str) -> SessionClaim | None:
        with self.disk.observed():
            row = self.store.db.execute(CLAIM_SELECT.format(p="?"), (session_key,)).fetchone()
        return None if row is None else claim_from_row(row)

    def _took(self, name: str, session_key: str, before: SessionClaim | None) -> None:
        at = asyncio.get_running_loop().time()
        if before is not None and before.holder is not None:
            # Taken from a holder (itself in an earlier life, say): the store ended its run.
            self.trace.mark(at, f"{name}: takes {session_key} over from {before.holder}")
        self.checker.session_taken(at, session_key, name, before)


async def started(task: asyncio.Task[None], ready: asyncio.Event) -> bool:
    """Whether a simulated gateway life (``task``) got ready; False when storage refused its
    start (its supervisor tries again); anything else it raised is a crash of the simulation."""
    readiness = asyncio.get_running_loop().create_task(ready.wait())
    async with asyncio.timeout(60.0):
        await asyncio.wait({task, readiness}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        return True
    readiness.cancel()
    if not isinstance(task.exception(), StorageUnavailableError):
        task.result()
    return False
