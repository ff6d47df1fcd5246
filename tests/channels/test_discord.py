"""The Discord channel against a fake Discord (gateway and REST) on real loopback sockets.

Each test starts :func:`~tests.channels.fake_discord.fake_discord` on an ephemeral port, runs a
:class:`~turngate.channels.discord.DiscordChannel` against it with a fake inbox, and waits on
what the fake and the inbox saw (the fake's :class:`Signal`, with a deadline), never on a
sleep. Heartbeats are 200 ms, backoff short, and jitter fixed at half its window, so the tests
that provoke zombies and reconnects stay fast and their timings known.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.channels.fake_discord import FakeDiscord, Intent, fake_discord
from tests.channels.fake_telegram import Signal
from tests.secrets import DISCORD_BOT_TOKEN, DISCORD_WRONG_TOKEN
from turngate.channels.base import InboundMessage
from turngate.channels.discord import DiscordChannel, DiscordSettings
from turngate.channels.outbox import OutboxWorker
from turngate.config_channels import ChannelConfig
from turngate.core.connection import BackoffPolicy, ConnectionState
from turngate.core.turn import Outcome, TurnState
from turngate.runtime.clock import LoopClock
from turngate.store.base import DeliveryOrder, DeliveryState, TurnRecord
from turngate.store.sqlite import SqliteStore

CHANNEL = "dc"
HEARTBEAT_MS = 200
INTERVAL_S = HEARTBEAT_MS / 1000
WAIT_S = 10.0
SETTINGS = DiscordSettings(
    backoff=BackoffPolicy(base_s=0.02, cap_s=0.2, healthy_after_s=30.0), ready_timeout_s=5.0
)
DM = "2000000000000000001"
"""A DM channel's id."""
ADA = "3000000000000000001"
SERVER, GENERAL = "4000000000000000001", "4000000000000000002"


