"""Run one seeded schedule of the real runtime on virtual time and check it.

A run has a *safety phase* (faults on: provider errors, hangs, stubborn runs, aborts,
disconnects, crashes) and then a *liveness phase* (faults off: everything must settle). The
checkers watch every event; at the end the store is read back and checked too.

Crashes come at times drawn in advance, when every task is blocked (time only moves then),
or, in some seeds, right after the N-th commit of the store: between two durable points,
before the writers of that commit are woken (see ``_simulate``).

A share of the seeds run several gateway processes on the one store instead, which crash and
pause (``sim/cluster.py``, ``_simulate_cluster``); one checker sees them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import shutil
import tempfile
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from turngate.config import GatewayConfig
from turngate.config_agents import HeartbeatConfig
from turngate.core.keys import SessionKey, parse_session_key
from turngate.gateway.app import create_app, serve_engine
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.providers.base import Provider
from turngate.providers.fallback import ChainLink, FallbackChain
from turngate.runtime.agents import AgentRegistry, AgentSpec
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine, EngineSettings
from turngate.runtime.events import Event, EventBus
from turngate.sim.asgi import Wire
from turngate.sim.channel_world import ChannelWorld, draw_channel
from turngate.sim.checkers import Checker, ClusterCheck, LeaseCheck, Violation, WarningCounter
from turngate.sim.cluster import Cluster, ClusterGateway, Downtime, draw_cluster, started
from turngate.sim.disk import Outages
from turngate.sim.loop import VirtualDeadlockError, VirtualTimeLoop
from turngate.sim.surfaces import Surface
from turngate.sim.tools import SimToolCalls, SimTools, draw_tools
from turngate.sim.trace import Trace
from turngate.sim.workload import WAIT_MARGIN_S, ClientRecord, Gateway, client, crash_times
from turngate.sim.world import Faults, Profile, SimParams, SimProvider
from turngate.sim.zombie import Zombies
from turngate.store.base import Delivery, Store
from turngate.store.configured import open_store
from turngate.store.sqlite import SqliteStore
from turngate.tools.base import Toolbox

WALL_AT_ZERO = 1_800_000_000.0
"""The simulated wall clock at virtual time 0 (fixed, so that a seed replays exactly)."""
LIVENESS_SLACK_S = 3600.0
HISTORY_ENTRIES_MAX = 10
QUIET_LOGGERS = (
    "turngate.providers",
    "turngate.lanes",
    "turngate.channels",
    "turngate.gateway",
    "turngate.tools",
)
"""Loggers whose WARNING lines (retries, fallbacks, lane notes, tool timeouts) a simulation
keeps off the terminal; the runtime's own are counted for I8."""
STARTS_MAX = 100
RESTART_PAUSE_S = 1.0
"""A gateway that cannot start (its disk is full) is started again this much later."""


class FailureClass(enum.StrEnum):
    """How a run failed; each has its own exit code."""

    INVARIANT = "invariant"
    LIVENESS = "liveness"
    CRASH = "crash"

    @property
    def exit_code(self) -> int:
        return {"invariant": 1, "liveness": 2, "crash": 3}[self.value]


@dataclass(slots=True)
class SimResult:
    """The outcome of one seed."""

    seed: int
    params: SimParams
    violations: list[Violation] = field(default_factory=list)
    failure: FailureClass | None = None
    error: str = ""
    trace: Trace = field(default_factory=Trace)
    acked: int = 0
    replied: int = 0
    lives: int = 0
    """Gateway lives: one per process, and one more per restart after a crash."""
    virtual_s: float = 0.0
    tool_calls: int = 0
    """Tool calls its model made (seeds with tools)."""
    processes: int = 1
    """Gateway processes sharing the store."""

    @property
    def ok(self) -> bool:
        return self.failure is None


def seed_params(seed: int, profile: Profile | None = None, *, edges: bool = True) -> SimParams:
    """The parameters :func:`run_seed` draws for ``seed`` (without running it)."""
    return _draw(random.Random(seed), seed, profile, edges=edges)


