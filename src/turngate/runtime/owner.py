"""The owner of one active session: the only code that changes that session's state.

An owner is a task that exists while its session has something running or queued, and ends
as soon as the session is idle (idle sessions cost no task). It takes commands from an inbox
one at a time, feeds them to the pure :class:`~turngate.core.session.SessionCore`, and carries
out the effects in order. Between commands it waits with a deadline: the core's next one
(lease expiry, grace end, a queued turn's deadline); when it passes, it ticks the core. That
deadline wait is the watchdog: a stalled run is noticed at its own deadline, not at the next
periodic sweep.

Outcomes are delivered only after every effect of a step is applied, so when a client holds
turn N's outcome, the lease of turn N is already released in the store (I5).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from turngate.core.effects import (
    CancelRun,
    Effect,
    EndRun,
    EndTurns,
    Enqueued,
    IgnoredStale,
    StartRun,
    Steered,
)
from turngate.core.queue import QueueMode
from turngate.core.session import RunCancelled, RunFailed, RunResult, SessionCore
from turngate.core.turn import Outcome, Turn
from turngate.errors import ErrorCode, StaleEpochError
from turngate.runtime.agents import AgentSpec
from turngate.runtime.events import EventKind
from turngate.runtime.run import RunInbox, RunProgress, RunSpec, execute_run
from turngate.types import Epoch, MonotonicS, RunId

if TYPE_CHECKING:
    from turngate.runtime.engine import Engine


@dataclass(frozen=True, slots=True)
class Submit:
    """A newly accepted turn for this session."""

    turn: Turn
    mode: QueueMode
    lane: str = "direct"


@dataclass(frozen=True, slots=True)
class Abort:
    """A user abort; ``done`` receives the ids of the turns that will end aborted."""

    run_id: RunId | None
    done: asyncio.Future[list[RunId]]


@dataclass(frozen=True, slots=True)
class Unstick:
    """An operator forces the session free; ``done`` receives the ids of the turns ended."""

    done: asyncio.Future[list[RunId]]


@dataclass(frozen=True, slots=True)
class RunDone:
    """A run's task finished."""

    run_id: RunId
    epoch: Epoch
    result: RunResult


Command = Submit | Abort | Unstick | RunProgress | RunDone