class FixedFraction(random.Random):
    """Draws every ``uniform(a, b)`` half way: the first heartbeat at half an interval, each
    backoff at half its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * 0.5


@dataclass(frozen=True)
class Admitted:
    accepted: bool


@dataclass
class FakeInbox:
    """Keeps the first of each message id; ``hold`` makes the accept of a message wait for
    its event (a slow store)."""

    signal: Signal
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    turns: dict[str, InboundMessage] = field(default_factory=dict)

    async def accept(self, message: InboundMessage) -> Admitted:
        self.calls.append(message.message_id)
        self.signal.notify()
        held = self.hold.get(message.message_id)
        if held is not None:
            await held.wait()
        self.turns.setdefault(message.message_id, message)
        self.signal.notify()
        return Admitted(True)


@dataclass
class Rig:
    fake: FakeDiscord
    channel: DiscordChannel
    inbox: FakeInbox
    task: asyncio.Task[None]

    async def until(self, holds: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        await self.fake.signal.wait_until(holds, timeout_s)

    async def ready(self, connections: int = 1) -> None:
        """Until the ``connections``-th connection is ready (its READY or RESUMED sent)."""
        await self.until(
            lambda: (
                len(self.fake.connections) >= connections
                and self.channel.connection().state is ConnectionState.READY
                and self.channel.link is not None
                and self.channel.link.gen.number >= connections
            )
        )

    async def stored(self, *message_ids: str) -> None:
        await self.until(lambda: all(m in self.inbox.turns for m in message_ids))


def config(fake: FakeDiscord, **overrides: object) -> ChannelConfig:
    values: dict[str, object] = {
        "id": CHANNEL,
        "type": "discord",
        "token_env": "DISCORD_BOT_TOKEN",
        "url": fake.gateway_url,
        "api_url": fake.api_url,
        "allow": ("*",),
    }
    values.update(overrides)
    return ChannelConfig.model_validate(values)


@asynccontextmanager
async def rig(
    token: str = DISCORD_BOT_TOKEN, heartbeat_ms: int = HEARTBEAT_MS, **overrides: object
) -> AsyncIterator[Rig]:
    async with fake_discord(heartbeat_interval_ms=heartbeat_ms) as fake:
        channel = DiscordChannel(
            config(fake, **overrides), token, LoopClock(), FixedFraction(), settings=SETTINGS
        )
        inbox = FakeInbox(fake.signal)
        task = asyncio.get_running_loop().create_task(channel.run(inbox))
        try:
            yield Rig(fake, channel, inbox, task)
        finally:
            channel.stop()
            async with asyncio.timeout(WAIT_S):
                await task
            await channel.aclose()


@pytest.fixture
def loop_errors() -> list[object]:
    """Exceptions the event loop saw that nobody handled (a task's, a callback's)."""
    return []


def watch_loop(errors: list[object]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))


def assert_nothing_went_wrong(caplog: pytest.LogCaptureFixture, errors: list[object]) -> None:
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert bad == []
    assert "Traceback" not in caplog.text
    assert DISCORD_BOT_TOKEN not in caplog.text
    assert errors == []


@pytest.mark.asyncio
async def test_a_dm_and_a_mention_are_turns_and_talk_around_the_bot_is_not(
    caplog: pytest.LogCaptureFixture, loop_errors: list[object]
) -> None:
    watch_loop(loop_errors)
    async with rig() as r:
        await r.ready()
        dm = r.fake.message(DM, ADA, "hello there")
        mention = r.fake.message(GENERAL, ADA, "what's up?", guild_id=SERVER, mention_bot=True)
        chatter = r.fake.message(GENERAL, ADA, "not for the bot", guild_id=SERVER)
        reply = r.fake.message(GENERAL, ADA, "and you?", guild_id=SERVER, reply_to_bot=True)
        bot = r.fake.message(GENERAL, "5", "beep", guild_id=SERVER, author_bot=True)
        await r.stored(dm, mention)
        last_seq = r.fake.session.seq if r.fake.session else 0
        # Heartbeats report the sequence stored through: past everything, once taken.
        r.fake.request_heartbeat()
        await r.until(lambda: any(h.seq == last_seq for h in r.fake.heartbeats))
        snap = r.channel.connection()
    assert list(r.inbox.turns) == [dm, mention]
    assert r.inbox.turns[dm] == InboundMessage(dm, DM, ADA, "hello there", peer_name="Ada")
    turn = r.inbox.turns[mention]
    assert (turn.text, turn.group, turn.conversation, turn.space) == (
        "what's up?",
        True,
        GENERAL,
        SERVER,
    )
    assert {chatter, reply, bot}.isdisjoint(r.inbox.calls)  # reply: no message content intent
    assert (snap.identifies, snap.resumes, snap.last_sequence) == (1, 0, last_seq)
    assert snap.session_id == r.fake.sessions[0].session_id
    assert snap.heartbeat_rtt_s is not None
    [identify] = r.fake.connections[0].identifies
    assert identify["intents"] == Intent.GUILD_MESSAGES | Intent.DIRECT_MESSAGES
    assert_nothing_went_wrong(caplog, loop_errors)


@pytest.mark.asyncio
async def test_a_gateway_that_stops_acking_heartbeats_is_a_zombie_resumed_within_an_interval(
    caplog: pytest.LogCaptureFixture, loop_errors: list[object]
) -> None:
    watch_loop(loop_errors)
    caplog.set_level(logging.INFO)
    # A longer interval, so that "within one interval" stands apart from two under any load.
    async with rig(heartbeat_ms=1000) as r:
        await r.ready()
        before = r.fake.message(DM, ADA, "before the silence")
        await r.stored(before)
        zombie = r.fake.connections[0]
        zombie.ack_heartbeats = False
        silent_from = len(zombie.heartbeats)
        await r.until(lambda: not zombie.open)
        meanwhile = r.fake.message(DM, ADA, "sent while the bot was away")
        await r.ready(connections=2)
        after = r.fake.message(DM, ADA, "after the resume")
        await r.stored(meanwhile, after)
        snap = r.channel.connection()
    first_unanswered = zombie.heartbeats[silent_from].at
    assert zombie.closed_at is not None
    assert 1.0 <= zombie.closed_at - first_unanswered <= 1.5
    assert zombie.client_close_code == 4000  # closed so that the session can be resumed
    resumed = r.fake.connections[1]
    assert (resumed.endpoint, len(resumed.resumes), len(resumed.identifies)) == ("/resume", 1, 0)
    assert r.inbox.calls.count(meanwhile) == 1
    assert list(r.inbox.turns) == [before, meanwhile, after]
    assert (snap.zombies, snap.resumes, snap.identifies) == (1, 1, 1)
    assert "no heartbeat ack received" in (snap.last_error or "")
    assert_nothing_went_wrong(caplog, loop_errors)


@pytest.mark.asyncio
async def test_a_message_received_but_not_yet_stored_is_replayed_by_the_resume_and_stored_once(
    caplog: pytest.LogCaptureFixture, loop_errors: list[object]
) -> None:
    watch_loop(loop_errors)
    async with rig() as r:
        await r.ready()
        stored = r.fake.message(DM, ADA, "one")
        await r.stored(stored)
        slow = asyncio.Event()
        r.inbox.hold["pending"] = slow
        pending = r.fake.message(DM, ADA, "two")
        r.inbox.hold[pending] = slow
        await r.until(lambda: pending in r.inbox.calls)
        stored_seq = r.channel.connection().last_sequence
        r.fake.reconnect()  # op 7 while "two" is being stored
        await r.ready(connections=2)
        slow.set()
        await r.stored(pending)
    resume = r.fake.connections[1].resumes[0]
    assert resume["seq"] == stored_seq  # before "two": Discord replays it
    assert r.fake.connections[0].client_close_code == 4000
    assert list(r.inbox.turns) == [stored, pending]
    assert_nothing_went_wrong(caplog, loop_errors)


@pytest.mark.parametrize(
    ("resumable", "endpoint", "identifies"), [(True, "/resume", 1), (False, "/gateway", 2)]
)
@pytest.mark.asyncio
async def test_an_invalid_session_resumes_or_identifies_afresh_as_discord_says(
    resumable: bool, endpoint: str, identifies: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with rig() as r:
        await r.ready()
        r.fake.invalidate(resumable=resumable)
        await r.ready(connections=2)
        after = r.fake.message(DM, ADA, "still here?")
        await r.stored(after)
        snap = r.channel.connection()
    second = r.fake.connections[1]
    assert (second.endpoint, len(second.resumes), len(second.identifies)) == (
        endpoint,
        int(resumable),
        int(not resumable),
    )
    assert (snap.identifies, snap.resumes) == (identifies, int(resumable))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.asyncio
async def test_a_refused_token_stops_the_channel_with_a_clear_error_and_no_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig(token=DISCORD_WRONG_TOKEN) as r:
        async with asyncio.timeout(WAIT_S):
            await r.task  # the channel stops by itself
        snap = r.channel.connection()
    assert (snap.state, snap.fatal, len(r.fake.connections)) == (ConnectionState.STOPPED, True, 1)
    assert r.fake.connections[0].server_close_code == 4004
    assert "refused the bot token in $DISCORD_BOT_TOKEN (4004" in (snap.last_error or "")
    assert DISCORD_WRONG_TOKEN not in caplog.text + (snap.last_error or "")


@pytest.mark.asyncio
async def test_a_privileged_intent_not_enabled_stops_the_channel_saying_where_to_enable_it() -> (
    None
):
    async with fake_discord(heartbeat_interval_ms=HEARTBEAT_MS) as fake:
        fake.disallowed_intents = Intent.MESSAGE_CONTENT
        channel = DiscordChannel(
            config(fake, groups="all"),
            DISCORD_BOT_TOKEN,
            LoopClock(),
            FixedFraction(),
            settings=SETTINGS,
        )
        async with asyncio.timeout(WAIT_S):
            await channel.run(FakeInbox(fake.signal))
        await channel.aclose()
        snap = channel.connection()
    assert (snap.fatal, len(fake.connections)) == (True, 1)
    assert "4014 disallowed intents" in (snap.last_error or "")
    assert "message_content" in (snap.last_error or "")
    assert "Developer Portal" in (snap.last_error or "")


@pytest.mark.asyncio
async def test_the_gateway_asking_for_a_heartbeat_gets_one_at_once() -> None:
    async with rig() as r:
        await r.ready()
        conn = r.fake.connections[0]
        beats = len(conn.heartbeats)
        r.fake.request_heartbeat()
        await r.until(lambda: len(conn.heartbeats) > beats, timeout_s=INTERVAL_S / 2)


@pytest.mark.asyncio
async def test_a_hello_held_back_past_the_deadline_never_leaves_a_connection_without_identify(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = DiscordSettings(backoff=SETTINGS.backoff, ready_timeout_s=0.3)
    async with fake_discord(heartbeat_interval_ms=HEARTBEAT_MS) as fake:
        gate = asyncio.Event()
        fake.hello_gate = gate
        channel = DiscordChannel(
            config(fake), DISCORD_BOT_TOKEN, LoopClock(), FixedFraction(), settings=settings
        )
        task = asyncio.get_running_loop().create_task(channel.run(FakeInbox(fake.signal)))
        try:
            await fake.signal.wait_until(lambda: len(fake.connections) >= 3, WAIT_S)
            gate.set()
            await fake.signal.wait_until(
                lambda: channel.connection().state is ConnectionState.READY, WAIT_S
            )
        finally:
            channel.stop()
            async with asyncio.timeout(WAIT_S):
                await task
            await channel.aclose()
    for conn in fake.connections:
        handshakes = len(conn.identifies) + len(conn.resumes)
        assert handshakes == (1 if conn.hello_at is not None else 0), conn.index
        if conn.hello_at is None:
            assert conn.frames == []  # nothing sent into a connection before its HELLO
    assert sum(len(conn.identifies) for conn in fake.connections) >= 1


async def owe(store: SqliteStore, turn_id: str, text: str, conversation: str) -> None:
    """End a turn replied with ``text``, owing it to ``conversation`` of the channel."""
    key = f"agent:main:{CHANNEL}:direct:{conversation}"
    await store.accept_turn(
        TurnRecord(turn_id, key, "main", f"m-{turn_id}", "followup", TurnState.ACCEPTED, 0.0, 60)
    )
    epoch = await store.session_epoch(key) + 1
    await store.start_run(key, turn_id, epoch, [turn_id], at=0.0)
    outcome = Outcome(turn_id, TurnState.REPLIED, turn_id, reply=text)
    order = DeliveryOrder(f"reply:{turn_id}", key, turn_id, CHANNEL, conversation, text)
    await store.end_run(key, turn_id, epoch, [outcome], [], at=0.0, orders=[order])


@pytest.mark.asyncio
async def test_a_rate_limited_route_is_waited_out_and_a_long_reply_arrives_in_three_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    try:
        async with rig() as r:
            finish = store.outbox.finish

            async def finish_and_tell(*args: Any, **kwargs: Any) -> None:
                await finish(*args, **kwargs)
                r.fake.signal.notify()

            monkeypatch.setattr(store.outbox, "finish", finish_and_tell)
            await r.ready()
            r.fake.rate_limit_next(DM, 0.3)
            text = ("Lorem ipsum dolor sit amet. " * 180)[:5000]
            await owe(store, "t1", text, DM)
            worker = OutboxWorker(CHANNEL, store.outbox, r.channel.sender, LoopClock())
            runner = asyncio.get_running_loop().create_task(worker.run())
            try:
                await r.until(lambda: worker.counts.sent == 1)
            finally:
                runner.cancel()
            [delivery] = await store.outbox.of_session(f"agent:main:{CHANNEL}:direct:{DM}", 1)
    finally:
        await store.close()
    assert delivery.state is DeliveryState.SENT
    parts = [sent.content for sent in r.fake.sent]
    assert len(parts) == 3
    assert "".join(parts) == text
    assert all(len(part) <= 2000 for part in parts)
    assert {sent.channel_id for sent in r.fake.sent} == {DM}
    assert len({sent.nonce for sent in r.fake.sent}) == 3
    [limit] = r.fake.rate_limits
    assert r.fake.early_requests == []  # nothing went before the limit's end
    assert r.fake.sent[0].at >= limit.ends_at