def _draw(rng: random.Random, seed: int, profile: Profile | None, *, edges: bool) -> SimParams:
    chosen = profile or rng.choice(list(Profile))
    params = (
        SimParams.draw(rng, chosen)
        .with_lanes(random.Random(f"lanes-{seed}"))
        .with_models(random.Random(f"models-{seed}"))
        .with_storage(random.Random(f"storage-{seed}"))
        .with_lease_models(random.Random(f"lease-models-{seed}"))
        .with_zombies(random.Random(f"zombies-{seed}"))
        .with_commit_crash(random.Random(f"commit-crash-{seed}"))
    )
    params = replace(params, tools=draw_tools(seed, params.stall_timeout_s))
    if edges:
        params = params.with_edges(random.Random(f"edges-{seed}"))
        params = replace(params, channel=draw_channel(seed))
        params = replace(params, cluster=draw_cluster(seed, params))
    return params


def run_seed(seed: int, profile: Profile | None = None, *, edges: bool = True) -> SimResult:
    """Run the schedule of ``seed`` (its profile drawn from the seed unless given).

    ``edges=False`` keeps every client on the engine, leaves chat platforms out and runs
    one gateway process, as before the gateway's edges, channels and several processes
    joined the simulated world: a seed found then replays the schedule it found.
    """
    rng = random.Random(seed)
    params = _draw(rng, seed, profile, edges=edges)
    result = SimResult(seed, params)
    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="turngate-sim-", dir=shm if shm.is_dir() else None))
    logger = logging.getLogger("turngate.runtime")
    counter = WarningCounter()
    logger.addHandler(counter)
    quiet = logging.NullHandler()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addHandler(quiet)
    loop = VirtualTimeLoop()
    try:
        disk = Outages(params.storage_outages, random.Random(f"disk-{seed}"))
        simulate = _simulate if params.cluster is None else _simulate_cluster
        loop.run_until_complete(
            simulate(rng, params, _config(workdir), result, counter, disk, seed)
        )
    except VirtualDeadlockError as exc:
        result.failure = FailureClass.LIVENESS
        result.error = str(exc)
    except Exception:
        result.failure = FailureClass.CRASH
        result.error = traceback.format_exc()
    finally:
        _drain(loop)  # while the handlers are still there: leftovers log too
        logger.removeHandler(counter)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).removeHandler(quiet)
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if result.failure is None and result.violations:
        result.failure = FailureClass.INVARIANT
    return result


@dataclass(slots=True)
class _Life:
    number: int
    engine: Engine
    task: asyncio.Task[None]
    stop: asyncio.Event
    wire: Wire | None = None
    """The network to this life's app (seeds whose clients use the gateway's edges)."""


def _agents(
    params: SimParams, settings: EngineSettings, provider: Provider, faults: Faults, seed: int
) -> AgentRegistry | None:
    """In a seed with tools, every agent is offered the sim's tools; else the default."""
    if params.tools is None:
        return None
    tools = SimTools(params.tools, random.Random(f"tool-acts-{seed}"), faults)
    main = AgentSpec(
        "main",
        settings.policy(),
        provider,
        settings.system_prompt,
        toolbox=Toolbox([tools]),
        max_steps=params.tools.max_steps,
    )
    return AgentRegistry(main, strict=False)


def _sqlite(store: Store) -> SqliteStore:
    """The simulator crashes a SQLite store (``abandon``) and reads its file whole."""
    assert isinstance(store, SqliteStore)
    return store


def _config(workdir: Path) -> GatewayConfig:
    """The simulated gateway's configuration: its state (the store) in ``workdir``."""
    return GatewayConfig(state_dir=workdir, shutdown_drain_s=0.0)


def _edge_wire(engine: Engine, config: GatewayConfig) -> Wire:
    """A gateway app serving ``engine`` (its lifespan never runs: the simulation runs the
    engine), behind an in-process network."""
    app = create_app(config)
    serve_engine(app, engine)
    return Wire(app)


@dataclass(slots=True)
class _World:
    """What every gateway process of a seed shares: the faults' switch, the model, the engine
    settings and the agents."""

    faults: Faults
    provider: FallbackChain
    settings: EngineSettings
    agents: AgentRegistry | None
    tool_calls: SimToolCalls | None


