"""The owner of one active session: the only code that changes that session's state.

An owner is a task that exists while its session has something running or queued, and ends
as soon as the session is idle (idle sessions cost no task). It takes commands from an inbox
one at a time, feeds them to the pure :class:`~turngate.core.session.SessionCore`, and carries
out the effects in order. Between commands it waits with a deadline: the core's next one
(lease expiry, grace end, a queued turn's deadline); when it passes, it ticks the core. That
deadline wait is the watchdog: a stalled run is noticed at its own deadline, not at the next
periodic sweep.

An outcome is delivered right after the write that records it: for a run, the one that also
releases its lease, so when a client holds turn N's outcome, the lease of turn N is already
released in the store (I5).

A write the store cannot make durable (disk full, I/O error) is tried again, with a growing
pause, until it is: the session waits, nothing it owes is dropped, and it carries on by
itself once storage works again. Each failed attempt is a WARNING naming the session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeGuard, TypeVar

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
from turngate.core.turn import AbortReason, Outcome, Turn, TurnState
from turngate.errors import (
    ErrorCode,
    SessionTakenError,
    StaleEpochError,
    StorageUnavailableError,
)
from turngate.runtime.activity import ToolFinished, ToolStarted
from turngate.runtime.agents import AgentSpec
from turngate.runtime.events import EventKind
from turngate.runtime.recovery import adopt
from turngate.runtime.run import RunProgress, RunSpec, execute_run
from turngate.runtime.run_host import OwnerRunHost, RunActivity, TakeSteered
from turngate.store.base import TurnRecord
from turngate.types import Epoch, MonotonicS, RunId, TurnId

if TYPE_CHECKING:
    from turngate.runtime.owner_host import OwnerHost

T = TypeVar("T")

STORAGE_RETRY_FIRST_S = 0.05
STORAGE_RETRY_MAX_S = 2.0
"""Pauses between attempts at a write while storage is unavailable: doubling, capped, so a
session carries on within this long of storage coming back."""


@dataclass(frozen=True, slots=True)
class Submit:
    """A newly accepted turn for this session."""

    turn: Turn
    mode: QueueMode
    lane: str = "direct"


@dataclass(frozen=True, slots=True)
class Resume:
    """Turns one run served when the gateway stopped: they resume as one batch."""

    turns: tuple[Turn, ...]
    lane: str = "recovery"


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
class Fetch:
    """The session may have turns in the store this owner does not know yet (accepted by
    another process, or left by one that died): read them and take them."""


@dataclass(frozen=True, slots=True)
class StepDown:
    """Another process took the session: stop at once, writing nothing more."""


@dataclass(frozen=True, slots=True)
class RunDone:
    """A run's task finished."""

    run_id: RunId
    epoch: Epoch
    result: RunResult


Command = Submit | Resume | Abort | Unstick | RunProgress | RunDone | TakeSteered | Fetch | StepDown


