"""The ``websocket`` channel against a fake IM server on real loopback sockets.

Each test starts :class:`~tests.channels.fake_im.FakeIMServer` on an ephemeral port, runs a
:class:`~turngate.channels.websocket_im.WebSocketChannel` against it with a fake inbox, and
waits on what the server and the inbox saw (a :class:`~tests.channels.fake_im.Signal`, with a
deadline), never on a sleep. Backoff is short and its jitter fixed at half its window, so a
test that provokes reconnects stays fast and its delays are known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.channels.fake_im import WAIT_MAX_S, FakeIMServer, Script, Signal
from tests.secrets import IM_CHANNEL_TOKEN, IM_WRONG_TOKEN
from turngate.channels.base import InboundMessage
from turngate.channels.outbox import OutboxWorker
from turngate.channels.websocket_im import (
    MESSAGE_CHARS_MAX,
    FrameHandler,
    WebSocketChannel,
    WebSocketSettings,
)
from turngate.core.connection import BackoffPolicy, ConnectionState
from turngate.core.turn import Outcome, TurnState
from turngate.errors import (
    ChannelError,
    DeliveryRefusedError,
    StorageUnavailableError,
)
from turngate.runtime.clock import LoopClock
from turngate.store.base import DeliveryOrder, DeliveryState, TurnRecord
from turngate.store.sqlite import SqliteStore

TOKEN = IM_CHANNEL_TOKEN
"""The bot's credential: it must never reach a log line, an error text or a snapshot."""
CHANNEL = "im"
SETTINGS = WebSocketSettings(
    backoff=BackoffPolicy(base_s=0.02, cap_s=0.2, healthy_after_s=30.0),
    ready_timeout_s=5.0,
    confirm_timeout_s=5.0,
)


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
    """Dedupes by message id into turns; raises once for the ids in ``fail_once``; counts an
    accept while the channel is not ready as a stale action (an old generation's)."""

    channel: WebSocketChannel
    signal: Signal
    fail_once: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    turns: dict[str, InboundMessage] = field(default_factory=dict)
    stale_actions: int = 0
    first_handler: FrameHandler | None = None
    """The frame handler of the connection that made the first accept."""

    async def accept(self, message: InboundMessage) -> Admitted:
        self.calls.append(message.message_id)
        if self.first_handler is None:
            self.first_handler = self.channel.handle_frame
        if self.channel.connection().state is not ConnectionState.READY:
            self.stale_actions += 1
        self.signal.bump()
        if message.message_id in self.fail_once:
            self.fail_once.discard(message.message_id)
            raise StorageUnavailableError("the disk is full")
        self.turns.setdefault(message.message_id, message)
        return Admitted(True)


@dataclass
class Rig:
    server: FakeIMServer
    channel: WebSocketChannel
    inbox: FakeInbox
    signal: Signal
    task: asyncio.Task[None]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await self.signal.until(condition, what)

    async def stored_and_acked(self, count: int) -> None:
        """Wait until ``count`` distinct messages are turns and the server saw them acked."""
        await self.until(
            lambda: len(self.inbox.turns) >= count and self.server.acked_seq >= count,
            f"{count} messages stored and acked",
        )


@asynccontextmanager
async def rig(
    *scripts: Script, token: str = TOKEN, http_status: int | None = None
) -> AsyncIterator[Rig]:
    """A fake server with ``scripts``, and a channel with ``token`` running against it."""
    signal = Signal()
    async with FakeIMServer(TOKEN, *scripts, signal=signal, http_status=http_status) as server:
        channel = WebSocketChannel(
            CHANNEL, server.url, token, settings=SETTINGS, rng=FixedFraction()
        )
        inbox = FakeInbox(channel, signal)
        task = asyncio.get_running_loop().create_task(channel.run(inbox))
        try:
            yield Rig(server, channel, inbox, signal, task)
        finally:
            channel.stop()
            async with asyncio.timeout(WAIT_MAX_S):
                await task


@pytest.fixture
def loop_errors() -> list[dict[str, object]]:
    """Exceptions the event loop saw that nobody handled (a task's, a callback's)."""
    return []


