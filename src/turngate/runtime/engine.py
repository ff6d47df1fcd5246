"""The engine: admits turns (store first, then acknowledge) and routes them to session owners.

Lifetime: ``async with Engine(...) as engine`` opens the store, takes the sessions that have
open turns and nobody runs (what a crash left, I7: :mod:`~turngate.runtime.recovery`), and
owns one task group in which every owner and every run lives, with the poll that keeps this
process's claims on sessions (:mod:`~turngate.runtime.claims`). Leaving the block cancels them
all and releases the claims; turns that had not ended stay in the store and resume on the
next start, or in another process sharing the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from turngate.core.clock import Clock
from turngate.core.keys import SessionKey
from turngate.core.turn import Outcome, Turn, TurnState
from turngate.errors import (
    ErrorCode,
    IdempotencyConflictError,
    StaleEpochError,
    StorageUnavailableError,
    StoreError,
    UnavailableError,
    UnknownAgentError,
)
from turngate.providers.base import Provider
from turngate.runtime.agents import AgentRegistry, AgentSpec
from turngate.runtime.claims import SessionClaims
from turngate.runtime.clock import LoopClock
from turngate.runtime.deltas import Delta, DeltaStream
from turngate.runtime.engine_api import (
    EngineSettings as EngineSettings,
)
from turngate.runtime.engine_api import (
    EngineSnapshot as EngineSnapshot,
)
from turngate.runtime.engine_api import (
    LeaseView as LeaseView,
)
from turngate.runtime.engine_api import (
    SubmitRequest as SubmitRequest,
)
from turngate.runtime.engine_api import (
    Ticket as Ticket,
)
from turngate.runtime.events import Event, EventBus, EventKind
from turngate.runtime.outbound import NoOutbound, OutboundRouter
from turngate.runtime.outcomes import OutcomeRegistry
from turngate.runtime.owner import (
    Abort,
    Command,
    Fetch,
    Resume,
    SessionOwner,
    StepDown,
    Submit,
    Unstick,
)
from turngate.runtime.recovery import refused
from turngate.runtime.run_host import TakeSteered
from turngate.runtime.storage_watch import StorageWatch
from turngate.store.base import Store, TurnRecord
from turngate.types import Epoch, MonotonicS, RunId, TurnId

log = logging.getLogger("turngate.runtime")

T = TypeVar("T")

COMMAND_MARGIN_S = 5.0
"""An abort or unstick waits for the session's owner up to the abort grace plus this."""