@dataclass(slots=True)
class SessionOwner:
    """Owns one session while it is active. Created and removed by the engine."""

    engine: OwnerHost
    session_key: str
    agent: AgentSpec
    core: SessionCore | None = None
    task: asyncio.Task[None] | None = None
    runs: dict[RunId, asyncio.Task[RunResult]] = field(default_factory=dict)
    lanes: dict[str, str] = field(default_factory=dict)
    started_at: dict[RunId, MonotonicS] = field(default_factory=dict)
    activity: dict[RunId, RunActivity] = field(default_factory=dict)
    """What each running run is doing: its model step, its tool calls under way."""
    wrote_steps: set[tuple[RunId, Epoch]] = field(default_factory=set)
    """Runs that began writing steps: their end closes the tool calls they left open."""
    seen: set[TurnId] = field(default_factory=set)
    """Every turn this owner took: a turn is never taken twice (from its acceptance and from
    the store both)."""
    adopted: set[TurnId] = field(default_factory=set)
    """Turns taken from the store, whose clients may wait in another process: their end is
    announced to the processes sharing the store."""
    free_since: MonotonicS = 0.0
    storage_blocked_since: MonotonicS | None = None
    """Set while a write of this session waits for storage to take writes again."""
    _inbox: deque[Command] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def commands_pending(self) -> int:
        """Commands posted and not yet taken."""
        return len(self._inbox)

    def open_turn_ids(self) -> list[TurnId]:
        """The turns this owner took and has not delivered an outcome of (queued, running,
        ending), and those still in its inbox."""
        inbox = [turn.turn_id for command in self._inbox for turn in _turns_of(command)]
        return [*self.lanes, *inbox]

    def post(self, command: Command) -> None:
        """Queue a command for the owner task (synchronous; never blocks).

        Text a run streams faster than the owner takes it joins the text still waiting in
        the inbox: one report renews the lease as well as several made at once, and the
        clients get the same text in fewer deltas."""
        inbox = self._inbox
        if inbox and isinstance(command, RunProgress) and command.text:
            last = inbox[-1]
            if _joinable(last, command):
                inbox[-1] = replace(command, text=last.text + command.text)
                return
        inbox.append(command)
        self._wake.set()

    async def run(self) -> None:
        """The owner task: claim the session (or hand its turns to the process that holds
        it), then process commands until the session is idle."""
        engine = self.engine
        key = self.session_key
        if engine.claims.held_elsewhere(key):
            await self._hand_off()
            return
        claimed = await self.durably("claim the session", None, lambda: engine.claims.take(key))
        if claimed is not None and not claimed.taken:
            await self._hand_off()
            return
        if claimed is None:
            known = engine.claims.idle_epoch(key)
            epoch = (
                known
                if known is not None
                else await self.durably(
                    "read the session's epoch", None, lambda: engine.store.session_epoch(key)
                )
            )
        else:
            epoch = claimed.claim.epoch
        core = self.core = SessionCore(key, epoch, self.agent.policy)
        self.free_since = engine.clock.now()
        if claimed is not None:
            await self._adopt(list(claimed.open_turns), taken_over=True)
        while True:
            if self._inbox:
                command = self._inbox.popleft()
                if isinstance(command, TakeSteered):
                    await self._take_steered(core, command)
                elif isinstance(command, Fetch):
                    records = await self.durably(
                        "read the session's open turns", None, lambda: engine.store.open_turns(key)
                    )
                    await self._adopt(records, taken_over=False)
                elif isinstance(command, StepDown):
                    raise SessionTakenError(key, engine.claims.holder)
                else:
                    await self._apply(self._dispatch(core, command))
                continue
            deadline = core.next_deadline()
            if deadline is None:
                engine.owner_finished(self, core.epoch)
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

    async def _hand_off(self) -> None:
        """Another process holds the session: it runs the turns accepted here; their clients
        wait here, settled from the store."""
        engine = self.engine
        turn_ids: list[TurnId] = []
        for command in self._inbox:
            match command:
                case Submit(turn):
                    turn_ids.append(turn.turn_id)
                case Resume(turns):
                    turn_ids.extend(turn.turn_id for turn in turns)
                case Abort(_, done) | Unstick(done) if not done.done():
                    done.set_result([])
                case _:
                    pass
        self._inbox.clear()
        engine.owner_finished(self)
        for turn_id in turn_ids:
            engine.emit(
                EventKind.HANDED_OFF,
                self.session_key,
                turn_id=turn_id,
                detail="another gateway process holds the session; it runs the turn",
            )
        await engine.claims.hand_off(self.session_key, turn_ids)

    async def _adopt(self, records: list[TurnRecord], *, taken_over: bool) -> None:
        """Take the session's open turns read from the store that this owner has not taken
        yet (nor is about to, from its inbox or an acceptance under way): they go first."""
        engine = self.engine
        accepting = [
            engine.claims.accepting[r.turn_id]
            for r in records
            if r.turn_id in engine.claims.accepting
        ]
        if accepting:
            await asyncio.wait(accepting)
        pending = {turn.turn_id for command in self._inbox for turn in _turns_of(command)}
        fresh = [r for r in records if r.turn_id not in self.seen and r.turn_id not in pending]
        if not fresh:
            return
        adoption = adopt(engine, fresh, taken_over=taken_over)
        self.adopted.update(record.turn_id for record in fresh)
        self._inbox = deque(sorted([*adoption.commands, *self._inbox], key=_rank(records)))
        if adoption.ended:
            for outcome in adoption.ended:
                self.seen.add(outcome.turn_id)
                self.lanes[outcome.turn_id] = "recovery"
            await self._end_turns(tuple(adoption.ended))
            self._deliver(tuple(adoption.ended))

    def _dispatch(self, core: SessionCore, command: Command) -> list[Effect]:
        now = self.engine.clock.now()
        match command:
            case Submit(turn, mode, lane):
                if turn.turn_id in self.seen:
                    return []  # taken from the store already
                self.seen.add(turn.turn_id)
                self.lanes[turn.turn_id] = lane
                return core.submit(turn, mode, now)
            case Resume(turns, lane):
                if any(turn.turn_id in self.seen for turn in turns):
                    return []
                for turn in turns:
                    self.seen.add(turn.turn_id)
                    self.lanes[turn.turn_id] = lane
                return core.resume(list(turns), now)
            case RunProgress(run_id, epoch):
                effects = core.progress(run_id, epoch, now)
                active = core.active
                if not effects and active is not None:
                    # Only progress the core accepted: what renewed the lease (lease terms
                    # are checked against these, in the simulator).
                    self.engine.emit(
                        EventKind.PROGRESS, self.session_key, run_id=run_id, epoch=epoch
                    )
                    self._show(active.batch.turns, command)
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
            case TakeSteered() | Fetch() | StepDown():
                raise AssertionError("taken by run(), which writes before it answers")

    def _show(self, turns: list[Turn], progress: RunProgress) -> None:
        """Hand a run's progress to the clients streaming its turns, and keep what it is
        doing for the session's running state."""
        activity = self.activity.get(progress.run_id)
        if activity is not None:
            activity.saw(progress, self.engine.clock.now())
        engine = self.engine
        if progress.text:
            engine.publish_delta(turns, progress.run_id, progress.text)
        match progress.activity:
            case ToolFinished(call, result, duration_s):
                engine.publish_delta(turns, progress.run_id, progress.activity)
                engine.emit(
                    EventKind.TOOL_CALLED,
                    self.session_key,
                    run_id=progress.run_id,
                    state="error" if result.is_error else "ok",
                    detail=call.name,
                    duration_s=duration_s,
                )
            case ToolStarted():
                engine.publish_delta(turns, progress.run_id, progress.activity)
            case None:
                pass

    async def _take_steered(self, core: SessionCore, command: TakeSteered) -> None:
        effects = core.take_steered(command.run_id, command.epoch)
        await self._apply(effects)
        if not command.done.done():
            command.done.set_result([e.turn for e in effects if isinstance(e, Steered)])

    async def _apply(self, effects: list[Effect]) -> None:
        """Carry out one step's effects in order. Outcomes are delivered as soon as the write
        that records them (and releases their session) is durable: a later effect of the
        step waiting for storage must not hold back a reply that is already written down."""
        # A turn enqueued and started in the same step goes straight to running.
        started_now = {t.turn_id for e in effects if isinstance(e, StartRun) for t in e.turns}
        for effect in effects:
            match effect:
                case Enqueued(turn_ids):
                    await self._enqueued(turn_ids, started_now)
                case StartRun(run_id, epoch, turns):
                    await self._start_run(run_id, epoch, turns)
                case Steered(run_id, epoch, turn):
                    await self._steered(run_id, epoch, turn)
                case CancelRun(run_id, epoch, reason):
                    self._cancel_run(run_id, epoch, reason)
                case EndRun():
                    await self._end_run(effect)
                    self._deliver(effect.outcomes)
                case EndTurns(outcomes):
                    await self._end_turns(outcomes)
                    self._deliver(outcomes)
                case IgnoredStale(run_id, epoch, what):
                    self.engine.emit(
                        EventKind.STALE_IGNORED,
                        self.session_key,
                        run_id=run_id,
                        epoch=epoch,
                        detail=f"ignored {what} from a run that no longer holds the session",
                    )

    def _deliver(self, outcomes: tuple[Outcome, ...]) -> None:
        announce = False
        for outcome in outcomes:
            self.engine.deliver(
                self.session_key, outcome, self.lanes.pop(outcome.turn_id, "direct")
            )
            if outcome.turn_id in self.adopted:
                self.adopted.discard(outcome.turn_id)
                announce = True
        if announce:
            self.engine.announce_ended(self.session_key)

    async def _enqueued(self, turn_ids: tuple[TurnId, ...], started_now: set[TurnId]) -> None:
        waiting = [turn_id for turn_id in turn_ids if turn_id not in started_now]
        if waiting:
            await self.durably(
                "mark turns queued", None, lambda: self.engine.store.mark_queued(waiting)
            )
        for turn_id in turn_ids:
            self.engine.emit(
                EventKind.QUEUED, self.session_key, turn_id=turn_id, lane=self._lane(turn_id)
            )

    async def _start_run(self, run_id: RunId, epoch: Epoch, turns: tuple[Turn, ...]) -> None:
        engine = self.engine
        turn_ids = [turn.turn_id for turn in turns]
        try:
            await self.durably(
                "start a run",
                run_id,
                lambda: engine.store.start_run(
                    self.session_key,
                    run_id,
                    epoch,
                    turn_ids,
                    engine.clock.wall(),
                    holder=engine.claims.holder,
                ),
            )
        except StaleEpochError as exc:
            engine.stale_write_refused(exc)
            raise
        now = engine.clock.now()
        if self.core is not None:
            # The run starts now, however long the write waited for storage: its clocks too.
            self.core.run_started(run_id, epoch, now)
        engine.emit(EventKind.LEASE_ACQUIRED, self.session_key, run_id=run_id, epoch=epoch)
        for turn in turns:
            ready_at = max(turn.accepted_at, self.free_since)
            self._started(run_id, epoch, turn, now, ready_wait_s=now - ready_at)
        self.started_at[run_id] = now
        self._start(run_id, epoch, turns)

    async def _steered(self, run_id: RunId, epoch: Epoch, turn: Turn) -> None:
        engine = self.engine
        await self.durably(
            "steer a turn into the run",
            run_id,
            lambda: engine.store.join_run(
                self.session_key, turn.turn_id, run_id, epoch, engine.clock.wall()
            ),
        )
        self._started(
            run_id,
            epoch,
            turn,
            engine.clock.now(),
            0.0,
            detail="steered into the running turn",
        )

    def _cancel_run(self, run_id: RunId, epoch: Epoch, reason: AbortReason) -> None:
        self.engine.emit(
            EventKind.CANCEL_REQUESTED,
            self.session_key,
            run_id=run_id,
            epoch=epoch,
            code=reason.code,
            detail=f"cancelling run: {reason.value}"
            f" ({self._ages(run_id, self.engine.clock.now())})",
        )
        task = self.runs.get(run_id)
        if task is not None:
            task.cancel(msg=reason.value)
        if self.core is not None:
            self.core.cancel_sent(run_id, epoch, self.engine.clock.now())

    async def _end_turns(self, outcomes: tuple[Outcome, ...]) -> None:
        engine = self.engine
        orders = engine.outbound.orders(self.session_key, outcomes)
        await self.durably(
            "record turn outcomes",
            None,
            lambda: engine.store.end_turns(
                outcomes, engine.clock.wall(), orders, holder=engine.claims.holder
            ),
        )

    async def _end_run(self, effect: EndRun) -> None:
        engine = self.engine
        run_id, epoch = effect.run_id, effect.epoch
        orders = engine.outbound.orders(self.session_key, effect.outcomes)
        try:
            # Which calls the end closes is decided at each attempt: a fenced run that
            # ignores its cancellation may write a step while the end waits for storage.
            await self.durably(
                "end a run",
                run_id,
                lambda: engine.store.end_run(
                    self.session_key,
                    run_id,
                    epoch,
                    effect.outcomes,
                    effect.exchange,
                    engine.clock.wall(),
                    orders,
                    self._unanswered(effect),
                ),
            )
        except StaleEpochError as exc:
            # Another owner took the session (only possible with a shared store): this
            # owner's view is stale, so it must stop.
            engine.stale_write_refused(exc)
            raise
        now = engine.clock.now()
        self.wrote_steps.discard((run_id, epoch))
        self.runs.pop(run_id, None)
        if effect.fenced:
            engine.emit(
                EventKind.FENCED,
                self.session_key,
                run_id=run_id,
                epoch=epoch,
                detail="run ignored cancellation past abort_grace; epoch fenced"
                f" ({self._ages(run_id, now)})",
            )
        self.started_at.pop(run_id, None)
        self.activity.pop(run_id, None)
        engine.emit(EventKind.LEASE_RELEASED, self.session_key, run_id=run_id, epoch=epoch)
        self.free_since = now

    def _unanswered(self, effect: EndRun) -> str | None:
        """The result each tool call the run left open gets, if it wrote any and did not
        reply: why the call has no result of its own."""
        if (effect.run_id, effect.epoch) not in self.wrote_steps:
            return None
        outcome = effect.outcomes[0] if effect.outcomes else None
        if outcome is None or outcome.state is TurnState.REPLIED:
            return None
        why = outcome.code.value if outcome.code is not None else outcome.state.value
        return f"cancelled: the turn ended ({why}) before this tool call returned"

    async def durably(
        self, what: str, run_id: RunId | None, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """``attempt()``, tried again while storage is unavailable (see the module docstring).

        Each attempt is a fresh call: a failed write left nothing behind, so it is safe.
        """
        pause_s = STORAGE_RETRY_FIRST_S
        while True:
            try:
                result = await attempt()
            except StorageUnavailableError as exc:
                if self.storage_blocked_since is None:
                    self.storage_blocked_since = self.engine.clock.now()
                self.engine.storage_failed(
                    self.session_key,
                    f"{what} failed, trying again in {pause_s:g}s: {exc.message}",
                    run_id=run_id,
                )
            else:
                self.storage_blocked_since = None
                return result
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, STORAGE_RETRY_MAX_S)

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
        agent = self.agent
        spec = RunSpec(
            self.session_key,
            run_id,
            epoch,
            turns,
            engine.settings.history_entries_max,
            agent.system_prompt,
            agent.toolbox,
            agent.max_steps,
            agent.policy.lease_terms.stall_timeout_s,
        )
        self.activity[run_id] = RunActivity()
        host = OwnerRunHost(self, run_id, epoch)
        task = engine.spawn_run(
            execute_run(spec, engine.store, agent.provider, host), name=f"run {run_id}"
        )
        self.runs[run_id] = task
        task.add_done_callback(lambda done: self._run_exited(run_id, epoch, done))

    def _run_exited(self, run_id: RunId, epoch: Epoch, task: asyncio.Task[RunResult]) -> None:
        engine = self.engine
        engine.emit(EventKind.RUN_EXITED, self.session_key, run_id=run_id, epoch=epoch)
        engine.route(self.session_key, _run_done(run_id, epoch, task))


