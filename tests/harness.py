"""The real runtime on virtual time: one harness for every test that drives an :class:`Engine`.

An :class:`EngineHarness` builds the real engine on a SQLite store in one file, with the
settings and the model a test gives it, records every event it emits, and (optionally) has the
simulator's invariant checker watch them. Everything runs on
:class:`~turngate.sim.loop.VirtualTimeLoop`: when every task waits, time jumps to the next
deadline, so a scenario asserts exact times and never sleeps for real.

One scenario, one life::

    events = EngineHarness(tmp_path, model).run(scenario)   # scenario(engine) -> None

Several lives of one store, with downtime between them, inside one virtual-time run::

    harness = EngineHarness(tmp_path, model, wall_at_zero=WALL, check_invariants=True)

    async def main() -> None:
        async with harness.engine() as engine:
            ...
        await asyncio.sleep(downtime_s)  # virtual time: the gateway is down
        async with harness.engine() as engine:
            ...

    run_virtual(main())
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from turngate.providers.base import Provider
from turngate.runtime.agents import AgentRegistry, AgentSpec
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine, EngineSettings
from turngate.runtime.events import Event, EventBus
from turngate.runtime.outbound import OutboundRouter
from turngate.sim.checkers import Checker
from turngate.sim.loop import run_virtual
from turngate.store.sqlite import SqliteStore
from turngate.tools.base import Toolbox
from turngate.types import WallS

DB_NAME = "turngate.db"

Scenario = Callable[[Engine], Awaitable[None]]
"""What a test does with a running engine."""


class EngineHarness:
    """Builds engines on one store file in ``state_dir``; every life's events go to
    :attr:`events`, in order.

    ``wall_at_zero`` pins the wall clock to virtual time 0 (for cron, and for the checker);
    ``check_invariants`` has the simulator's checker watch each life and fail it on any
    violation of I1-I8; ``outbound`` is what the channels owe (their router); with a
    ``toolbox``, the agent's model is offered its tools, for up to ``max_steps`` steps.
    """

    def __init__(
        self,
        state_dir: Path,
        provider: Provider,
        settings: EngineSettings | None = None,
        *,
        wall_at_zero: WallS | None = None,
        check_invariants: bool = False,
        outbound: OutboundRouter | None = None,
        toolbox: Toolbox | None = None,
        max_steps: int = 8,
    ) -> None:
        if check_invariants and wall_at_zero is None:
            raise ValueError("check_invariants: the checker needs wall_at_zero")
        self.db_path = state_dir / DB_NAME
        self.provider = provider
        self.settings = settings or EngineSettings()
        self.wall_at_zero = wall_at_zero
        self.check_invariants = check_invariants
        self.outbound = outbound
        self.toolbox = toolbox
        self.max_steps = max_steps
        self.events: list[Event] = []

    @asynccontextmanager
    async def engine(self) -> AsyncIterator[Engine]:
        """One life: a started engine on the store file, stopped on exit. Call it from a
        coroutine running on virtual time (:func:`~turngate.sim.loop.run_virtual`)."""
        store = SqliteStore(self.db_path)
        bus = EventBus()
        bus.subscribe(self.events.append)
        checker: Checker | None = None
        if self.check_invariants:
            assert self.wall_at_zero is not None
            checker = Checker(self.settings.abort_grace_s, lease_reader(store), self.wall_at_zero)
            bus.subscribe(checker.on_event)
        engine = Engine(
            store,
            self.provider,
            settings=self.settings,
            clock=LoopClock(self.wall_at_zero),
            events=bus,
            outbound=self.outbound,
            agents=self._agents(),
        )
        async with engine:
            yield engine
        if checker is not None:
            assert not checker.violations, "\n".join(map(str, checker.violations))

    def _agents(self) -> AgentRegistry | None:
        """With a toolbox, every agent's model is offered its tools; else the default."""
        if self.toolbox is None:
            return None
        settings = self.settings
        main = AgentSpec(
            "main",
            settings.policy(),
            self.provider,
            settings.system_prompt,
            toolbox=self.toolbox,
            max_steps=self.max_steps,
        )
        return AgentRegistry(main, strict=False)

    def run(self, scenario: Scenario) -> list[Event]:
        """Run ``scenario`` in one life on a fresh virtual-time loop (time starts at 0);
        return the events of that run."""
        first = len(self.events)

        async def main() -> None:
            async with self.engine() as engine:
                await scenario(engine)

        run_virtual(main())
        return self.events[first:]


def lease_reader(store: SqliteStore) -> Callable[[str], tuple[str | None, int]]:
    """What the checker reads of a session's lease: ``(run holding it, epoch)``."""

    def lease_of(session_key: str) -> tuple[str | None, int]:
        row = store.db.execute(
            "SELECT lease_run_id, epoch FROM sessions WHERE key = ?", (session_key,)
        ).fetchone()
        return (None, 0) if row is None else (row[0], row[1])

    return lease_of
