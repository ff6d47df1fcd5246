"""The Discord channel against the simulator's in-memory Discord, on virtual time.

The real :class:`~turngate.channels.discord.DiscordChannel` dials
:class:`~turngate.sim.discord.DiscordPlatform` (no network, no real time), with a fake inbox.
Each test provokes one race of the field reports many times over, by closing connections or
handing frames to a link at chosen points of its handshake, and checks what every connection
saw: no task or timer outlives the channel, no late callback acts (seed 004), and every
connection that got a HELLO identifies (or resumes) exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from turngate.channels.base import InboundMessage
from turngate.channels.discord import DiscordChannel, DiscordSettings
from turngate.channels.discord.gateway import GatewayLink, Op
from turngate.config_channels import ChannelConfig
from turngate.core.connection import BackoffPolicy
from turngate.runtime.clock import LoopClock
from turngate.sim import discord
from turngate.sim.channel import ChannelParams
from turngate.sim.discord import DiscordPlatform, ServerConnection
from turngate.sim.loop import run_virtual
from turngate.sim.world import Faults

CONFIG = ChannelConfig(
    id="discord",
    type="discord",
    token_env="SIM_DISCORD",
    url=discord.GATEWAY_URL,
    api_url=discord.API_URL,
    agent="main",
    allow=("*",),
)
QUIET = ChannelParams(
    peers=1,
    messages_per_peer=0,
    think_max_s=0.0,
    p_duplicate=0.0,
    p_drop=0.0,
    p_zombie=0.0,
    p_send_fail=0.0,
    p_retry_after=0.0,
    p_refuse=0.0,
)
TINY_BACKOFF = BackoffPolicy(base_s=0.001, cap_s=0.001, healthy_after_s=0.0)
RECONNECT = json.dumps({"op": Op.RECONNECT, "d": None})
BEAT_NOW = json.dumps({"op": Op.HEARTBEAT, "d": None})
WAIT_MAX_S = 600.0
"""Virtual seconds a test waits for a condition before it fails."""


@dataclass(frozen=True)
class Admitted:
    accepted: bool


@dataclass
class FakeInbox:
    """Keeps each message once, by id."""

    turns: dict[str, InboundMessage] = field(default_factory=dict)

    async def accept(self, message: InboundMessage) -> Admitted:
        self.turns.setdefault(message.message_id, message)
        return Admitted(True)


@dataclass
class Rig:
    """A platform, the channel that dials it, and what the loop reported."""

    platform: DiscordPlatform
    channel: DiscordChannel
    inbox: FakeInbox
    loop_errors: list[dict[str, Any]]
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, what: str, connection: ServerConnection) -> None:
        del what, connection
        self.changed.set()

    async def until(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout_s: float = WAIT_MAX_S,
        poll_s: float | None = None,
    ) -> None:
        """Return once ``condition()`` holds: checked at each step the platform sees, and every
        ``poll_s`` (virtual) for a condition of the bot's alone."""
        try:
            async with asyncio.timeout(timeout_s):
                while not condition():
                    self.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll_s):
                            await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout_s:g}s (virtual): {what}") from None

    def link_ended(self, link: GatewayLink) -> Callable[[], bool]:
        """Whether the channel is done with ``link``."""
        return lambda: self.channel.link is not link

    def parked(self) -> bool:
        """Ready on the newest connection, and the bot waits for its next frame."""
        waiter = self.platform.connections[-1].waiter if self.platform.connections else None
        return self.ready_on_newest() and waiter is not None and not waiter.done()

    def ready_on_newest(self) -> bool:
        """The channel is ready on the newest connection."""
        link = self.channel.link
        newest = self.platform.connections[-1] if self.platform.connections else None
        return (
            link is not None
            and link.ready
            and newest is not None
            and newest.session is not None
            and not newest.closed
        )


def rig(settings: DiscordSettings) -> Rig:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    faults = Faults()
    faults.on = False
    platform = DiscordPlatform(random.Random(0), QUIET, faults)
    channel = DiscordChannel(
        CONFIG,
        discord.TOKEN,
        LoopClock(),
        random.Random(1),
        settings=settings,
        dial=platform.dial,
        rest_transport=platform.rest_transport(),
    )
    made = Rig(platform, channel, FakeInbox(), errors)
    platform.observers.append(made.observe)
    return made


