"""The connection supervisor against a fake chat platform, on virtual time.

Every scenario runs on :class:`~turngate.sim.loop.VirtualTimeLoop`: when every task waits, time
jumps to the next deadline, so each test asserts the exact virtual time of what happened and
none of them sleeps for real.

The fake platform speaks a tiny protocol: the connector dials, sends ``identify``, and reads
frames (``ready``, ``ack`` for each heartbeat, ``msg <seq>``) until the link closes. A
:class:`Script` per generation says how the platform misbehaves on that connection. Jitter is
drawn at a fixed fraction of its window (:class:`FixedFraction`), so times are round numbers:
with the default half, the first heartbeat comes ``HEARTBEAT_S / 2`` after identify starts,
and a retry ``n`` comes ``min(cap, base * 2**n) / 2`` after the loss.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from turngate.channels.generation import Generation
from turngate.channels.supervisor import Connector, Supervisor, SupervisorSettings
from turngate.core.connection import BackoffPolicy, ConnectionState
from turngate.errors import ChannelError, ChannelRefusedError
from turngate.runtime.clock import LoopClock
from turngate.sim.loop import run_virtual

NAME = "im-test"
HEARTBEAT_S = 10.0
IDENTIFY_S = 1.0
WAIT_MAX_S = 86_400.0
"""No scenario waits longer than a virtual day for what it expects."""
POLICY = BackoffPolicy(base_s=1.0, cap_s=60.0, healthy_after_s=30.0)
TOKEN = "im-bot-token-5f4e3d2c1b0a"
"""A credential the channel would hold; it must never reach a log line or a snapshot."""


class FixedFraction(random.Random):
    """Draws every ``uniform(a, b)`` at the same fraction of the way from a to b."""

    def __init__(self, fraction: float = 0.5) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@dataclass(frozen=True)
class Resume:
    """What the fake platform lets a connection resume from."""

    session_id: str
    last_seq: int


@dataclass(frozen=True)
class Script:
    """How the fake platform treats one connection."""

    identify: bool = True
    """Answers ``identify`` with ``ready`` (after ``IDENTIFY_S``)."""
    acks_until_s: float = math.inf
    """Acknowledges the heartbeats that arrive before this virtual time; then goes silent."""
    close_at_beat: int | None = None
    """Resets the connection when this heartbeat (from 1) is being sent."""
    close_after_s: float | None = None
    """Closes the connection this long after the dial."""
    refuse: Exception | None = None
    """Refuses the dial with this error."""
    messages: int = 0
    """Sends ``msg 1`` .. ``msg N`` right after ``ready``."""
    pushes_every_s: float | None = None
    """When quiet this long, sends a ``push`` frame (a chatty peer that never acks)."""


class FakePlatform:
    """A chat platform on virtual time, with a timeline of (time, what) that tests assert."""

    def __init__(self, clock: LoopClock, *scripts: Script) -> None:
        self.clock = clock
        self.scripts = scripts or (Script(),)
        self.timeline: list[tuple[float, str]] = []
        self.handlers: list[Callable[[str], None]] = []
        """Callbacks the connectors registered, as a platform library would keep them."""
        self.delivered: list[str] = []
        self._changed = asyncio.Event()

    def script(self, number: int) -> Script:
        return self.scripts[min(number, len(self.scripts)) - 1]

    def record(self, what: str) -> None:
        self.timeline.append((self.clock.now(), what))
        self._changed.set()

    def at(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, what) for t, what in self.timeline if what.startswith(prefix)]

    async def until(self, what: str) -> None:
        """Return once the timeline shows ``what``."""
        async with asyncio.timeout(WAIT_MAX_S):
            while all(entry != what for _, entry in self.timeline):
                self._changed.clear()
                await self._changed.wait()

    async def dial(self, number: int, resume: Resume | None) -> Link:
        script = self.script(number)
        self.record(f"dial {number}" + (f" resume {resume.last_seq}" if resume else ""))
        if script.refuse is not None:
            raise script.refuse
        return Link(self, number, script)

    def deliver(self, number: int, text: str) -> None:
        """What a registered message handler does: hand the text on, tagged by generation."""
        self.delivered.append(f"{number}: {text}")


class Link:
    """One connection to the fake platform."""

    def __init__(self, platform: FakePlatform, number: int, script: Script) -> None:
        self.platform = platform
        self.number = number
        self.script = script
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.beats = 0
        self.closes_at = math.inf
        if script.close_after_s is not None:
            self.closes_at = platform.clock.now() + script.close_after_s

    async def send(self, frame: str) -> None:
        if frame == "identify":
            # The round trip, unless the platform closes the connection first.
            await asyncio.sleep(min(IDENTIFY_S, self.closes_at - self.platform.clock.now()))
            if self.script.identify and self.platform.clock.now() < self.closes_at:
                self.inbox.put_nowait("ready")
                for seq in range(1, self.script.messages + 1):
                    self.inbox.put_nowait(f"msg {seq}")
        elif frame == "beat":
            self.beats += 1
            self.platform.record(f"beat {self.number}")
            if self.beats == self.script.close_at_beat:
                raise ConnectionResetError("the peer reset the connection")
            if self.platform.clock.now() < self.script.acks_until_s:
                self.inbox.put_nowait("ack")

    async def recv(self) -> str | None:
        """The next frame, or None once the platform closed the connection."""
        quiet_s = self.script.pushes_every_s or math.inf
        wait_s = min(quiet_s, self.closes_at - self.platform.clock.now())
        try:
            async with asyncio.timeout(None if math.isinf(wait_s) else wait_s):
                return await self.inbox.get()
        except TimeoutError:
            return None if self.platform.clock.now() >= self.closes_at else "push"


def im_connector(platform: FakePlatform, gens: list[Generation[Resume]]) -> Connector[Resume]:
    """The connector a WebSocket IM channel would write, against the fake platform."""

    async def connect(gen: Generation[Resume]) -> None:
        gens.append(gen)
        link = await platform.dial(gen.number, gen.resume)
        try:
            gen.identifying()
            gen.start_heartbeat(HEARTBEAT_S, functools.partial(link.send, "beat"))
            platform.handlers.append(gen.guard(functools.partial(platform.deliver, gen.number)))
            await link.send("identify")
            while (frame := await link.recv()) is not None:
                gen.received()
                read(gen, frame)
        finally:
            platform.record(f"closed {gen.number}")

    def read(gen: Generation[Resume], frame: str) -> None:
        if frame == "ready":
            gen.ready()
            platform.record(f"ready {gen.number}")
        elif frame.startswith("msg "):
            gen.resume = Resume("s1", int(frame.removeprefix("msg ")))

    return connect


@dataclass
class Run:
    """One supervisor, its fake platform and the generations its connector saw."""

    platform: FakePlatform
    supervisor: Supervisor[Resume]
    gens: list[Generation[Resume]] = field(default_factory=list)


def make(*scripts: Script, rng: random.Random | None = None, ready_timeout_s: float = 30.0) -> Run:
    """A supervisor of the IM connector over a fake platform; build it on the running loop."""
    clock = LoopClock()
    platform = FakePlatform(clock, *scripts)
    gens: list[Generation[Resume]] = []
    supervisor = Supervisor(
        NAME,
        im_connector(platform, gens),
        clock=clock,
        rng=rng or FixedFraction(),
        settings=SupervisorSettings(backoff=POLICY, ready_timeout_s=ready_timeout_s),
        secrets=[TOKEN],
    )
    return Run(platform, supervisor, gens)


async def supervise_until(run: Run, what: str, stop_after_s: float = 0.0) -> None:
    """Run the supervisor until the platform's timeline shows ``what``, and ``stop_after_s``
    more, then stop it."""
    async with asyncio.TaskGroup() as group:
        group.create_task(run.supervisor.run())
        await run.platform.until(what)
        await asyncio.sleep(stop_after_s)
        run.supervisor.stop()


def scenario(*scripts: Script, until: str, stop_after_s: float = 0.0, **options: Any) -> Run:
    """Build a run, supervise it until ``until`` shows (and ``stop_after_s`` more), and
    return it for the asserts."""

    async def main() -> Run:
        run = make(*scripts, **options)
        await supervise_until(run, until, stop_after_s)
        return run

    return run_virtual(main())


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "turngate.channels" and r.levelno >= logging.WARNING
    ]


def test_a_connection_dials_identifies_and_is_ready_until_stopped() -> None:
    async def main() -> None:
        run = make()
        async with asyncio.TaskGroup() as group:
            group.create_task(run.supervisor.run())
            await run.platform.until("ready 1")
            snap = run.supervisor.snapshot()
            assert (snap.name, snap.state, snap.generation) == (NAME, ConnectionState.READY, 1)
            assert (snap.state_since, snap.reconnects, snap.last_error) == (1.0, 0, None)
            await asyncio.sleep(100.0)
            run.supervisor.stop()
        assert run.platform.at("dial") + run.platform.at("ready") == [
            (0.0, "dial 1"),
            (1.0, "ready 1"),
        ]
        assert run.supervisor.snapshot().state is ConnectionState.STOPPED
        assert run.supervisor.snapshot().state_since == 101.0

    run_virtual(main())


def test_a_healthy_peer_that_acks_every_heartbeat_is_never_declared_a_zombie() -> None:
    async def main() -> None:
        run = make()
        async with asyncio.TaskGroup() as group:
            group.create_task(run.supervisor.run())
            await asyncio.sleep(3600.0)
            run.supervisor.stop()
        beats = run.platform.at("beat")
        # The first beat at half an interval (the jitter), then one per interval.
        assert [t for t, _ in beats[:3]] == [5.0, 15.0, 25.0]
        assert len(beats) == 360
        assert run.supervisor.snapshot().zombies == 0
        assert run.supervisor.snapshot().generation == 1

    run_virtual(main())


def test_a_silent_peer_is_a_zombie_one_interval_after_its_first_unanswered_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Acks the beats at 5 and 15; the beat at 25 goes unanswered.
    run = scenario(Script(acks_until_s=20.0), Script(), until="ready 2")
    assert run.platform.at("closed 1") == [(35.0, "closed 1")]
    # Retry 0 waits half of base (1s): the second dial at 35.5, ready a round trip later.
    assert run.platform.at("dial 2") == [(35.5, "dial 2")]
    assert run.platform.at("ready 2") == [(36.5, "ready 2")]
    snap = run.supervisor.snapshot()
    assert (snap.zombies, snap.reconnects, snap.generation) == (1, 1, 2)
    assert snap.last_error == "no frame received within 10s of a heartbeat"
    assert warnings_of(caplog) == [
        "channel im-test: generation 1 is a zombie (no frame received within 10s of a"
        " heartbeat); reconnecting in 0.500s"
    ]


def test_liveness_is_judged_by_frames_received_not_by_heartbeat_acks_or_our_sends() -> None:
    chatty_but_never_acks = Script(acks_until_s=0.0, pushes_every_s=4.0)
    run = scenario(chatty_but_never_acks, until="beat 1", stop_after_s=100.0)
    assert len(run.platform.at("beat")) == 11  # at 5, 15, ..., 105: none answered
    assert (run.supervisor.snapshot().zombies, run.supervisor.snapshot().generation) == (0, 1)

    silent = scenario(Script(acks_until_s=0.0), Script(), until="ready 2")
    # Our beat at 5 was sent fine; nothing at all came back by the next one.
    assert silent.platform.at("closed 1") == [(15.0, "closed 1")]
    assert silent.supervisor.snapshot().zombies == 1


def test_a_heartbeat_that_cannot_even_be_sent_within_its_interval_is_a_zombie() -> None:
    async def stuck_send(gen: Generation[None]) -> None:
        gen.identifying()
        gen.ready()
        gen.start_heartbeat(HEARTBEAT_S, asyncio.Event().wait)  # the send buffer is full
        await asyncio.Event().wait()

    async def main() -> None:
        supervisor: Supervisor[None] = Supervisor(
            NAME, stuck_send, clock=LoopClock(), rng=FixedFraction()
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run())
            await asyncio.sleep(15.25)  # first beat at 5, stuck until 15; the retry at 15.5
            snap = supervisor.snapshot()
            supervisor.stop()
        assert (snap.state, snap.state_since) == (ConnectionState.BACKING_OFF, 15.0)
        assert (snap.zombies, snap.last_error) == (1, "heartbeat not sent in 10s")

    run_virtual(main())


def test_a_callback_of_an_old_generation_does_nothing_and_is_counted() -> None:
    async def main() -> None:
        run = make(Script(close_after_s=2.0), Script())
        async with asyncio.TaskGroup() as group:
            group.create_task(run.supervisor.run())
            await run.platform.until("ready 2")
            old_handler, new_handler = run.platform.handlers
            old_gen = run.gens[0]
            # Seed 004: the platform library fires the closed connection's callbacks late.
            assert old_handler("late frame for the old connection") is None
            new_handler("hello")
            assert run.platform.delivered == ["2: hello"]
            # Nothing else an old generation does changes anything either.
            never_run = asyncio.sleep(0)
            assert old_gen.spawn(never_run) is None
            old_gen.resume = Resume("stale", 99)
            old_gen.received()
            assert run.supervisor.resume is None
            assert old_gen.frames_received == 1  # the ready frame it got while it lived
            assert run.supervisor.snapshot().stale_callbacks_ignored == 4
            assert run.supervisor.snapshot().state is ConnectionState.READY
            run.supervisor.stop()

    run_virtual(main())


def test_a_connection_reset_mid_heartbeat_reconnects_after_a_backoff_and_nothing_escapes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = scenario(Script(close_at_beat=2), Script(), until="ready 2")
    assert run.platform.at("beat 1") == [(5.0, "beat 1"), (15.0, "beat 1")]
    assert run.platform.at("closed 1") == [(15.0, "closed 1")]
    assert run.platform.at("dial 2") == [(15.5, "dial 2")]
    snap = run.supervisor.snapshot()
    assert (snap.reconnects, snap.zombies, snap.state) == (1, 0, ConnectionState.STOPPED)
    assert snap.last_error == "ConnectionResetError: the peer reset the connection"
    assert warnings_of(caplog) == [
        "channel im-test: generation 1 lost (ConnectionResetError: the peer reset the"
        " connection); reconnecting in 0.500s"
    ]


def test_a_peer_that_closes_before_identify_completes_is_retried_with_a_growing_backoff() -> None:
    closes_early = Script(identify=False, close_after_s=0.5)
    run = scenario(closes_early, closes_early, closes_early, Script(), until="ready 4")
    # Lost at +0.5 each time; the waits are half of 1, 2 and 4 seconds.
    assert run.platform.at("dial") == [
        (0.0, "dial 1"),
        (1.0, "dial 2"),
        (2.5, "dial 3"),
        (5.0, "dial 4"),
    ]
    assert run.platform.at("ready") == [(6.0, "ready 4")]
    assert run.supervisor.snapshot().last_error == "the connection closed"


def test_a_peer_that_never_finishes_identify_is_dropped_at_the_ready_deadline() -> None:
    run = scenario(Script(identify=False), Script(), until="ready 2", ready_timeout_s=20.0)
    assert run.platform.at("closed 1") == [(20.0, "closed 1")]
    assert run.platform.at("ready") == [(21.5, "ready 2")]
    assert run.supervisor.snapshot().last_error == "not ready within 20s"


def test_a_connection_that_stayed_ready_long_enough_retries_quickly_again() -> None:
    closes_early = Script(identify=False, close_after_s=0.5)
    healthy_a_while = Script(close_after_s=POLICY.healthy_after_s + IDENTIFY_S)
    run = scenario(
        closes_early, closes_early, healthy_a_while, closes_early, Script(), until="ready 5"
    )
    assert run.platform.at("dial") == [
        (0.0, "dial 1"),
        (1.0, "dial 2"),
        (2.5, "dial 3"),
        (34.0, "dial 4"),  # closed at 33.5 after 31s, 30 of them ready: retry 0 again, 0.5s
        (35.5, "dial 5"),  # and it grows again from there: 1s
    ]


def test_resume_state_written_by_one_generation_is_read_by_the_next() -> None:
    first = Script(messages=3, close_after_s=5.0)
    run = scenario(first, Script(), until="ready 2")
    assert run.platform.at("dial") == [(0.0, "dial 1"), (5.5, "dial 2 resume 3")]
    assert run.supervisor.resume == Resume("s1", 3)


def test_a_fatal_refusal_stops_the_supervisor_with_the_error_in_its_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> Run:
        run = make(Script(refuse=ChannelRefusedError("the platform refused the bot token")))
        await run.supervisor.run()  # returns by itself: nothing to retry
        return run

    run = run_virtual(main())
    snap = run.supervisor.snapshot()
    assert (snap.state, snap.fatal, snap.generation, snap.reconnects) == (
        ConnectionState.STOPPED,
        True,
        1,
        0,
    )
    assert snap.last_error == "ChannelRefusedError: the platform refused the bot token"
    assert snap.state_since == 0.0
    assert warnings_of(caplog) == [
        "channel im-test: generation 1 refused for good, not reconnecting:"
        " ChannelRefusedError: the platform refused the bot token"
    ]


def test_a_credential_in_an_error_never_reaches_the_logs_or_the_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leaky_io = Script(refuse=ConnectionError(f"GET https://im.example/bot{TOKEN}/poll failed"))
    leaky_bug = Script(refuse=KeyError(f"no handler for token {TOKEN}"))
    run = scenario(leaky_io, leaky_bug, Script(), until="ready 3")
    assert run.supervisor.snapshot().last_error == "KeyError: 'no handler for token [redacted]'"
    logged = "\n".join(warnings_of(caplog))
    assert "[redacted]" in logged
    assert TOKEN not in logged
    # The bug is told apart from a dropped connection: an ERROR with its traceback.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "failed unexpectedly" in errors[0].getMessage()
    assert "Traceback" in errors[0].getMessage()


PHASES = {
    ConnectionState.CONNECTING: Script(),  # the dial itself hangs: see hung_dial
    ConnectionState.IDENTIFYING: Script(identify=False),
    ConnectionState.READY: Script(),
    ConnectionState.BACKING_OFF: Script(identify=False, close_after_s=0.5),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_stop_ends_the_connection_at_once_in_every_phase(phase: ConnectionState) -> None:
    slow_backoff = BackoffPolicy(base_s=100.0, cap_s=100.0)

    async def hung_dial(gen: Generation[None]) -> None:
        await asyncio.Event().wait()  # a dial that never answers (the ready deadline bounds it)

    async def main() -> None:
        clock = LoopClock()
        platform = FakePlatform(clock, PHASES[phase])
        connector = hung_dial if phase is ConnectionState.CONNECTING else None
        supervisor: Supervisor[Any] = Supervisor(
            NAME,
            connector or im_connector(platform, []),
            clock=clock,
            rng=FixedFraction(),
            settings=SupervisorSettings(backoff=slow_backoff),
        )
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(3.0)
        assert supervisor.snapshot().state is phase
        if phase is ConnectionState.BACKING_OFF:
            assert supervisor.snapshot().next_attempt_in_s == 47.5
        supervisor.stop()
        await task
        assert clock.now() == 3.0
        assert supervisor.snapshot().state is ConnectionState.STOPPED
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run_virtual(main())


def test_a_supervisor_stopped_before_it_runs_never_dials() -> None:
    async def main() -> None:
        run = make()
        run.supervisor.stop()
        await run.supervisor.run()
        assert run.platform.timeline == []
        assert run.supervisor.snapshot().state is ConnectionState.STOPPED

    run_virtual(main())


def test_a_supervisor_cancelled_by_its_owner_ends_stopped_and_leaves_nothing_behind() -> None:
    async def main() -> None:
        run = make()
        task = asyncio.create_task(run.supervisor.run())
        await run.platform.until("ready 1")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert run.supervisor.snapshot().state is ConnectionState.STOPPED
        assert run.gens[0].over
        assert asyncio.all_tasks() == {asyncio.current_task()}
        run.platform.handlers[0]("after shutdown")
        assert run.platform.delivered == []
        assert run.supervisor.snapshot().stale_callbacks_ignored == 1

    run_virtual(main())


CYCLES = 10_000


def live_timers() -> int:
    """Timers armed on the running loop and not cancelled. ``_scheduled`` is a private
    attribute of asyncio's BaseEventLoop (the heap of TimerHandles), read only here; cancelled
    handles linger in it until the loop pops them, so they are not counted."""
    loop = asyncio.get_running_loop()
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sum(1 for handle in scheduled if not handle.cancelled())


def test_ten_thousand_connect_close_cycles_leak_no_task_and_no_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="turngate.channels")  # 10,000 expected warnings
    seen: dict[int, tuple[int, int]] = {}
    done = asyncio.Event()

    async def connect_then_close(gen: Generation[None]) -> None:
        gen.identifying()
        gen.start_heartbeat(HEARTBEAT_S, no_beat)
        gen.spawn(asyncio.Event().wait())  # a reader that would wait for ever
        gen.guard(lambda: None)
        gen.ready()
        await asyncio.sleep(0.25)  # a short life, with a timer armed
        if gen.number in (10, CYCLES):
            seen[gen.number] = (len(asyncio.all_tasks()), live_timers())
        if gen.number == CYCLES:
            done.set()

    async def no_beat() -> None:
        pass

    async def main() -> None:
        clock = LoopClock()
        before = (len(asyncio.all_tasks()), live_timers())
        supervisor: Supervisor[None] = Supervisor(
            NAME,
            connect_then_close,
            clock=clock,
            rng=random.Random(12),
            settings=SupervisorSettings(backoff=BackoffPolicy(base_s=0.01, cap_s=0.05)),
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run())
            async with asyncio.timeout(WAIT_MAX_S):
                await done.wait()
            supervisor.stop()
        assert supervisor.snapshot().generation == CYCLES
        assert supervisor.snapshot().reconnects == CYCLES - 1
        assert seen[10] == seen[CYCLES]
        assert (len(asyncio.all_tasks()), live_timers()) == before == (1, 0)

    run_virtual(main())


def test_a_heartbeat_before_the_transport_is_open_is_a_connector_bug_not_a_crash() -> None:
    async def beats_too_early(gen: Generation[None]) -> None:
        calls.append(gen.number)
        gen.start_heartbeat(HEARTBEAT_S, no_beat)

    async def no_beat() -> None:
        pass

    calls: list[int] = []

    async def main() -> None:
        supervisor: Supervisor[None] = Supervisor(
            NAME, beats_too_early, clock=LoopClock(), rng=FixedFraction()
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run())
            await asyncio.sleep(2.0)
            supervisor.stop()
        assert calls == [1, 2, 3]  # retried at 0.5 and 1.5
        assert "identifying() first" in (supervisor.snapshot().last_error or "")

    run_virtual(main())


def test_cancelling_the_caller_as_a_generation_ends_stops_the_supervisor() -> None:
    # The generation ends (its connector returns) while a task of it still cleans up, and the
    # gateway stops the channel right then: the supervisor must stop too, not dial again
    # (on Python 3.11 the task group of the generation swallowed that cancellation).
    dials: list[float] = []

    async def cleanup_slowly() -> None:
        try:
            await asyncio.sleep(WAIT_MAX_S)
        finally:
            await asyncio.shield(asyncio.sleep(1.0))  # a close handshake, say

    async def connector(gen: Generation[None]) -> None:
        dials.append(asyncio.get_running_loop().time())
        gen.ready()
        gen.spawn(cleanup_slowly())
        await asyncio.sleep(5.0)  # then the connection closes

    async def main() -> None:
        clock = LoopClock(0.0)
        supervisor: Supervisor[None] = Supervisor(
            "im", connector, clock=clock, rng=FixedFraction(), settings=SupervisorSettings(POLICY)
        )
        task = asyncio.get_running_loop().create_task(supervisor.run())
        await asyncio.sleep(5.5)  # the generation ended at 5.0; its cleanup runs until 6.0
        task.cancel()
        async with asyncio.timeout(WAIT_MAX_S):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert asyncio.get_running_loop().time() == pytest.approx(6.0)

    run_virtual(main())
    assert dials == [0.0]


def test_a_handler_that_fails_its_generation_from_a_timer_ends_it_and_raises_in_nobody() -> None:
    # A frame handler called by a timer (not by the connector) must not raise into the loop:
    # fail() ends its generation like a raise from the connector would, once; late, nothing.
    loop_errors: list[dict[str, Any]] = []
    generations: list[Generation[None]] = []

    async def reads_forever(gen: Generation[None]) -> None:
        generations.append(gen)
        gen.ready()
        await asyncio.Event().wait()

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        supervisor: Supervisor[None] = Supervisor(
            NAME, reads_forever, clock=LoopClock(), rng=FixedFraction()
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run())
            await asyncio.sleep(1.0)
            first = generations[0]
            loop = asyncio.get_running_loop()
            loop.call_soon(first.fail, ChannelError("the peer asked us to reconnect"))
            loop.call_soon(first.fail, ChannelError("a second reason, too late"))
            await asyncio.sleep(1.0)
            first.fail(ChannelRefusedError("long after its end"))
            snap = supervisor.snapshot()
            supervisor.stop()
        assert [g.number for g in generations] == [1, 2]
        assert (snap.state, snap.reconnects, snap.fatal) == (ConnectionState.READY, 1, False)
        assert snap.last_error == "ChannelError: the peer asked us to reconnect"
        assert snap.stale_callbacks_ignored == 2

    run_virtual(main())
    assert loop_errors == []