def _world(rng: random.Random, params: SimParams, seed: int) -> _World:
    faults = Faults()
    lease_rng = random.Random(f"lease-calls-{seed}")
    tool_calls = (
        None
        if params.tools is None
        else SimToolCalls(params.tools, random.Random(f"tool-calls-{seed}"))
    )
    provider = FallbackChain(
        [
            ChainLink(
                f"sim/m{index}",
                SimProvider(rng, params, faults, lease_rng, tool_calls),
                params.model_retries,
                params.retry_backoff_s,
            )
            for index in range(params.models)
        ],
        rng,
    )
    settings = EngineSettings(
        queue_turns_max=params.queue_turns_max,
        stall_timeout_s=params.stall_timeout_s,
        run_timeout_s=params.run_timeout_s,
        abort_grace_s=params.abort_grace_s,
        turn_timeout_s=params.turn_timeout_s,
        history_entries_max=HISTORY_ENTRIES_MAX,
    )
    agents = _agents(params, settings, provider, faults, seed)
    return _World(faults, provider, settings, agents, tool_calls)


LeaseOf = Callable[[str], tuple[str | None, int]]
DeadlineOf = Callable[[list[str]], float | None]


def _readers(store_of: Callable[[], SqliteStore], disk: Outages) -> tuple[LeaseOf, DeadlineOf]:
    """The checker's reads of the store now: a session's lease, and the earliest deadline
    (virtual time) of some turns."""

    def lease_of(session_key: str) -> tuple[str | None, int]:
        with disk.observed():
            row = (
                store_of()
                .db.execute(
                    "SELECT lease_run_id, epoch FROM sessions WHERE key = ?", (session_key,)
                )
                .fetchone()
            )
        return (None, 0) if row is None else (row[0], int(row[1]))

    def deadline_of(turn_ids: list[str]) -> float | None:
        if not turn_ids:
            return None
        marks = ",".join("?" * len(turn_ids))
        with disk.observed():
            row = (
                store_of()
                .db.execute(
                    f"SELECT MIN(accepted_wall + timeout_s) FROM turns WHERE turn_id IN ({marks})",
                    turn_ids,
                )
                .fetchone()
            )
        return None if row is None or row[0] is None else float(row[0]) - WALL_AT_ZERO

    return lease_of, deadline_of


def _session_keys(params: SimParams) -> list[SessionKey]:
    """The clients' sessions. Session 0 is the agent's main session, which a shared
    heartbeat also uses."""
    return [
        parse_session_key("agent:sim:main" if index == 0 else f"agent:sim:s{index}")
        for index in range(params.sessions)
    ]


def _heartbeat(params: SimParams, engine: Engine) -> HeartbeatLane:
    """The seed's heartbeat lane on ``engine`` (a seed with one)."""
    assert params.heartbeat_every_s is not None
    heartbeat = HeartbeatConfig(every=params.heartbeat_every_s, isolated=params.heartbeat_isolated)
    return HeartbeatLane(engine, "sim", heartbeat)