def pending_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The loop's armed timers (asyncio keeps cancelled ones until it sweeps them)."""
    scheduled: list[asyncio.TimerHandle] = vars(loop)["_scheduled"]
    return [handle for handle in scheduled if not handle.cancelled()]


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The ERROR lines logged so far; the channel's WARNINGs are not even formatted (ten
    thousand reconnects each log one)."""
    caplog.set_level(logging.ERROR, logger="turngate.channels")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


CUTS: tuple[tuple[str, Callable[[DiscordPlatform, ServerConnection], None]], ...] = (
    ("dial", lambda platform, c: platform.drop(c)),
    ("hello", lambda platform, c: platform.drop(c)),
    ("identify", lambda platform, c: platform.drop(c)),
    ("ready", lambda platform, c: platform.drop(c)),
    ("resume", lambda platform, c: platform.drop(c)),
    ("resumed", lambda platform, c: platform.drop(c, 4009)),
    ("ready", lambda platform, c: platform.send_frame(c, {"op": Op.RECONNECT, "d": None})),
    ("hello", lambda platform, c: platform.drop(c, 4000)),
    ("ready", lambda platform, c: platform.send_frame(c, {"op": Op.INVALID_SESSION, "d": False})),
)
"""Where each connection is cut (its number picks one): the step the platform just took,
and what it does then. A connection whose step never comes (a fresh session has no resume)
is dropped at its first heartbeat once ready."""


def test_ten_thousand_connect_close_cycles_leave_no_task_or_timer(
    errors_logged: Callable[[], list[str]],
) -> None:
    cycles = 10_000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        r = rig(DiscordSettings(backoff=TINY_BACKOFF, ready_timeout_s=1.0))
        platform = r.platform

        def cut(what: str, connection: ServerConnection) -> None:
            step, action = CUTS[connection.number % len(CUTS)]
            if connection.number > cycles or connection.closed:
                return
            if what == step:
                action(platform, connection)
            elif what == "heartbeat" and connection.session is not None:
                platform.drop(connection)  # its step never came: after READY is stored

        platform.observers.append(cut)
        before = asyncio.all_tasks()
        task = loop.create_task(r.channel.run(r.inbox))
        await r.until(
            lambda: len(platform.connections) > cycles, f"{cycles} connections", cycles * 10.0
        )
        r.channel.stop()
        await task
        await r.channel.aclose()
        leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert leaked == set()
        assert pending_timers(loop) == []
        assert r.loop_errors == []
        handshakes = [len(c.handshakes) for c in platform.connections]
        assert max(handshakes) == 1
        assert sum(c.handshakes == ["resume"] for c in platform.connections) > 100
        assert platform.record.stale_actions == []
        assert platform.record.broken == []
        assert r.channel.connection().reconnects >= cycles

    run_virtual(main())
    assert errors_logged() == []


def race(platform: DiscordPlatform, link: GatewayLink, order: int) -> Callable[[], None]:
    """One race between a reconnect (or a "beat now") handed to ``link`` and the end of its
    connection, within one loop iteration: the callback that starts it."""
    loop = asyncio.get_running_loop()
    connection = platform.connections[-1]

    def start() -> None:
        if order == 0:  # op 7 on the wire, then the connection drops
            platform.send_frame(connection, {"op": Op.RECONNECT, "d": None})
            platform.drop(connection)
            loop.call_later(0, link.handle_frame, RECONNECT)
        elif order == 1:  # the drop, then op 7 from a timer
            platform.drop(connection)
            loop.call_later(0, link.handle_frame, RECONNECT)
        elif order == 2:  # the drop, then a "beat now" from a timer
            platform.drop(connection)
            loop.call_later(0, link.handle_frame, BEAT_NOW)
        elif order == 3:  # a "beat now" handed to the link, then the drop
            link.handle_frame(BEAT_NOW)
            platform.drop(connection)
            loop.call_later(0, link.handle_frame, RECONNECT)
        elif order == 4:  # op 7 handed to the link, then the drop
            link.handle_frame(RECONNECT)
            platform.drop(connection)
        elif order == 5:  # the drop, then op 7 handed to the link before the bot noticed
            platform.drop(connection)
            link.handle_frame(RECONNECT)
        elif order == 6:  # op 7 on the wire, and again from a timer while the bot closes
            platform.send_frame(connection, {"op": Op.RECONNECT, "d": None})
            loop.call_later(0, link.handle_frame, RECONNECT)
        else:  # op 7 from a timer, and the drop queued before it
            loop.call_soon(platform.drop, connection)
            loop.call_later(0, link.handle_frame, RECONNECT)

    return start


ORDERS = 8


async def race_rounds(r: Rig, rounds: int, orders: Sequence[int]) -> None:
    """``rounds`` races, each on a new connection, each order in turn; the old generation's
    callbacks come again once the next connection is up."""
    loop = asyncio.get_running_loop()
    for number in range(rounds):
        await r.until(r.parked, f"round {number}: ready, waiting for a frame", poll_s=0.01)
        link = r.channel.link
        assert link is not None
        loop.call_soon(race(r.platform, link, orders[number % len(orders)]))
        await r.until(r.link_ended(link), "the link to end")
        await r.until(r.ready_on_newest, f"round {number}: ready again")
        link.handle_frame(RECONNECT)
        link.handle_frame(BEAT_NOW)
        loop.call_later(0, link.handle_frame, RECONNECT)


def test_a_reconnect_and_a_close_in_the_same_iteration_leave_no_stale_action(
    errors_logged: Callable[[], list[str]],
) -> None:
    rounds = 1_000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        r = rig(DiscordSettings(backoff=TINY_BACKOFF, ready_timeout_s=5.0))
        task = loop.create_task(r.channel.run(r.inbox))
        await race_rounds(r, rounds, orders=range(ORDERS))
        await r.until(r.ready_on_newest, "ready at the end")
        r.channel.stop()
        await task
        await r.channel.aclose()
        assert r.platform.record.stale_actions == []
        assert r.platform.record.broken == []
        assert r.loop_errors == []
        assert r.channel.connection().stale_callbacks_ignored >= 3 * rounds
        assert max(len(c.handshakes) for c in r.platform.connections) == 1

    run_virtual(main())
    assert errors_logged() == []


@pytest.mark.parametrize("seed", range(4))
def test_every_connection_that_got_a_hello_identifies_exactly_once(
    seed: int, errors_logged: Callable[[], list[str]]
) -> None:
    rounds = 250

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready_timeout_s = 10.0
        r = rig(DiscordSettings(backoff=TINY_BACKOFF, ready_timeout_s=ready_timeout_s))
        platform = r.platform
        rng = random.Random(seed)
        # Each connection's HELLO is held: shorter or longer than the ready deadline, or
        # exactly as long (the same instant); meanwhile the connection may drop, or get a
        # reconnect before its HELLO.
        holds = [0.0, 0.5 * ready_timeout_s, ready_timeout_s, 1.5 * ready_timeout_s]
        platform.hello_delay = lambda connection: rng.choice(holds)

        def meddle(what: str, connection: ServerConnection) -> None:
            if what != "dial" or connection.number > rounds:
                return
            delay_s = rng.choice([0.0, 0.25, 0.5, 1.0]) * ready_timeout_s
            if rng.random() < 0.5:
                loop.call_later(delay_s, platform.drop, connection)
            else:
                frame = {"op": Op.RECONNECT, "d": None}
                loop.call_later(delay_s, platform.send_frame, connection, frame)

        platform.observers.append(meddle)
        task = loop.create_task(r.channel.run(r.inbox))
        await r.until(
            lambda: len(platform.connections) > rounds, f"{rounds} connections", rounds * 30.0
        )
        await r.until(r.ready_on_newest, "ready at the end")
        r.channel.stop()
        await task
        await r.channel.aclose()
        for c in platform.connections:
            assert len(c.handshakes) <= 1, (c.number, c.handshakes)
            if c.hello_received_at is None:
                assert c.handshakes == [], (c.number, "a handshake before HELLO")
            elif c.closed_at is None or c.closed_at > c.hello_received_at:
                # It got its HELLO and was still open a moment later: it must have answered.
                assert len(c.handshakes) == 1, (c.number, c.handshakes, c.close_code)
        assert sum(c.hello_received_at is not None for c in platform.connections) > rounds // 4
        assert platform.record.broken == []
        assert platform.record.stale_actions == []
        assert r.loop_errors == []

    run_virtual(main())
    assert errors_logged() == []


def test_a_stopped_channel_ends_its_session_with_close_code_1000() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        r = rig(DiscordSettings(backoff=TINY_BACKOFF, ready_timeout_s=5.0))
        task = loop.create_task(r.channel.run(r.inbox))
        await r.until(r.parked, "ready, waiting for a frame", poll_s=0.01)
        r.channel.stop()
        await task
        await r.channel.aclose()
        last = r.platform.connections[-1]
        assert (last.closed_by, last.close_code) == ("bot", 1000)

    run_virtual(main())


def test_a_cancelled_channel_ends_its_session_with_close_code_1000() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        r = rig(DiscordSettings(backoff=TINY_BACKOFF, ready_timeout_s=5.0))
        task = loop.create_task(r.channel.run(r.inbox))
        await r.until(r.parked, "ready, waiting for a frame", poll_s=0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await r.channel.aclose()
        last = r.platform.connections[-1]
        assert (last.closed_by, last.close_code) == ("bot", 1000)

    run_virtual(main())