def _rank(records: list[TurnRecord]) -> Callable[[Command], tuple[int, int]]:
    """Where a command goes once turns were taken from the store: the turns of a run that
    was interrupted first (its steps are in the transcript already: it must answer before
    any other turn is written there), then every turn in acceptance order; commands with no
    turn after them, as they came."""
    ranks = {r.turn_id: (0 if r.run_id else 1, r.seq) for r in records}

    def rank(command: Command) -> tuple[int, int]:
        return min(
            (ranks[t.turn_id] for t in _turns_of(command) if t.turn_id in ranks), default=(2, 0)
        )

    return rank


def _turns_of(command: Command) -> tuple[Turn, ...]:
    match command:
        case Submit(turn):
            return (turn,)
        case Resume(turns):
            return turns
        case _:
            return ()


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


def _joinable(waiting: Command, progress: RunProgress) -> TypeGuard[RunProgress]:
    """Whether ``progress`` (text) may join ``waiting``: text of the same step of the same
    run, neither of them a tool call's activity."""
    return (
        isinstance(waiting, RunProgress)
        and bool(waiting.text)
        and waiting.activity is None
        and progress.activity is None
        and (waiting.run_id, waiting.epoch, waiting.step)
        == (progress.run_id, progress.epoch, progress.step)
    )