async def _simulate(
    rng: random.Random,
    params: SimParams,
    config: GatewayConfig,
    result: SimResult,
    counter: WarningCounter,
    disk: Outages,
    seed: int,
) -> None:
    loop = asyncio.get_running_loop()
    world = _world(rng, params, seed)
    faults, provider, settings, agents = world.faults, world.provider, world.settings, world.agents
    channel = None if params.channel is None else ChannelWorld(seed, params.channel, faults)
    gateway = Gateway(excuses=disk.excuses)
    record = ClientRecord()
    trace = result.trace
    current: list[SqliteStore] = []
    lease_of, deadline_of = _readers(lambda: current[-1], disk)
    lease = LeaseCheck(params.stall_timeout_s, params.run_timeout_s, deadline_of)
    checker = Checker(params.abort_grace_s, lease_of, WALL_AT_ZERO, disk.excuses, lease)
    # Bound now, so that a crash of the simulation still reports what was found before it.
    result.violations = checker.violations
    zombies = (
        Zombies(
            random.Random(f"zombie-acts-{seed}"),
            gateway,
            checker,
            trace,
            lambda key: lease_of(key)[1],
            WALL_AT_ZERO,
        )
        if params.zombies
        else None
    )
    dying: list[asyncio.Task[None]] = []
    heartbeats: list[asyncio.Task[None]] = []
    wires: list[Wire] = []
    """The networks of lives that ended (their handlers' errors are checked at the end)."""

    async def start(number: int) -> _Life:
        # A gateway cannot start while its disk refuses writes: its supervisor tries again.
        for _ in range(STARTS_MAX):
            life = await try_start(number)
            if life is not None:
                return life
            trace.mark(loop.time(), f"gateway life {number} could not start (storage)")
            await asyncio.sleep(RESTART_PAUSE_S)
        raise RuntimeError(f"gateway life {number} did not start in {STARTS_MAX} attempts")

    async def try_start(number: int) -> _Life | None:
        checker.new_life(number)
        trace.mark(loop.time(), f"gateway life {number} starts")
        bus = EventBus()

        def observe(event: Event) -> None:
            trace.event(number, event)
            checker.on_event(event)
            if zombies is not None:
                zombies.on_event(event)

        bus.subscribe(observe)
        store = _sqlite(open_store(config, connection_factory=disk.connection_factory()))
        current.append(store)
        engine = Engine(
            store,
            provider,
            settings=settings,
            clock=LoopClock(WALL_AT_ZERO),
            events=bus,
            agents=agents,
            outbound=None if channel is None else channel.routes,
        )
        ready = asyncio.Event()
        stop = asyncio.Event()

        async def live() -> None:
            async with engine, asyncio.TaskGroup() as lanes:
                if params.heartbeat_every_s is not None and faults.on:
                    lane = _heartbeat(params, engine)
                    heartbeats.append(lanes.create_task(lane.run(), name="heartbeat"))
                runtime = None
                if channel is not None:
                    runtime = lanes.create_task(
                        channel.runtime(engine, number).run(), name="channel"
                    )
                ready.set()
                await stop.wait()
                if runtime is not None:
                    runtime.cancel()  # the channel stops before the engine, as in the gateway

        task = loop.create_task(live(), name=f"gateway life {number}")
        if not await started(task, ready):
            return None
        wire = _edge_wire(engine, config) if params.surfaces != (Surface.ENGINE,) else None
        gateway.engine = engine
        gateway.wire = wire
        gateway.up.set()
        return _Life(number, engine, task, stop, wire)

    def crash(life: _Life, after_commit: bool = False) -> None:
        trace.mark(loop.time(), f"gateway life {life.number} crashes")
        checker.crashed(loop.time(), after_commit=after_commit)
        if zombies is not None:
            zombies.crashed()
        gateway.engine = None
        gateway.wire = None
        gateway.up.clear()
        if life.wire is not None:
            life.wire.cut()
            wires.append(life.wire)
        life.engine.events = EventBus()
        store = life.engine.store
        assert isinstance(store, SqliteStore)
        store.abandon()
        life.task.cancel()
        dying.append(life.task)

    # A crash between two commits. The disk calls ``on_commit`` inside the group commit's
    # callback, right after COMMIT returned and before that callback resolves the group's
    # waiters. ``call_soon`` queues the crash ahead of their wake-ups (queued after it, when
    # the callback resolves them) and ahead of the next group's commit: that group can begin
    # only after this COMMIT (the callback closes the group before committing, and nothing
    # runs during the COMMIT), so its own commit callback is queued behind the crash, and the
    # crash's ``abandon()`` loses it. Callbacks queued before the crash still run first, but
    # none of them can commit or wake a writer of commit N. So the crash lands exactly
    # between commit N and commit N+1, with commit N durable and nobody told of it yet.
    armed: list[_Life] = []
    """The life a commit crash would end (empty: disarmed)."""
    commits = 0
    crashed_at_commit = asyncio.Event()

    def on_commit() -> None:
        nonlocal commits
        if not armed:
            return
        commits += 1
        if commits == params.crash_after_commit:
            loop.call_soon(crash_after_commit, armed.pop())

    def crash_after_commit(life: _Life) -> None:
        trace.mark(loop.time(), f"crash right after commit #{commits} of the store")
        crash(life, after_commit=True)
        crashed_at_commit.set()

    if params.crash_after_commit:
        disk.on_commit = on_commit
    storage = loop.create_task(_storage_outages(disk, trace), name="storage outages")
    life = await start(1)
    result.lives = 1
    keys = _session_keys(params)
    clients = [
        loop.create_task(client(rng, params, gateway, key, f"s{k}c{c}", record))
        for k, key in enumerate(keys)
        for c in range(params.clients_per_session)
    ]
    if channel is not None:
        clients.append(loop.create_task(channel.platform.people(), name="people"))
    if zombies is not None:
        zombies.second_processes(params.zombies, [str(key) for key in keys], params.safety_s)
    if params.crash_after_commit:
        armed.append(life)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(params.safety_s):
                await crashed_at_commit.wait()
        armed.clear()
        if crashed_at_commit.is_set():
            await asyncio.sleep(params.commit_crash_downtime_s)
            life = await start(life.number + 1)
            result.lives = life.number
    else:
        for at, downtime in crash_times(rng, params):
            await asyncio.sleep(max(0.0, at - loop.time()))
            crash(life)
            await asyncio.sleep(downtime)
            life = await start(life.number + 1)
            result.lives = life.number
    await asyncio.sleep(max(0.0, params.safety_s - loop.time()))
    await storage
    if zombies is not None:
        await zombies.wait()
    faults.on = False
    for task in heartbeats:
        task.cancel()
    trace.mark(loop.time(), "safety phase over: faults off, lanes stopped")
    budget = _liveness_budget(params)
    await _await_clients(clients, budget, result)
    # Let the last lane turns settle too before the final stop.
    settled = asyncio.Event()

    def check_settled(event: Event | None = None) -> None:
        if life.engine.snapshot().settled:
            settled.set()

    life.engine.events.subscribe(check_settled)
    check_settled()
    try:
        async with asyncio.timeout(budget):
            await settled.wait()
    except TimeoutError:
        checker.fail(
            "I4", loop.time(), f"turns still running or queued {budget:.0f}s after the clients"
        )
    if channel is not None and not await channel.settle(life.engine, budget):
        checker.fail(
            "I4",
            loop.time(),
            f"channel messages unacked or deliveries pending {budget:.0f}s after the clients",
        )
    if life.wire is not None:
        life.wire.cut()  # the clients are done; what they left behind stops with the gateway
        wires.append(life.wire)
    life.stop.set()
    await life.task
    life.engine.events = EventBus()
    for wire in wires:
        await wire.wait_closed()
        if wire.errors:
            raise RuntimeError(f"a gateway handler raised:\n{wire.errors[0]}")
    await _wait_leftovers(dying)
    await _check_final(config, result, record, checker, counter, world, channel)


