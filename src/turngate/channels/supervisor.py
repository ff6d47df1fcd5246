"""The connection supervisor: keeps one platform connection alive, one generation at a time.

A channel hands the supervisor a *connector*, ``async def connect(gen: Generation) -> None``,
that dials, identifies (or resumes), then reads frames until the connection ends. The
supervisor calls it again and again until stopped; each call is a :class:`Generation` whose
number only grows. How an attempt ends decides what comes next:

- the connector returns, or raises anything but :class:`ChannelRefusedError`: the connection
  is *lost*; back off (full jitter, :class:`~turngate.core.connection.Backoff`) and dial again.
  An error outside ``lost_errors`` is a bug in the connector: logged at ERROR with its
  traceback, then treated as lost, because one bad frame must not take a channel down for good.
- the heartbeat saw no frame received within its ack window (or, for a protocol whose
  heartbeats are acknowledged, no ack): a *zombie*; back off, dial again.
- the connection is not ready within ``ready_timeout_s`` (dial and identify together): lost.
- the connector raises :class:`ChannelRefusedError` (bad token, banned): the supervisor stops,
  and the error stays in :meth:`Supervisor.snapshot` for ``/health`` and ``channels status``.
- :meth:`Supervisor.stop`: the generation ends at once and :meth:`Supervisor.run` returns.

Generations (seed 004, invariant I6): everything an attempt starts, its tasks and its timers,
lives in that attempt's own :class:`asyncio.TaskGroup` and is cancelled with it. A callback that
outlives its generation (a platform library's handler, a timer of the library's own) is wrapped
with :meth:`Generation.guard`: once the generation is over it does nothing and is counted in
``stale_callbacks_ignored``. Every other method of a finished generation behaves the same way.
A handler that learns the connection must end (the peer asked for a reconnect) calls
:meth:`Generation.fail` instead of raising into whoever called it.

Visibility (I8): a loss or a zombie logs a WARNING on ``turngate.channels`` naming the channel,
the generation, the cause and the delay before the next dial; a fatal refusal and a connector's
bug log an ERROR. Error texts pass through :func:`turngate.logs.redact` with the channel's
``secrets`` first, in the logs and in :meth:`Supervisor.snapshot` alike.

Time: timestamps come from the injected :class:`~turngate.core.clock.Clock`; waits use
``asyncio.sleep`` / ``asyncio.timeout``, which a virtual-time loop moves with the same clock.
Jitter comes from the injected :class:`random.Random`, so a seeded test replays exactly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar

from turngate.core.clock import Clock
from turngate.core.connection import (
    Backoff,
    BackoffPolicy,
    ConnectionEvent,
    ConnectionState,
    next_connection_state,
)
from turngate.errors import ChannelRefusedError
from turngate.logs import redact
from turngate.types import MonotonicS

log = logging.getLogger("turngate.channels")

R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")

LOST_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError)
"""Errors that mean "the connection is gone" (ConnectionError and TimeoutError are OSErrors).
A channel adds its library's own, e.g. ``websockets.exceptions.ConnectionClosed``."""


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """How a supervisor paces and bounds its attempts."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    ready_timeout_s: float = 30.0
    """Deadline for one attempt to be ready, from its start (dial and identify together)."""
    lost_errors: tuple[type[Exception], ...] = LOST_ERRORS
    """Errors expected when a connection drops: logged at WARNING without a traceback."""

    def __post_init__(self) -> None:
        if not self.ready_timeout_s > 0:
            raise ValueError(f"ready_timeout_s: must be > 0, got {self.ready_timeout_s}")


@dataclass(frozen=True, slots=True)
class ConnectionSnapshot:
    """A supervised connection as ``/health``, ``turngate channels status`` and metrics see it."""

    name: str
    state: ConnectionState
    generation: int
    """The current (or last) attempt's number; 0 before the first."""
    state_since: MonotonicS | None
    """When the state was entered, on the supervisor's clock; None before :meth:`run`."""
    reconnects: int
    zombies: int
    stale_callbacks_ignored: int
    last_error: str | None
    """Why the last attempt that failed ended, credentials blanked."""
    next_attempt_in_s: float | None
    """Seconds until the next dial while backing off, else None."""
    fatal: bool
    """True when a :class:`ChannelRefusedError` stopped the supervisor."""
    heartbeat_rtt_s: float | None = None
    """From the last acknowledged heartbeat to its ack; None before the first."""
    session_id: str | None = None
    """The platform's session the connection resumes, if the channel has one."""
    last_sequence: int | None = None
    """The last sequence number the channel stored everything up to (what it resumes from)."""
    resumes: int = 0
    """Connections that resumed the platform's session (nothing missed)."""
    identifies: int = 0
    """Connections that started a new session (identify)."""