class Engine:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        provider: Provider,
        *,
        settings: EngineSettings | None = None,
        clock: Clock | None = None,
        events: EventBus | None = None,
        agents: AgentRegistry | None = None,
        outbound: OutboundRouter | None = None,
    ) -> None:
        self.store = store
        self.outbound: OutboundRouter = outbound or NoOutbound()
        """What a run's end owes chat platforms (the channels' router; none by default)."""
        self.settings = settings or EngineSettings()
        self.clock: Clock = clock or LoopClock()
        self.events = events or EventBus()
        self.agents = agents or AgentRegistry(
            AgentSpec("main", self.settings.policy(), provider, self.settings.system_prompt),
            strict=False,
        )
        self._owners: dict[str, SessionOwner] = {}
        self.claims = SessionClaims(
            self.store,
            self.clock,
            self.settings.process_name,
            self.settings.claim_ttl_s,
            self.settings.claim_poll_s,
            host=self,
        )
        """Which sessions this process runs (see :mod:`~turngate.runtime.claims`)."""
        self.outcomes = OutcomeRegistry()
        """Who waits for each turn's outcome and who streams its run."""
        # Insertion-ordered, not sets: shutdown cancels runs in the order they started, so
        # that the simulator's seeds replay the same in every process.
        self._runs: dict[asyncio.Task[Any], None] = {}
        self._accepts: dict[asyncio.Task[Ticket], None] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._claim_loops: list[asyncio.Task[None]] = []
        self._accepting = False
        self.storage = StorageWatch(
            self.store,
            self.emit,
            blocked=lambda: any(o.storage_blocked_since is not None for o in self._owners.values()),
            spawn=self._spawn_task,
        )

    # -- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.store.open()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._accepting = True
        try:
            left = await self.claims.sweep()
            if left:
                log.warning(
                    "recovered %d open turns of %d sessions at start: each resumes in order,"
                    " or ends if it cannot (too many restarts, past its deadline)",
                    sum(len(turns) for turns in left.values()),
                    len(left),
                )
            self._claim_loops.append(
                self._tg.create_task(self.claims.poll_forever(), name="claims poll")
            )
            if self.store.shared:
                self._claim_loops.append(
                    self._tg.create_task(self.claims.listen_forever(), name="claims notices")
                )
        except BaseException:
            # Nothing is left running when start-up fails (storage refusing the recovery,
            # say): the caller gets the error and a closed engine.
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._accepting = False
        # Tell waiting clients first: they are not kept waiting while runs unwind.
        self._fail_all_waiters()
        tg, self._tg = self._tg, None
        self.storage.stop()
        for task in self._claim_loops:
            task.cancel(msg="shutdown")
        for owner in list(self._owners.values()):
            if owner.task is not None:
                owner.task.cancel(msg="shutdown")
        runs = [task for task in self._runs if not task.done()]
        for task in runs:
            task.cancel(msg="shutdown")
        try:
            if self._accepts:
                # Writes of turns being accepted end before the store closes (queued, they
                # find no owner now and resume on the next start).
                await asyncio.wait(list(self._accepts), timeout=self.settings.shutdown_grace_s)
            if runs:
                _, stubborn = await asyncio.wait(runs, timeout=self.settings.shutdown_grace_s)
                if stubborn:
                    log.warning(
                        "%d runs ignored cancellation for %gs at shutdown; abandoning them"
                        " (their turns resume on the next start)",
                        len(stubborn),
                        self.settings.shutdown_grace_s,
                    )
            if tg is not None:
                await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._owners.clear()
            self._fail_all_waiters()
            try:
                await self.claims.release_all()
            except StoreError as exc:
                log.warning("could not release this process's sessions: %s", exc.message)
            await self.store.close()

    async def drain(self, timeout_s: float) -> None:
        """The first step of a graceful shutdown: take no new turns, give the turns in hand
        up to ``timeout_s`` to end, then answer every client still waiting that its turn is
        kept (``pending``) and resumes on the next start. The engine keeps running until it
        is left; turns still running then are cancelled there."""
        self._accepting = False
        settled = asyncio.Event()

        def check(event: Event | None = None) -> None:
            if self.snapshot().settled:
                settled.set()

        unsubscribe = self.events.subscribe(check)
        try:
            check()
            async with asyncio.timeout(timeout_s):
                await settled.wait()
        except TimeoutError:
            snapshot = self.snapshot()
            log.warning(
                "shutting down: %d turns running and %d queued after %gs; their clients are"
                " told they are kept, and they resume on the next start",
                snapshot.running_turns,
                snapshot.queued_turns,
                timeout_s,
            )
        finally:
            unsubscribe()
        self._fail_all_waiters()

    def _fail_all_waiters(self) -> None:
        self.outcomes.fail_all(
            lambda turn_id: (
                f"turn {turn_id}: the gateway is shutting down; the turn is kept"
                " and resumes when the gateway restarts"
            )
        )

    # -- public API -----------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> Ticket:
        """Store the turn, then queue it; returns once it is durable (the acknowledgement)."""
        if not self._accepting:
            raise UnavailableError("the gateway is not accepting turns (starting or stopping)")
        key = str(request.session_key)
        self.agents.get(request.session_key.agent_id)
        turn_id = request.turn_id or os.urandom(16).hex()
        timeout_s = request.timeout_s or self.settings.turn_timeout_s
        now = self.clock.now()
        loop = asyncio.get_running_loop()
        waiter, fresh = self.outcomes.waiter(turn_id)
        record = TurnRecord(
            turn_id=turn_id,
            session_key=key,
            agent_id=request.session_key.agent_id,
            message=request.message,
            queue_mode=request.mode.value,
            state=TurnState.ACCEPTED,
            accepted_wall=self.clock.wall(),
            timeout_s=timeout_s,
            lane=request.lane,
        )
        # Stored and queued together, whatever becomes of the caller: a submit cancelled while
        # its write commits (a channel's connection ending, a client gone) must not leave a
        # stored turn that no owner runs until the next start, and that a redelivery of the
        # same message only finds as a duplicate.
        accepting = loop.create_task(
            self._store_and_queue(request, record, waiter, fresh, now), name=f"accept {turn_id}"
        )
        self.claims.accepting[turn_id] = accepting
        accepting.add_done_callback(lambda _: self.claims.accepting.pop(turn_id, None))
        self._accepts[accepting] = None
        accepting.add_done_callback(lambda done: self._accepts.pop(done, None))
        try:
            return await asyncio.shield(accepting)
        except asyncio.CancelledError:
            accepting.add_done_callback(_retrieve)  # its outcome is nobody's now
            raise

    async def _store_and_queue(
        self,
        request: SubmitRequest,
        record: TurnRecord,
        waiter: asyncio.Future[Outcome],
        fresh: bool,
        now: MonotonicS,
    ) -> Ticket:
        key, turn_id, timeout_s = record.session_key, record.turn_id, record.timeout_s
        try:
            existing = await self.store.accept_turn(record)
        except BaseException as exc:
            if fresh:
                self.outcomes.forget(turn_id)
            if isinstance(exc, StorageUnavailableError):
                self.storage_failed(
                    key, f"turn not accepted (the client is told): {exc.message}", turn_id=turn_id
                )
            raise
        if existing is not None:
            return self._duplicate(request, existing, waiter, fresh, now)
        self.emit(EventKind.ACCEPTED, key, turn_id=turn_id, lane=request.lane)
        turn = Turn(turn_id, key, request.message, accepted_at=now, deadline=now + timeout_s)
        deltas = self.outcomes.open_stream(turn_id) if request.stream else None
        self.route(key, Submit(turn, request.mode, request.lane))
        deadline = turn.deadline + self.settings.abort_grace_s
        return Ticket(turn_id, key, False, deadline, waiter, deltas)

    async def abort(self, session_key: SessionKey, run_id: RunId | None = None) -> list[RunId]:
        """Abort the running turn of a session (or one queued turn); returns the ids aborted."""
        owner = self._owners.get(str(session_key))
        if owner is None:
            return []
        self._refuse_if_storage_blocked(owner, "abort a turn")
        done: asyncio.Future[list[RunId]] = asyncio.get_running_loop().create_future()
        owner.post(Abort(run_id, done))
        return await self._answer(owner.session_key, done, "abort a turn")

    async def unstick(self, session_key: SessionKey) -> list[RunId]:
        """Force a session free now (operator action, audited); returns the turns ended."""
        key = str(session_key)
        owner = self._owners.get(key)
        if owner is None:
            return []
        self._refuse_if_storage_blocked(owner, "unstick it")
        done: asyncio.Future[list[RunId]] = asyncio.get_running_loop().create_future()
        owner.post(Unstick(done))
        ended = await self._answer(key, done, "unstick it")
        self.emit(
            EventKind.UNSTUCK,
            key,
            detail=f"forced free by an operator; ended {len(ended)} turn(s): {', '.join(ended)}",
        )
        return ended

    def _refuse_if_storage_blocked(self, owner: SessionOwner, what: str) -> None:
        """A session whose owner waits for storage cannot act before storage is back."""
        if owner.storage_blocked_since is not None:
            raise StorageUnavailableError(
                f"session {owner.session_key}: cannot {what} now: the session is waiting for"
                f" storage to take writes again ({self.store.health().reason}); its turns are"
                " kept and go on by themselves once it does"
            )

    async def _answer(
        self, session_key: str, done: asyncio.Future[list[RunId]], what: str
    ) -> list[RunId]:
        """An owner's answer to a command, or an error that says why it did not come."""
        try:
            async with asyncio.timeout(self.settings.abort_grace_s + COMMAND_MARGIN_S):
                return await asyncio.shield(done)
        except TimeoutError:
            storage = self.store.health()
            if not storage.writable:
                raise StorageUnavailableError(
                    f"session {session_key}: cannot {what} now: the session is waiting for"
                    f" storage to take writes again ({storage.reason}); try again later"
                ) from None
            raise UnavailableError(
                f"session {session_key}: cannot {what} now: its owner did not answer in time;"
                " try again"
            ) from None

    def storage_failed(
        self,
        session_key: str,
        detail: str,
        *,
        run_id: RunId | None = None,
        turn_id: TurnId | None = None,
    ) -> None:
        """A write for ``session_key`` could not be made durable (WARNING, event, metric);
        the engine then watches storage until it takes writes again."""
        self.storage.failed(session_key, detail, run_id=run_id, turn_id=turn_id)

    def snapshot(self) -> EngineSnapshot:
        """The current figures of every active session."""
        now = self.clock.now()
        running = queued = pending = 0
        leases: list[LeaseView] = []
        blocked: list[str] = []
        for owner in self._owners.values():
            pending += owner.commands_pending
            if owner.storage_blocked_since is not None:
                blocked.append(owner.session_key)
            core = owner.core
            if core is None:
                continue
            queued += len(core.queue)
            if core.active is not None:
                running += len(core.active.batch.turns)
                lease = core.active.lease
                activity = owner.activity.get(core.active.run_id)
                leases.append(
                    LeaseView(
                        owner.session_key,
                        core.active.run_id,
                        lease.epoch,
                        lease.state.value,
                        now - lease.granted_at,
                        now - lease.last_progress_at,
                        lease.terms.stall_timeout_s,
                        lease.terms.run_timeout_s,
                        activity.step if activity else 1,
                        activity.running(now) if activity else (),
                    )
                )
        return EngineSnapshot(
            len(self._owners),
            running,
            queued,
            tuple(leases),
            self.store.health(),
            tuple(blocked),
            pending,
            self.claims.held,
        )

    # -- used by owners -------------------------------------------------------------------

    def route(self, session_key: str, command: Command) -> None:
        """Hand ``command`` to the session's owner, creating the owner for a new turn."""
        owner = self._owners.get(session_key)
        if owner is None:
            if isinstance(command, StepDown):
                return  # nothing runs here to stop
            if isinstance(command, TakeSteered) and not command.done.done():
                command.done.set_result([])  # a run that outlived its session's owner
            if not isinstance(command, Submit | Resume | Fetch):
                run_id = getattr(command, "run_id", None)
                epoch = getattr(command, "epoch", None)
                self.emit(
                    EventKind.STALE_IGNORED,
                    session_key,
                    run_id=run_id,
                    epoch=epoch,
                    detail=f"ignored {type(command).__name__} for a session with no active run",
                )
                return
            if self._tg is None:
                return
            owner = SessionOwner(self, session_key, self.agents.get(session_key.split(":", 2)[1]))
            self._owners[session_key] = owner
            owner.task = self._tg.create_task(self._own(owner), name=f"owner {session_key}")
        owner.post(command)

    def owner_finished(self, owner: SessionOwner, epoch: Epoch | None = None) -> None:
        """An owner found its session idle and is ending (called synchronously by it), with
        the session's ``epoch`` when every write of it is durable."""
        if self._owners.get(owner.session_key) is owner:
            del self._owners[owner.session_key]
            self.claims.idle(owner.session_key, epoch)

    def announce_ended(self, session_key: str) -> None:
        """Tell the processes sharing the store that turns of ``session_key`` ended."""
        if self.store.shared:
            self._spawn_task(self.claims.announce_ended(session_key), "announce ended")

    # -- used by the claims ---------------------------------------------------------------

    def adopt(self, session_key: str, turn_ids: list[TurnId]) -> None:
        """Have the session's owner take its open turns from the store (creating the owner,
        which claims the session). A session whose agent is no longer configured cannot
        run: its turns end ``unknown_agent``."""
        owner = self._owners.get(session_key)
        if owner is not None:
            if not turn_ids or not owner.seen.issuperset(turn_ids):
                owner.post(Fetch())
            return
        try:
            self.agents.get(session_key.split(":", 2)[1])
        except UnknownAgentError as exc:
            self._spawn_task(self._retire(session_key, exc), f"retire {session_key}")
            return
        self.route(session_key, Fetch())

    async def _retire(self, session_key: str, error: UnknownAgentError) -> None:
        """End the open turns of a session whose agent is not configured (any more)."""
        try:
            claimed = await self.claims.take(session_key)
            if claimed is None or not claimed.taken or not claimed.open_turns:
                return
            outcomes = refused(list(claimed.open_turns), error)
            orders = self.outbound.orders(session_key, outcomes)
            await self.store.end_turns(
                outcomes, self.clock.wall(), orders, holder=self.claims.holder
            )
        except StoreError as exc:
            log.warning(
                "session %s: could not end the turns of an unknown agent (%s); trying again"
                " at the next poll",
                session_key,
                exc.message,
                extra={"session_key": session_key},
            )
            return
        finally:
            self.claims.idle(session_key)
        for outcome in outcomes:
            self.deliver(session_key, outcome, "recovery")

    def step_down(self, session_key: str) -> None:
        """Another process took ``session_key``: its owner here stops."""
        owner = self._owners.get(session_key)
        if owner is not None:
            owner.post(StepDown())

    def settle_remote(self, outcome: Outcome) -> None:
        """A turn another process ran ended: whoever waits here gets its outcome."""
        self.outcomes.settle(outcome)

    def waiting(self, turn_id: TurnId) -> bool:
        """Whether a client here still waits for ``turn_id``'s outcome."""
        return self.outcomes.waiting(turn_id)

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """A task of the engine's own, in its task group (None once it has stopped)."""
        return None if self._tg is None else self._tg.create_task(coro, name=name)

    def spawn_run(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start a run's task, supervised by the engine.

        Runs execute provider code, which may ignore cancellation: unlike owners they are
        not in the task group, whose exit would then wait for them without a bound. The
        engine cancels them at shutdown, waits ``shutdown_grace_s``, and reports any left.
        """
        if self._tg is None:
            coro.close()
            raise UnavailableError("the engine is not running")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._runs[task] = None
        task.add_done_callback(lambda done: self._runs.pop(done, None))
        return task

    def deliver(self, session_key: str, outcome: Outcome, lane: str) -> None:
        """Hand a turn's outcome to whoever waits for it (after its session was released)."""
        self.emit(
            EventKind.ENDED,
            session_key,
            run_id=outcome.run_id,
            turn_id=outcome.turn_id,
            state=outcome.state.value,
            code=outcome.code,
            lane=lane,
            detail=outcome.message,
        )
        self.outcomes.settle(outcome)
        self.emit(EventKind.DELIVERED, session_key, run_id=outcome.run_id, turn_id=outcome.turn_id)

    def publish_delta(self, turns: Iterable[Turn], run_id: RunId, delta: Delta) -> None:
        """Hand a run's delta (text, or a tool call beginning or returning) to every client
        streaming one of the turns it serves."""
        self.outcomes.publish(turns, run_id, delta)

    def stale_write_refused(self, error: StaleEpochError, *, step: bool = False) -> None:
        """A write for a run that lost its lease was refused by the store: the owner's own
        (a bug, in one process), or the run's ``step`` (a fenced run writing on)."""
        self.emit(
            EventKind.STEP_REFUSED if step else EventKind.STALE_WRITE_REFUSED,
            error.session_key,
            run_id=error.run_id,
            epoch=error.epoch,
            code=ErrorCode.STALE_EPOCH,
            detail=error.message,
        )

    def emit(self, kind: EventKind, session_key: str, **fields: Any) -> None:
        """Emit one event stamped with the engine's clock."""
        self.events.emit(Event(kind, self.clock.now(), session_key, **fields))

    # -- internals ------------------------------------------------------------------------

    async def _own(self, owner: SessionOwner) -> None:
        try:
            await owner.run()
        except StaleEpochError as exc:
            # Another process took the session (this one was paused, or cut off from the
            # store, past its claim): it runs the turns now; the clients waiting here are
            # settled from the store.
            self.owner_finished(owner)
            self.claims.lost(owner.session_key)
            for task in owner.runs.values():
                task.cancel(msg="session lost")
            self.emit(EventKind.SESSION_LOST, owner.session_key, detail=exc.message)
            self.claims.watch(owner.session_key, owner.open_turn_ids())
        except Exception as exc:
            # An owner only fails if the store does; its turns stay open in the store and
            # are recovered on restart. Waiters are told now rather than left hanging.
            log.exception("owner of session %s failed", owner.session_key)
            self.owner_finished(owner)
            for task in owner.runs.values():
                task.cancel(msg="owner failed")
            self.emit(EventKind.OWNER_FAILED, owner.session_key, detail=repr(exc))
            self._fail_waiters(owner)

    def _fail_waiters(self, owner: SessionOwner) -> None:
        core = owner.core
        turns = list(core.queue.turns()) if core else []
        if core is not None and core.active is not None:
            turns.extend(core.active.batch.turns)
        self.outcomes.fail(
            [turn.turn_id for turn in turns],
            lambda turn_id: (
                f"session {owner.session_key}: turn {turn_id} could not be"
                " processed (store failure); it is kept and resumes on restart"
            ),
        )

    def _duplicate(
        self,
        request: SubmitRequest,
        existing: TurnRecord,
        waiter: asyncio.Future[Outcome],
        fresh: bool,
        now: MonotonicS,
    ) -> Ticket:
        key = str(request.session_key)
        if existing.session_key != key or existing.message != request.message:
            if fresh:
                self.outcomes.forget(existing.turn_id)
            raise IdempotencyConflictError(
                f"idempotencyKey {existing.turn_id!r} was already used for a different message"
                f" (session {existing.session_key}); use a new key for a new message"
            )
        self.emit(EventKind.DUPLICATE, key, turn_id=existing.turn_id)
        outcome = existing.outcome()
        if outcome is not None:
            self.outcomes.forget(existing.turn_id)
            if not waiter.done():
                waiter.set_result(outcome)
        else:
            owner = self._owners.get(key)
            if owner is None or existing.turn_id not in owner.seen:
                # Perhaps another process runs it: its outcome is read from the store.
                self.claims.watch(key, [existing.turn_id])
        deadline = now + existing.timeout_s + self.settings.abort_grace_s
        deltas = None
        if request.stream:
            # A retry joins mid-reply at best; its deltas would be a tail. It gets the whole
            # reply with the outcome instead.
            deltas = DeltaStream()
            deltas.close()
        return Ticket(existing.turn_id, existing.session_key, True, deadline, waiter, deltas)


def _retrieve(task: asyncio.Task[Ticket]) -> None:
    """Mark the end of a task nobody awaits any more as seen (no "never retrieved" warning)."""
    if not task.cancelled():
        task.exception()