async def _simulate_cluster(
    rng: random.Random,
    params: SimParams,
    config: GatewayConfig,
    result: SimResult,
    counter: WarningCounter,
    disk: Outages,
    seed: int,
) -> None:
    """Like :func:`_simulate`, with several gateway processes on one store, which crash and
    pause as drawn (``sim/cluster.py``)."""
    assert params.cluster is not None
    shape = params.cluster
    loop = asyncio.get_running_loop()
    world = _world(rng, params, seed)
    record = ClientRecord()
    trace = result.trace
    store = _sqlite(open_store(config, connection_factory=disk.connection_factory()))
    await store.open()
    lease_of, deadline_of = _readers(lambda: store, disk)
    lease = LeaseCheck(params.stall_timeout_s, params.run_timeout_s, deadline_of)
    downtime = Downtime(shape.takeover_s)
    checker = Checker(
        params.abort_grace_s,
        lease_of,
        WALL_AT_ZERO,
        disk.excuses,
        lease,
        ClusterCheck(shape.claim_ttl_s, downtime),
    )
    result.violations = checker.violations
    result.processes = len(shape.processes)
    gateway = ClusterGateway(
        excuses=lambda at, slack: disk.excuses(at, slack) or downtime.delays(at, slack),
        # A turn another process runs is learnt of at a poll of the client's process.
        wait_margin_s=WAIT_MARGIN_S + shape.claim_poll_s,
        rng=random.Random(f"routes-{seed}"),
    )

    def build(name: str, view: Store, bus: EventBus) -> Engine:
        settings = replace(
            world.settings,
            process_name=name,
            claim_ttl_s=shape.claim_ttl_s,
            claim_poll_s=shape.claim_poll_s,
        )
        clock = LoopClock(WALL_AT_ZERO)
        return Engine(
            view, world.provider, settings=settings, clock=clock, events=bus, agents=world.agents
        )

    def heartbeat(engine: Engine) -> Coroutine[Any, Any, None]:
        return _heartbeat(params, engine).run()

    lane = None if params.heartbeat_every_s is None else heartbeat
    cluster = Cluster(shape, store, build, checker, trace, disk, gateway, downtime, lane)
    storage = loop.create_task(_storage_outages(disk, trace), name="storage outages")
    await cluster.start_all()
    result.lives = len(shape.processes)
    clients = [
        loop.create_task(client(rng, params, gateway, key, f"s{k}c{c}", record))
        for k, key in enumerate(_session_keys(params))
        for c in range(params.clients_per_session)
    ]
    await cluster.run_faults()
    await asyncio.sleep(max(0.0, params.safety_s - loop.time()))
    await storage
    world.faults.on = False
    cluster.stop_lanes()
    trace.mark(loop.time(), "safety phase over: faults off, lanes stopped")
    budget = _liveness_budget(params)
    await _await_clients(clients, budget, result)
    if not await cluster.settle(budget):
        checker.fail(
            "I4",
            loop.time(),
            f"turns still open, running or queued {budget:.0f}s after the clients",
        )
    await cluster.stop()
    await store.close()
    result.lives = sum(cluster.lives.values())
    await _wait_leftovers(cluster.dying)
    await _check_final(config, result, record, checker, counter, world, None)