@dataclass(slots=True)
class SessionOwner:
    """Owns one session while it is active. Created and removed by the engine."""

    engine: Engine
    session_key: str
    agent: AgentSpec
    core: SessionCore | None = None
    task: asyncio.Task[None] | None = None
    runs: dict[RunId, asyncio.Task[RunResult]] = field(default_factory=dict)
    lanes: dict[str, str] = field(default_factory=dict)
    started_at: dict[RunId, MonotonicS] = field(default_factory=dict)
    inboxes: dict[RunId, RunInbox] = field(default_factory=dict)
    free_since: MonotonicS = 0.0
    _inbox: deque[Command] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def post(self, command: Command) -> None:
        """Queue a command for the owner task (synchronous; never blocks)."""
        self._inbox.append(command)
        self._wake.set()

    async def run(self) -> None:
        """The owner task: process commands until the session is idle."""
        engine = self.engine
        epoch = await engine.store.session_epoch(self.session_key)
        core = self.core = SessionCore(self.session_key, epoch, self.agent.policy)
        self.free_since = engine.clock.now()
        while True:
            if self._inbox:
                await self._apply(self._dispatch(core, self._inbox.popleft()))
                continue
            deadline = core.next_deadline()
            if deadline is None:
                engine.owner_finished(self)
                return
            if not await self._wait(deadline):
                await self._apply(core.tick(max(engine.clock.now(), deadline)))

    async def _wait(self, deadline: MonotonicS) -> bool:
        """Wait for a command until ``deadline``; False when the deadline came first."""
        self._wake.clear()
        try:
            async with asyncio.timeout_at(deadline):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def _dispatch(self, core: SessionCore, command: Command) -> list[Effect]:
        now = self.engine.clock.now()
        match command:
            case Submit(turn, mode, lane):
                self.lanes[turn.turn_id] = lane
                if mode is QueueMode.STEER and not self._steerable(core):
                    mode = QueueMode.FOLLOWUP
                effects = core.submit(turn, mode, now)
                for effect in effects:
                    if isinstance(effect, Steered):
                        taken = self.inboxes[effect.run_id].offer(effect.turn)
                        assert taken, "checked by _steerable with no await in between"
                return effects
            case RunProgress(run_id, epoch, text):
                effects = core.progress(run_id, epoch, now)
                active = core.active
                if text and not effects and active is not None:
                    self.engine.publish_delta(active.batch.turns, run_id, text)
                return effects
            case RunDone(run_id, epoch, result):
                return core.run_ended(run_id, epoch, result, now)
            case Abort(run_id, done):
                effects, ids = core.abort(run_id, now)
                if not done.done():
                    done.set_result(ids)
                return effects
            case Unstick(done):
                effects, ids = core.unstick(now)
                if not done.done():
                    done.set_result(ids)
                return effects

    async def _apply(self, effects: list[Effect]) -> None:
        engine = self.engine
        store = engine.store
        key = self.session_key
        ended: list[Outcome] = []
        # A turn enqueued and started in the same step goes straight to running.
        started_now = {t.turn_id for e in effects if isinstance(e, StartRun) for t in e.turns}
        for effect in effects:
            now = engine.clock.now()
            match effect:
                case Enqueued(turn_ids):
                    waiting = [turn_id for turn_id in turn_ids if turn_id not in started_now]
                    if waiting:
                        await store.mark_queued(waiting)
                    for turn_id in turn_ids:
                        engine.emit(
                            EventKind.QUEUED, key, turn_id=turn_id, lane=self._lane(turn_id)
                        )
                case StartRun(run_id, epoch, turns):
                    try:
                        await store.start_run(
                            key, run_id, epoch, [t.turn_id for t in turns], engine.clock.wall()
                        )
                    except StaleEpochError as exc:
                        engine.stale_write_refused(exc)
                        raise
                    engine.emit(EventKind.LEASE_ACQUIRED, key, run_id=run_id, epoch=epoch)
                    for turn in turns:
                        ready_at = max(turn.accepted_at, self.free_since)
                        self._started(run_id, epoch, turn, now, ready_wait_s=now - ready_at)
                    self.started_at[run_id] = now
                    self._start(run_id, epoch, turns)
                case Steered(run_id, epoch, turn):
                    await store.join_run(key, turn.turn_id, run_id, epoch, engine.clock.wall())
                    self._started(
                        run_id, epoch, turn, now, 0.0, detail="steered into the running turn"
                    )
                case CancelRun(run_id, epoch, reason):
                    engine.emit(
                        EventKind.CANCEL_REQUESTED,
                        key,
                        run_id=run_id,
                        epoch=epoch,
                        code=reason.code,
                        detail=f"cancelling run: {reason.value} ({self._ages(run_id, now)})",
                    )
                    task = self.runs.get(run_id)
                    if task is not None:
                        task.cancel(msg=reason.value)
                case EndRun(run_id, epoch, outcomes, fenced, exchange):
                    try:
                        await store.end_run(
                            key, run_id, epoch, outcomes, exchange, engine.clock.wall()
                        )
                    except StaleEpochError as exc:
                        # Another owner took the session (only possible with a shared store):
                        # this owner's view is stale, so it must stop.
                        engine.stale_write_refused(exc)
                        raise
                    self.runs.pop(run_id, None)
                    if fenced:
                        engine.emit(
                            EventKind.FENCED,
                            key,
                            run_id=run_id,
                            epoch=epoch,
                            detail="run ignored cancellation past abort_grace; epoch fenced"
                            f" ({self._ages(run_id, now)})",
                        )
                    self.started_at.pop(run_id, None)
                    self.inboxes.pop(run_id, None)
                    engine.emit(EventKind.LEASE_RELEASED, key, run_id=run_id, epoch=epoch)
                    self.free_since = now
                    ended.extend(outcomes)
                case EndTurns(outcomes):
                    await store.end_turns(outcomes, engine.clock.wall())
                    ended.extend(outcomes)
                case IgnoredStale(run_id, epoch, what):
                    engine.emit(
                        EventKind.STALE_IGNORED,
                        key,
                        run_id=run_id,
                        epoch=epoch,
                        detail=f"ignored {what} from a run that no longer holds the session",
                    )
        for outcome in ended:
            engine.deliver(key, outcome, self.lanes.pop(outcome.turn_id, "direct"))

    def _started(
        self,
        run_id: RunId,
        epoch: Epoch,
        turn: Turn,
        now: MonotonicS,
        ready_wait_s: float,
        detail: str = "",
    ) -> None:
        self.engine.emit(
            EventKind.STARTED,
            self.session_key,
            run_id=run_id,
            turn_id=turn.turn_id,
            epoch=epoch,
            lane=self._lane(turn.turn_id),
            wait_s=now - turn.accepted_at,
            ready_wait_s=ready_wait_s,
            detail=detail,
        )

    def _steerable(self, core: SessionCore) -> bool:
        """Whether the running run still takes steered messages."""
        active = core.active
        if active is None:
            return False
        inbox = self.inboxes.get(active.run_id)
        return inbox is not None and inbox.open

    def _ages(self, run_id: RunId, now: MonotonicS) -> str:
        """``run age 12.0s, no progress for 10.0s`` for a run of this session."""
        parts = []
        started = self.started_at.get(run_id)
        if started is not None:
            parts.append(f"run age {now - started:.1f}s")
        active = self.core.active if self.core is not None else None
        if active is not None and active.run_id == run_id:
            parts.append(f"no progress for {now - active.lease.last_progress_at:.1f}s")
        return ", ".join(parts) or "age unknown"

    def _lane(self, turn_id: str) -> str:
        return self.lanes.get(turn_id, "direct")

    def _start(self, run_id: RunId, epoch: Epoch, turns: tuple[Turn, ...]) -> None:
        engine = self.engine
        inbox = self.inboxes[run_id] = RunInbox()
        spec = RunSpec(
            self.session_key,
            run_id,
            epoch,
            turns,
            engine.settings.history_entries_max,
            self.agent.system_prompt,
            inbox,
        )
        task = engine.spawn_run(
            execute_run(
                spec,
                engine.store,
                self.agent.provider,
                on_progress=lambda progress: engine.route(self.session_key, progress),
            ),
            name=f"run {run_id}",
        )
        self.runs[run_id] = task
        task.add_done_callback(lambda done: self._run_exited(run_id, epoch, done))

    def _run_exited(self, run_id: RunId, epoch: Epoch, task: asyncio.Task[RunResult]) -> None:
        engine = self.engine
        engine.emit(EventKind.RUN_EXITED, self.session_key, run_id=run_id, epoch=epoch)
        engine.route(self.session_key, _run_done(run_id, epoch, task))


def _run_done(run_id: RunId, epoch: Epoch, task: asyncio.Task[RunResult]) -> RunDone:
    if task.cancelled():
        return RunDone(run_id, epoch, RunCancelled())
    exc = task.exception()
    if exc is not None:
        return RunDone(
            run_id,
            epoch,
            RunFailed(ErrorCode.INTERNAL, f"run {run_id} crashed: {type(exc).__name__}"),
        )
    return RunDone(run_id, epoch, task.result())