def watch_loop(errors: list[dict[str, object]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))


def assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert bad == []
    assert "Traceback" not in caplog.text
    assert TOKEN not in caplog.text


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.asyncio
async def test_a_server_that_stops_acking_heartbeats_is_a_zombie_and_the_channel_resumes(
    caplog: pytest.LogCaptureFixture, loop_errors: list[dict[str, object]]
) -> None:
    watch_loop(loop_errors)
    caplog.set_level(logging.INFO)
    goes_silent = Script(heartbeat_ms=200, heartbeat_acks_max=1)
    async with rig(goes_silent, Script()) as r:
        first = r.server.inject("alice", "before the silence")
        await r.stored_and_acked(1)
        await r.until(lambda: r.server.ready_on(2), "a second connection, ready")
        second = r.server.inject("alice", "after the reconnect")
        await r.stored_and_acked(2)
        snap = r.channel.connection()
    assert snap.zombies >= 1
    assert snap.state is ConnectionState.READY
    assert "no frame received" in (snap.last_error or "")
    # The second connection resumed the first one's session after what was acked.
    assert r.server.identifies[:2] == [None, {"session": "s1", "seq": 1}]
    assert r.server.sessions == 1
    # What /health and `turngate channels status` show of it.
    assert (snap.session_id, snap.last_sequence) == ("s1", 2)
    assert (snap.identifies, snap.resumes) == (1, 1)
    assert snap.heartbeat_rtt_s is not None
    assert 0 <= snap.heartbeat_rtt_s < 0.2
    # The second connection is live: it has received frames (its hello, heartbeat acks).
    assert snap.last_frame_ago_s is not None
    assert 0 <= snap.last_frame_ago_s < 5
    assert list(r.inbox.turns) == [first, second]
    assert any("is a zombie" in w for w in warnings_of(caplog))
    assert_no_error_logged(caplog)
    assert loop_errors == []


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_heartbeat_reconnects_and_resumes(
    caplog: pytest.LogCaptureFixture, loop_errors: list[dict[str, object]]
) -> None:
    watch_loop(loop_errors)
    async with rig(Script(heartbeat_ms=200, abort_at_heartbeat=2), Script()) as r:
        r.server.inject("bob", "one")
        await r.stored_and_acked(1)
        await r.until(lambda: r.server.ready_on(2), "a second connection, ready")
        r.server.inject("bob", "two")
        await r.stored_and_acked(2)
        snap = r.channel.connection()
    assert r.server.connections[0].heartbeats == 2
    assert (snap.reconnects, snap.zombies) == (1, 0)
    assert r.server.identifies[1] == {"session": "s1", "seq": 1}
    assert [m.text for m in r.inbox.turns.values()] == ["one", "two"]
    assert any("generation 1 lost" in w for w in warnings_of(caplog))
    assert_no_error_logged(caplog)
    assert loop_errors == []


@pytest.mark.asyncio
async def test_a_server_that_closes_before_identify_completes_is_retried_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closes = Script(close_on_identify=True)
    async with rig(closes, closes, closes, Script()) as r:
        r.server.inject("carol", "hello")
        await r.stored_and_acked(1)
        snap = r.channel.connection()
    assert len(r.server.connections) == 4
    assert (snap.reconnects, snap.generation, snap.state) == (3, 4, ConnectionState.READY)
    # Full jitter drawn half way: half of 0.02, 0.04 and 0.08 seconds.
    delays = [w.rsplit(" ", 1)[-1] for w in warnings_of(caplog) if "reconnecting in" in w]
    assert delays == ["0.010s", "0.020s", "0.040s"]
    assert_no_error_logged(caplog)


@pytest.mark.asyncio
async def test_a_message_delivered_twice_is_one_turn_and_both_deliveries_are_acked() -> None:
    async with rig() as r:
        message = r.server.inject("dave", "only once please")
        r.server.duplicate(message)
        await r.until(lambda: r.server.acked_seq == 2, "both deliveries acked")
    assert r.inbox.calls == [message, message]
    assert list(r.inbox.turns) == [message]