@dataclass(frozen=True, slots=True)
class _Ending:
    """How one generation ended: the event for the machine, and why, for people."""

    event: ConnectionEvent
    reason: str
    error: Exception | None = None


class _GenerationOver(Exception):
    """Raised inside a generation's task group to cancel everything still running in it."""


class Generation(Generic[R]):
    """One connection attempt, as its connector sees it. Once it is over, every method is a
    no-op that counts as a stale callback: a finished attempt changes nothing (I6)."""

    def __init__(self, number: int, supervisor: Supervisor[R], group: asyncio.TaskGroup) -> None:
        self.number = number
        """Grows by one per attempt, across the supervisor's whole life."""
        self._supervisor = supervisor
        self._group = group
        self._ended = asyncio.Event()
        self._ready = asyncio.Event()
        self._ending: _Ending | None = None
        self.frames_received = 0
        """Frames :meth:`received` while this generation lived."""
        self.last_received_at: MonotonicS | None = None
        """When the last frame was received, on the supervisor's clock."""
        self.ready_at: MonotonicS | None = None
        """When the connection became ready; None if it never did."""
        self.heartbeat_acks = 0
        """Heartbeat acks :meth:`heartbeat_acked` counted while this generation lived."""
        self._beat_sent_at: MonotonicS | None = None

    @property
    def over(self) -> bool:
        """True from the moment this attempt started to end; nothing it does counts since."""
        return self._ending is not None

    @property
    def ending_for_good(self) -> bool:
        """True when this attempt ends because the channel stops (asked to, or refused for
        good), not to be followed by another: a connector closes its session then, instead of
        keeping it resumable."""
        return self._ending is not None and self._ending.event in (
            ConnectionEvent.STOP,
            ConnectionEvent.FATAL,
        )

    def spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[None] | None:
        """Run ``coro`` in this generation's task group; it is cancelled when the generation
        ends, and an exception from it ends the generation like one from the connector.
        On a finished generation the coroutine is closed unrun and None is returned."""
        if self._stale():
            coro.close()
            return None
        return self._group.create_task(self._guarded(coro))

    def guard(self, callback: Callable[P, T]) -> Callable[P, T | None]:
        """``callback`` wrapped so that, once this generation is over, calling it does nothing,
        returns None and is counted in ``stale_callbacks_ignored`` (seed 004's bug class)."""

        @functools.wraps(callback)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T | None:
            if self._stale():
                return None
            return callback(*args, **kwargs)

        return guarded

    def fail(self, error: Exception) -> None:
        """End this generation as if its connector had raised ``error``: for a frame handler,
        which must not raise into whoever called it (its reader, a timer, a library)."""
        if not self._stale():
            self._end(self._supervisor._classify(error))

    def received(self) -> None:
        """A frame was received from the peer: liveness is judged by this alone, never by
        what we send."""
        if self._stale():
            return
        self.frames_received += 1
        self.last_received_at = self._supervisor.clock.now()

    def identifying(self) -> None:
        """The transport is open; identify (or resume) is under way. Call it before starting
        the heartbeat."""
        if not self._stale():
            self._supervisor._move(ConnectionEvent.DIALED)

    def ready(self) -> None:
        """The platform accepted us: the connection is ready. From ``connecting`` directly when
        the platform has no identify step (a long poll's first good answer)."""
        if self._stale():
            return
        self._supervisor._move(ConnectionEvent.IDENTIFIED)
        self.ready_at = self._supervisor.clock.now()
        self._ready.set()
        log.info("channel %s: generation %d ready", self._supervisor.name, self.number)

    def start_heartbeat(
        self,
        interval_s: float,
        beat: Callable[[], Awaitable[object]],
        *,
        acks: bool = False,
    ) -> None:
        """Call ``beat`` (send one heartbeat frame) every ``interval_s`` in this generation.

        The first beat comes after ``uniform(0, interval_s)`` seconds, drawn from the
        supervisor's rng, so that connections that came up together do not beat in step. After
        each beat, the peer has until the next one (the ack window) to send *any* frame
        (:meth:`received`) or, with ``acks``, to acknowledge it (:meth:`heartbeat_acked`;
        Discord's rule: other frames flowing do not prove the heartbeat got through). If it
        did not, the connection is a zombie and the attempt ends. A beat that cannot be sent
        within the interval is a zombie too.
        """
        if not interval_s > 0:
            raise ValueError(f"interval_s: must be > 0, got {interval_s}")
        if self._stale():
            return
        if self._supervisor._state is ConnectionState.CONNECTING:
            # A zombie needs an open transport: the machine has no connecting --zombie--> edge.
            raise RuntimeError("start_heartbeat: call identifying() first")
        self._group.create_task(self._guarded(self._heartbeat(interval_s, beat, acks)))

    def heartbeat_acked(self) -> None:
        """The peer acknowledged a heartbeat: counts for liveness and measures the round trip
        (the first ack after a beat; a duplicate ack measures nothing)."""
        if self._stale():
            return
        self.heartbeat_acks += 1
        if self._beat_sent_at is not None:
            self._supervisor._heartbeat_rtt_s = self._supervisor.clock.now() - self._beat_sent_at
            self._beat_sent_at = None

    @property
    def resume(self) -> R | None:
        """The supervisor's resume state (e.g. session id and last sequence), shared across
        generations; the connector reads it to resume and writes it as frames arrive."""
        return self._supervisor.resume

    @resume.setter
    def resume(self, value: R | None) -> None:
        # A finished generation must not overwrite what its successor resumes from.
        if not self._stale():
            self._supervisor.resume = value

    def _end(self, ending: _Ending) -> None:
        # The first ending wins; setting the event makes the attempt cancel its whole group.
        if self._ending is None:
            self._ending = ending
            self._ended.set()

    async def _wait_ended(self) -> None:
        await self._ended.wait()

    async def _wait_ready(self) -> None:
        await self._ready.wait()

    def _stale(self) -> bool:
        if self._ending is None:
            return False
        self._supervisor._stale_callbacks_ignored += 1
        return True

    async def _guarded(self, coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except Exception as exc:
            # Caught here so the task group never sees it: the first ending decides.
            self._end(self._supervisor._classify(exc))

    async def _heartbeat(
        self, interval_s: float, beat: Callable[[], Awaitable[object]], acks: bool
    ) -> None:
        clock = self._supervisor.clock
        await asyncio.sleep(self._supervisor.rng.uniform(0.0, interval_s))
        while True:
            before = self.heartbeat_acks if acks else self.frames_received
            next_beat_at = clock.now() + interval_s
            self._beat_sent_at = clock.now()
            deadline = asyncio.timeout(interval_s)
            try:
                async with deadline:
                    await beat()
            except TimeoutError:
                if not deadline.expired():
                    raise  # the beat's own timeout: a lost connection, not ours to judge
                self._end(_Ending(ConnectionEvent.ZOMBIE, f"heartbeat not sent in {interval_s:g}s"))
                return
            await asyncio.sleep(max(0.0, next_beat_at - clock.now()))
            if (self.heartbeat_acks if acks else self.frames_received) == before:
                what = "heartbeat ack" if acks else "frame"
                reason = f"no {what} received within {interval_s:g}s of a heartbeat"
                self._end(_Ending(ConnectionEvent.ZOMBIE, reason))
                return


def _reraise_swallowed_cancel() -> None:
    """Raise the caller's cancellation if the generation's task group swallowed it.

    On Python 3.11 a TaskGroup whose body raised (here: the generation ending) drops a
    cancellation of its parent that arrives while it waits for its children (3.12 fixed it).
    The supervisor would then dial again for a gateway that is gone (the simulator found it:
    a crashed life's channel kept its heartbeat beating)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


Connector: TypeAlias = Callable[[Generation[R]], Awaitable[None]]
"""Dials, identifies, reads frames until the connection ends; see the module docstring."""


class Supervisor(Generic[R]):
    """Runs a connector, one generation after another, until stopped or refused for good."""

    def __init__(
        self,
        name: str,
        connector: Connector[R],
        *,
        clock: Clock,
        rng: random.Random,
        settings: SupervisorSettings | None = None,
        secrets: Sequence[str] = (),
        resume: R | None = None,
    ) -> None:
        """``name`` names the channel in logs and snapshots; ``secrets`` (the channel's
        credentials) are blanked from every error text it logs or shows."""
        self.name = name
        self.clock = clock
        self.rng = rng
        self.settings = settings or SupervisorSettings()
        self.resume = resume
        """Opaque state the connectors carry across generations; the supervisor never reads it."""
        self._stale_callbacks_ignored = 0
        self._connector = connector
        self._secrets = tuple(secrets)
        self._backoff = Backoff(self.settings.backoff, rng)
        self._stopping = asyncio.Event()
        self._state = ConnectionState.CONNECTING
        self._state_since: MonotonicS | None = None
        self._generation = 0
        self._current: Generation[R] | None = None
        self._reconnects = 0
        self._zombies = 0
        self._last_error: str | None = None
        self._fatal = False
        self._retry_at: MonotonicS | None = None
        self._running = False
        self._heartbeat_rtt_s: float | None = None

    async def run(self) -> None:
        """Connect, and reconnect, until :meth:`stop` or a fatal refusal; then return. Nothing
        a connector raises escapes; cancelling the caller stops the supervisor too."""
        if self._running:
            raise RuntimeError(f"channel {self.name}: the supervisor is already running")
        self._running = True
        self._state_since = self.clock.now()
        try:
            while not self._stopping.is_set():
                ending = await self._attempt()
                if ending.event not in (ConnectionEvent.LOST, ConnectionEvent.ZOMBIE):
                    break
                if not await self._back_off(ending):
                    break
                self._reconnects += 1
                self._move(ConnectionEvent.RETRY)
        finally:
            if self._state is not ConnectionState.STOPPED:
                self._move(ConnectionEvent.STOP)
            self._running = False

    def stop(self) -> None:
        """End the current generation and the loop now; :meth:`run` returns promptly."""
        self._stopping.set()
        if self._current is not None:
            self._current._end(_Ending(ConnectionEvent.STOP, "stopped"))

    def snapshot(self) -> ConnectionSnapshot:
        """The connection's state and counters, for health, status and metrics."""
        next_in_s = None
        if self._retry_at is not None:
            next_in_s = max(0.0, self._retry_at - self.clock.now())
        return ConnectionSnapshot(
            name=self.name,
            state=self._state,
            generation=self._generation,
            state_since=self._state_since,
            reconnects=self._reconnects,
            zombies=self._zombies,
            stale_callbacks_ignored=self._stale_callbacks_ignored,
            last_error=self._last_error,
            next_attempt_in_s=next_in_s,
            fatal=self._fatal,
            heartbeat_rtt_s=self._heartbeat_rtt_s,
        )

    def _classify(self, exc: Exception) -> _Ending:
        """How an exception from a connector ends its generation."""
        text = self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if isinstance(exc, ChannelRefusedError):
            return _Ending(ConnectionEvent.FATAL, text, exc)
        return _Ending(ConnectionEvent.LOST, text, exc)

    async def _attempt(self) -> _Ending:
        self._generation += 1
        group = asyncio.TaskGroup()
        gen = Generation(self._generation, self, group)
        self._current = gen
        try:
            async with group:
                gen.spawn(self._connect(gen))
                gen.spawn(self._ready_deadline(gen))
                try:
                    await gen._wait_ended()
                except asyncio.CancelledError:
                    # Over for good before its tasks unwind: a connector closing its socket
                    # then ends the platform session instead of keeping it for a resume.
                    gen._end(_Ending(ConnectionEvent.STOP, "cancelled"))
                    raise
                raise _GenerationOver
        except* _GenerationOver:
            pass  # how it ended is in gen._ending
        finally:
            # Also when the caller cancelled us: the generation is over for everyone.
            gen._end(_Ending(ConnectionEvent.STOP, "cancelled"))
            self._current = None
        _reraise_swallowed_cancel()
        assert gen._ending is not None
        self._finish(gen, gen._ending)
        return gen._ending

    async def _connect(self, gen: Generation[R]) -> None:
        await self._connector(gen)
        gen._end(_Ending(ConnectionEvent.LOST, "the connection closed"))

    async def _ready_deadline(self, gen: Generation[R]) -> None:
        timeout_s = self.settings.ready_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await gen._wait_ready()
        except TimeoutError:
            gen._end(_Ending(ConnectionEvent.LOST, f"not ready within {timeout_s:g}s"))

    def _finish(self, gen: Generation[R], ending: _Ending) -> None:
        """Apply the ending to the machine, the counters and the backoff schedule."""
        self._move(ending.event)
        if ending.event is ConnectionEvent.STOP:
            log.info("channel %s: generation %d stopped", self.name, gen.number)
            return
        self._last_error = ending.reason
        ready_for_s = None if gen.ready_at is None else self.clock.now() - gen.ready_at
        self._backoff.attempt_ended(ready_for_s)
        if ending.event is ConnectionEvent.ZOMBIE:
            self._zombies += 1
        self._fatal = ending.event is ConnectionEvent.FATAL
        self._log_failure(gen, ending)

    def _log_failure(self, gen: Generation[R], ending: _Ending) -> None:
        """ERROR for a fatal refusal and for a connector's bug; the warning of a plain loss
        comes with its backoff delay (:meth:`_back_off`)."""
        if ending.event is ConnectionEvent.FATAL:
            log.error(
                "channel %s: generation %d refused for good, not reconnecting: %s",
                self.name,
                gen.number,
                ending.reason,
                extra={"event": "connection_fatal"},
            )
        elif self._is_bug(ending.error):
            log.error(
                "channel %s: generation %d: the connector failed unexpectedly; treated as a"
                " lost connection\n%s",
                self.name,
                gen.number,
                self._redact("".join(traceback.format_exception(ending.error))).rstrip(),
                extra={"event": "connection_error"},
            )

    async def _back_off(self, ending: _Ending) -> bool:
        """Wait the next backoff delay; False when stopped meanwhile."""
        delay_s = self._backoff.next_delay_s()
        self._retry_at = self.clock.now() + delay_s
        log.warning(
            "channel %s: generation %d %s (%s); reconnecting in %.3fs",
            self.name,
            self._generation,
            "is a zombie" if ending.event is ConnectionEvent.ZOMBIE else "lost",
            ending.reason,
            delay_s,
            extra={"event": f"connection_{ending.event.value}"},
        )
        try:
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        except TimeoutError:
            return True
        finally:
            self._retry_at = None
        return False

    def _move(self, event: ConnectionEvent) -> None:
        self._state = next_connection_state(self._state, event)
        self._state_since = self.clock.now()

    def _is_bug(self, error: Exception | None) -> bool:
        expected = (*self.settings.lost_errors, ChannelRefusedError)
        return error is not None and not isinstance(error, expected)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)
