"""The connection supervisor: keeps one platform connection alive, one generation at a time.

A channel hands the supervisor a *connector*, ``async def connect(gen: Generation) -> None``,
that dials, identifies (or resumes), then reads frames until the connection ends. The
supervisor calls it again and again until stopped; each call is a
:class:`~turngate.channels.generation.Generation` whose number only grows. How an attempt
ends decides what comes next:

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

Generations (seed 004, invariant I6): everything an attempt starts lives in that attempt's
own :class:`asyncio.TaskGroup` and is cancelled with it, and a finished generation changes
nothing; :mod:`turngate.channels.generation` tells how (guarded callbacks, ``fail``, the
heartbeat). The supervisor offers its generations only what
:class:`~turngate.channels.generation.GenerationHost` names.

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
import logging
import random
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from turngate.channels.generation import Ending, Generation
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
    last_frame_ago_s: float | None = None
    """Seconds since the current generation last received a frame from the peer; None
    without a generation, or before its first frame."""
    session_id: str | None = None
    """The platform's session the connection resumes, if the channel has one."""
    last_sequence: int | None = None
    """The last sequence number the channel stored everything up to (what it resumes from)."""
    resumes: int = 0
    """Connections that resumed the platform's session (nothing missed)."""
    identifies: int = 0
    """Connections that started a new session (identify)."""


class _GenerationOver(Exception):
    """Raised inside a generation's task group to cancel everything still running in it."""


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
                self.move(ConnectionEvent.RETRY)
        finally:
            if self._state is not ConnectionState.STOPPED:
                self.move(ConnectionEvent.STOP)
            self._running = False

    def stop(self) -> None:
        """End the current generation and the loop now; :meth:`run` returns promptly."""
        self._stopping.set()
        if self._current is not None:
            self._current.end(Ending(ConnectionEvent.STOP, "stopped"))

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
            last_frame_ago_s=self._last_frame_ago_s(),
        )

    def _last_frame_ago_s(self) -> float | None:
        current = self._current
        if current is None or current.last_received_at is None:
            return None
        return max(0.0, self.clock.now() - current.last_received_at)

    # For its generations (what :class:`~turngate.channels.generation.GenerationHost` names);
    # a channel never calls these.

    @property
    def state(self) -> ConnectionState:
        """The connection machine's current state."""
        return self._state

    def move(self, event: ConnectionEvent) -> None:
        """Apply ``event`` to the connection machine (an illegal one raises)."""
        self._state = next_connection_state(self._state, event)
        self._state_since = self.clock.now()

    def classify(self, error: Exception) -> Ending:
        """How an exception from a connector ends its generation."""
        text = self._redact(
            f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        )
        if isinstance(error, ChannelRefusedError):
            return Ending(ConnectionEvent.FATAL, text, error)
        return Ending(ConnectionEvent.LOST, text, error)

    def stale_callback_ignored(self) -> None:
        """Count one call into a finished generation that did nothing."""
        self._stale_callbacks_ignored += 1

    def heartbeat_measured(self, rtt_s: float) -> None:
        """Record a heartbeat's round trip, from the beat to its ack."""
        self._heartbeat_rtt_s = rtt_s

    async def _attempt(self) -> Ending:
        self._generation += 1
        group = asyncio.TaskGroup()
        gen = Generation(self._generation, self, group)
        self._current = gen
        try:
            async with group:
                gen.spawn(self._connect(gen))
                gen.spawn(self._ready_deadline(gen))
                try:
                    await gen.wait_ended()
                except asyncio.CancelledError:
                    # Over for good before its tasks unwind: a connector closing its socket
                    # then ends the platform session instead of keeping it for a resume.
                    gen.end(Ending(ConnectionEvent.STOP, "cancelled"))
                    raise
                raise _GenerationOver
        except* _GenerationOver:
            pass  # how it ended is in gen.ending
        finally:
            # Also when the caller cancelled us: the generation is over for everyone.
            gen.end(Ending(ConnectionEvent.STOP, "cancelled"))
            self._current = None
        _reraise_swallowed_cancel()
        ending = gen.ending
        assert ending is not None
        self._finish(gen, ending)
        return ending

    async def _connect(self, gen: Generation[R]) -> None:
        await self._connector(gen)
        gen.end(Ending(ConnectionEvent.LOST, "the connection closed"))

    async def _ready_deadline(self, gen: Generation[R]) -> None:
        timeout_s = self.settings.ready_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await gen.wait_ready()
        except TimeoutError:
            gen.end(Ending(ConnectionEvent.LOST, f"not ready within {timeout_s:g}s"))

    def _finish(self, gen: Generation[R], ending: Ending) -> None:
        """Apply the ending to the machine, the counters and the backoff schedule."""
        self.move(ending.event)
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

    def _log_failure(self, gen: Generation[R], ending: Ending) -> None:
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

    async def _back_off(self, ending: Ending) -> bool:
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

    def _is_bug(self, error: Exception | None) -> bool:
        expected = (*self.settings.lost_errors, ChannelRefusedError)
        return error is not None and not isinstance(error, expected)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)