@pytest.mark.asyncio
async def test_a_thousand_messages_over_fifty_peers_are_each_stored_once_in_order_per_peer(
    caplog: pytest.LogCaptureFixture, loop_errors: list[dict[str, object]]
) -> None:
    watch_loop(loop_errors)
    # The server drops the connection twice mid-stream: what was not acked comes again.
    cut = Script(close_after_messages=300)
    async with rig(cut, cut, Script()) as r:
        sent: dict[str, list[str]] = {f"p{p}": [] for p in range(50)}
        for n in range(1000):
            peer = f"p{n % 50}"
            sent[peer].append(r.server.inject(peer, f"{peer} #{n}"))
        await r.stored_and_acked(1000)
        # Seed 004: the first connection's frame handler, kept past its connection, fires late.
        old_handler = r.inbox.first_handler
        assert old_handler is not None
        late = {"op": "message", "seq": 1001, "id": "late", "chat": "p0", "from": "p0"}
        assert old_handler(json.dumps({**late, "text": "from a closed connection"})) is None
        snap = r.channel.connection()
    assert len(r.inbox.turns) == 1000
    assert "late" not in r.inbox.calls
    stored: dict[str, list[str]] = {peer: [] for peer in sent}
    for message in r.inbox.turns.values():
        stored[message.peer].append(message.message_id)
    assert stored == sent
    assert r.server.acked_seq == 1000
    assert snap.reconnects == 2
    assert r.inbox.stale_actions == 0
    assert snap.stale_callbacks_ignored >= 1
    assert_no_error_logged(caplog)
    assert loop_errors == []


@pytest.mark.asyncio
async def test_a_group_message_is_a_turn_only_if_it_mentions_the_bot_and_is_acked_anyway() -> None:
    async with rig() as r:
        r.server.inject("jo", "chatter among people", chat="lobby", group=True)
        asked = r.server.inject(
            "jo", "@bot what time is it?", chat="lobby", group=True, mentioned=True
        )
        direct = r.server.inject("jo", "and in private")
        await r.until(lambda: r.server.acked_seq == 3, "all three acked")
    assert list(r.inbox.turns) == [asked, direct]
    assert (r.inbox.turns[asked].conversation, r.inbox.turns[asked].group) == ("lobby", True)


@pytest.mark.asyncio
async def test_a_message_the_inbox_failed_to_store_is_not_acked_and_comes_again_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        ids = [r.server.inject("erin", text) for text in ("one", "two", "three")]
        r.inbox.fail_once.add(ids[1])
        await r.stored_and_acked(3)
    assert r.inbox.calls == [ids[0], ids[1], ids[1], ids[2]]
    assert list(r.inbox.turns) == ids
    assert r.server.acks_of(1) == [1]
    assert r.server.acks_of(2) == [2, 3]
    assert r.server.identifies[1] == {"session": "s1", "seq": 1}
    assert any("was not stored (the disk is full)" in w for w in warnings_of(caplog))
    assert_no_error_logged(caplog)


