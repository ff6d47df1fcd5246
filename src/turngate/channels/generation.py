"""One connection attempt of a supervised channel: a *generation*.

The :class:`~turngate.channels.supervisor.Supervisor` makes a :class:`Generation` per attempt
and hands it to the channel's connector, which reports through it what the connection does
(:meth:`~Generation.identifying`, :meth:`~Generation.ready`, :meth:`~Generation.received`,
:meth:`~Generation.heartbeat_acked`) and runs everything it starts in it
(:meth:`~Generation.spawn`, :meth:`~Generation.start_heartbeat`). Its number only grows.

Generations (seed 004, invariant I6): everything an attempt starts, its tasks and its timers,
lives in that attempt's own :class:`asyncio.TaskGroup` and is cancelled with it. A callback that
outlives its generation (a platform library's handler, a timer of the library's own) is wrapped
with :meth:`Generation.guard`: once the generation is over it does nothing and is counted in
``stale_callbacks_ignored``. Every other method of a finished generation behaves the same way.
A handler that learns the connection must end (the peer asked for a reconnect) calls
:meth:`Generation.fail` instead of raising into whoever called it.

The heartbeat is the generation's own: it judges liveness by frames received (or, for a
protocol whose heartbeats are acknowledged, by acks) and ends the generation as a *zombie*
when the peer stays silent; the supervisor decides what comes next (see its module).

A generation sees its supervisor only through :class:`GenerationHost`, the few things the
supervisor offers its generations; the supervisor sees a generation through its public
methods and the few marked as the supervisor's (:meth:`~Generation.end`,
:attr:`~Generation.ending`, :meth:`~Generation.wait_ended`, :meth:`~Generation.wait_ready`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from turngate.core.clock import Clock
from turngate.core.connection import ConnectionEvent, ConnectionState
from turngate.types import MonotonicS

log = logging.getLogger("turngate.channels")

R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Ending:
    """How one generation ended: the event for the machine, and why, for people."""

    event: ConnectionEvent
    reason: str
    error: Exception | None = None


@dataclass(slots=True)
class SessionCounts:
    """A channel's platform sessions since it started, for ``/health`` and metrics:
    connections that started a new one (identify) and that resumed one."""

    identifies: int = 0
    resumes: int = 0


class GenerationHost(Protocol[R]):
    """What a :class:`Generation` needs of the supervisor that runs it (the
    :class:`~turngate.channels.supervisor.Supervisor`; a test may stand in for it)."""

    @property
    def name(self) -> str:
        """The channel's name, for logs."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def rng(self) -> random.Random:
        """Draws the heartbeat's first-beat jitter."""
        ...

    resume: R | None
    """The resume state shared across generations."""

    @property
    def state(self) -> ConnectionState:
        """The connection machine's current state."""
        ...

    def move(self, event: ConnectionEvent) -> None:
        """Apply ``event`` to the connection machine."""

    def classify(self, error: Exception) -> Ending:
        """How ``error``, raised by a connector or a task of its generation, ends it."""
        ...

    def stale_callback_ignored(self) -> None:
        """Count one call into a finished generation that did nothing."""

    def heartbeat_measured(self, rtt_s: float) -> None:
        """Record a heartbeat's round trip, from the beat to its ack."""


class Generation(Generic[R]):
    """One connection attempt, as its connector sees it. Once it is over, every method is a
    no-op that counts as a stale callback: a finished attempt changes nothing (I6)."""

    def __init__(
        self, number: int, supervisor: GenerationHost[R], group: asyncio.TaskGroup
    ) -> None:
        self.number = number
        """Grows by one per attempt, across the supervisor's whole life."""
        self._supervisor = supervisor
        self._group = group
        self._ended = asyncio.Event()
        self._ready = asyncio.Event()
        self._ending: Ending | None = None
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
            self.end(self._supervisor.classify(error))

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
            self._supervisor.move(ConnectionEvent.DIALED)

    def ready(self) -> None:
        """The platform accepted us: the connection is ready. From ``connecting`` directly when
        the platform has no identify step (a long poll's first good answer)."""
        if self._stale():
            return
        self._supervisor.move(ConnectionEvent.IDENTIFIED)
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
        if self._supervisor.state is ConnectionState.CONNECTING:
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
            self._supervisor.heartbeat_measured(self._supervisor.clock.now() - self._beat_sent_at)
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

    # For the supervisor that runs this generation; a connector never calls these.

    @property
    def ending(self) -> Ending | None:
        """How this generation ended (the first ending given), or None while it lives."""
        return self._ending

    def end(self, ending: Ending) -> None:
        """End this generation: the first ending wins, and its supervisor then cancels
        everything running in it. A connector calls :meth:`fail` instead."""
        if self._ending is None:
            self._ending = ending
            self._ended.set()

    async def wait_ended(self) -> None:
        """Return once this generation has ended."""
        await self._ended.wait()

    async def wait_ready(self) -> None:
        """Return once the connection is :meth:`ready`."""
        await self._ready.wait()

    def _stale(self) -> bool:
        if self._ending is None:
            return False
        self._supervisor.stale_callback_ignored()
        return True

    async def _guarded(self, coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except Exception as exc:
            # Caught here so the task group never sees it: the first ending decides.
            self.end(self._supervisor.classify(exc))

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
                self.end(Ending(ConnectionEvent.ZOMBIE, f"heartbeat not sent in {interval_s:g}s"))
                return
            await asyncio.sleep(max(0.0, next_beat_at - clock.now()))
            if (self.heartbeat_acks if acks else self.frames_received) == before:
                what = "heartbeat ack" if acks else "frame"
                reason = f"no {what} received within {interval_s:g}s of a heartbeat"
                self.end(Ending(ConnectionEvent.ZOMBIE, reason))
                return


__all__ = ["Ending", "Generation", "GenerationHost", "SessionCounts"]