def _liveness_budget(params: SimParams) -> float:
    """How long the liveness phase gives the clients, then the gateway, to settle."""
    return params.turn_timeout_s * 2 * params.turns_per_client + LIVENESS_SLACK_S


async def _await_clients(
    clients: list[asyncio.Task[None]], budget: float, result: SimResult
) -> None:
    """Until every client is done, for at most ``budget`` (a liveness failure then)."""
    try:
        async with asyncio.timeout(budget):
            await asyncio.gather(*clients)
    except TimeoutError:
        result.failure = FailureClass.LIVENESS
        result.error = f"clients still waiting {budget:.0f}s after the faults stopped"
        for task in clients:
            task.cancel()


async def _wait_leftovers(dying: list[asyncio.Task[None]]) -> None:
    """Let the tasks of crashed lives end, and runs abandoned at shutdown (they ignored
    cancellation) finish on their own, on virtual time, so that nothing is destroyed while
    pending."""
    for task in dying:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    if leftovers:
        await asyncio.wait(leftovers, timeout=LIVENESS_SLACK_S)


async def _check_final(
    config: GatewayConfig,
    result: SimResult,
    record: ClientRecord,
    checker: Checker,
    counter: WarningCounter,
    world: _World,
    channel: ChannelWorld | None,
) -> None:
    """Read the store back whole and run the final checks over it."""
    loop = asyncio.get_running_loop()
    result.virtual_s = loop.time()
    final = _sqlite(open_store(config))
    await final.open()
    try:
        turns = {t.turn_id: t for t in await _all_turns(final)}
        # Every session's: the clients', the lanes' and the chat platform's people's.
        sessions = [row[0] for row in final.db.execute("SELECT key FROM sessions ORDER BY key")]
        transcript = [entry for key in sessions for entry in await final.transcript(key, 1_000_000)]
        deliveries = await _all_deliveries(final)
    finally:
        await final.close()
    result.acked = len(record.acked)
    result.tool_calls = 0 if world.tool_calls is None else world.tool_calls.made
    result.replied = sum(1 for t in turns.values() if t.state.value == "replied")
    if result.failure is None:
        if channel is not None:
            for finding in channel.check(turns, deliveries, loop.time()):
                checker.fail(finding.invariant, finding.at, finding.message)
        checker.finish(record, turns, transcript, counter.count, loop.time())


async def _all_turns(store: SqliteStore) -> list:  # type: ignore[type-arg]
    rows = store.db.execute("SELECT turn_id FROM turns ORDER BY seq").fetchall()
    found = []
    for (turn_id,) in rows:
        record = await store.get_turn(turn_id)
        if record is not None:
            found.append(record)
    return found


async def _all_deliveries(store: SqliteStore) -> list[Delivery]:
    sessions = store.db.execute("SELECT DISTINCT session_key FROM deliveries").fetchall()
    found: list[Delivery] = []
    for (session_key,) in sessions:
        found += await store.outbox.of_session(session_key, 1_000_000)
    return found


async def _storage_outages(disk: Outages, trace: Trace) -> None:
    """Fill and free the disk at the times the schedule drew."""
    loop = asyncio.get_running_loop()
    for outage in disk.outages:
        await asyncio.sleep(max(0.0, outage.start - loop.time()))
        disk.current = outage
        trace.mark(loop.time(), f"disk full: writes fail with p={outage.p_fail:g}")
        await asyncio.sleep(max(0.0, outage.end - loop.time()))
        disk.current = None
        trace.mark(loop.time(), f"disk has room again ({disk.failed} writes failed so far)")


def _drain(loop: VirtualTimeLoop) -> None:
    """Cancel whatever a failed run left behind and let it unwind, on virtual time."""
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in left:
        task.cancel()
    if left:
        loop.run_until_complete(asyncio.wait(left, timeout=LIVENESS_SLACK_S))