@pytest.mark.asyncio
async def test_a_bad_token_stops_the_channel_with_a_clear_error_that_never_shows_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = IM_WRONG_TOKEN
    async with rig(token=wrong) as r:
        async with asyncio.timeout(WAIT_MAX_S):
            await asyncio.shield(r.task)
        snap = r.channel.connection()
    assert (snap.state, snap.fatal, len(r.server.connections)) == (
        ConnectionState.STOPPED,
        True,
        1,
    )
    assert snap.last_error is not None
    assert "the IM server refused the bot: unknown token" in snap.last_error
    assert wrong not in repr(snap)
    assert wrong not in caplog.text
    assert any("refused for good" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_server_that_refuses_the_handshake_with_401_stops_the_channel() -> None:
    async with rig(http_status=401) as r:
        async with asyncio.timeout(WAIT_MAX_S):
            await asyncio.shield(r.task)
        snap = r.channel.connection()
    assert (snap.state, snap.fatal, r.server.refused_handshakes) == (
        ConnectionState.STOPPED,
        True,
        1,
    )
    assert snap.last_error == (
        "ChannelRefusedError: channel im: the IM server refused the connection (HTTP 401)"
    )


@pytest.mark.asyncio
async def test_a_reply_the_server_confirms_is_sent_once_even_when_sent_again() -> None:
    async with rig() as r:
        r.server.inject("frank", "hi")
        await r.stored_and_acked(1)
        await r.channel.sender.send("frank", "hello, frank", "reply:t1#0")
        # After a crash the outbox sends a part again: the server shows it once.
        await r.channel.sender.send("frank", "hello, frank", "reply:t1#0")
        await r.channel.typing("frank")
        await r.until(lambda: r.server.typing == ["frank"], "the typing frame")
    assert len(r.server.sends) == 2
    assert r.server.shown == {"reply:t1#0": ("frank", "hello, frank")}
    assert r.channel.sender.limit == MESSAGE_CHARS_MAX


@pytest.mark.asyncio
async def test_a_send_the_server_fails_raises_with_its_retry_after_or_as_refused() -> None:
    async with rig() as r:
        r.server.inject("gina", "hi")
        await r.stored_and_acked(1)
        r.server.send_results.append({"retry_after_ms": 1500, "reason": "slow down"})
        r.server.send_results.append({"permanent": True, "reason": "no such chat"})
        with pytest.raises(ChannelError) as failed:
            await r.channel.sender.send("gina", "hello", "reply:t1#0")
        assert not isinstance(failed.value, DeliveryRefusedError)
        assert failed.value.retry_after_s == 1.5
        assert "slow down" in failed.value.message
        with pytest.raises(DeliveryRefusedError, match="no such chat"):
            await r.channel.sender.send("nobody", "hello", "reply:t2#0")
    assert r.server.shown == {}


@pytest.mark.asyncio
async def test_a_send_while_not_connected_raises_a_channel_error_to_be_tried_again() -> None:
    channel = WebSocketChannel(CHANNEL, "ws://127.0.0.1:9/bot", TOKEN, settings=SETTINGS)
    with pytest.raises(ChannelError, match="not connected"):
        await channel.sender.send("42", "hello", "reply:t1#0")
    await channel.typing("42")  # nothing to do, and no error
    assert channel.connection().state is ConnectionState.CONNECTING


@pytest.mark.asyncio
async def test_frames_that_are_not_json_or_have_an_unknown_op_are_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        r.server.inject("hana", "first")
        await r.stored_and_acked(1)
        handler = r.channel.handle_frame
        assert handler is not None
        handler("{not json")
        handler(json.dumps({"op": "party", "token": TOKEN}))
        handler(json.dumps({"op": "message", "seq": 9, "id": "x"}))  # no chat, from, text
        handler(json.dumps([1, 2]))
        r.server.inject("hana", "second")
        await r.stored_and_acked(2)
        snap = r.channel.connection()
    assert (snap.generation, snap.reconnects) == (1, 0)
    assert [m.text for m in r.inbox.turns.values()] == ["first", "second"]
    assert len([w for w in warnings_of(caplog) if "ignored a" in w]) == 4
    assert_no_error_logged(caplog)


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
async def test_the_outbox_sends_an_owed_long_reply_in_parts_in_order_through_the_channel(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    try:
        async with rig() as r:
            r.server.inject("ivan", "tell me everything")
            await r.stored_and_acked(1)
            text = "\n\n".join(f"Paragraph {i}. " + "word " * 300 for i in range(4))
            await owe(store, "t1", text, "ivan")
            worker = OutboxWorker(CHANNEL, store.outbox, r.channel.sender, LoopClock())
            assert await worker.send_due() == 0.0
            [delivery] = await store.outbox.of_session(f"agent:main:{CHANNEL}:direct:ivan", 1)
    finally:
        await store.close()
    assert delivery.state is DeliveryState.SENT
    parts = [r.server.shown[f"reply:t1#{i}"] for i in range(len(r.server.shown))]
    assert len(parts) == 2
    assert {chat for chat, _ in parts} == {"ivan"}
    assert "".join(part for _, part in parts) == text
    assert all(len(part) <= MESSAGE_CHARS_MAX for _, part in parts)
