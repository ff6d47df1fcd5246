"""The Telegram channel against a fake Bot API on 127.0.0.1 (``fake_telegram.py``).

Inbound: updates become inbound messages, and the offset moves past one only after the inbox
stored it. Outbound: replies go out as Telegram HTML, through the outbox worker and a real
SQLite store, retried as Telegram asks and split at 4,096 UTF-16 code units. The token never
shows. Real sockets and real time: every wait is for a condition, under a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.channels.fake_telegram import (
    BOT_USERNAME,
    TOKEN,
    Failure,
    FakeTelegram,
    Signal,
    running,
)
from tests.channels.test_outbox import CHANNEL, owe
from turngate.channels.base import InboundMessage
from turngate.channels.outbox import OutboxSettings, OutboxWorker
from turngate.channels.split import utf16_length
from turngate.channels.telegram import TelegramChannel
from turngate.channels.telegram_format import telegram_html
from turngate.config_channels import ChannelConfig
from turngate.core.connection import BackoffPolicy, ConnectionState
from turngate.errors import ChannelError, DeliveryRefusedError, StorageUnavailableError
from turngate.gateway.server import listening_socket
from turngate.runtime.clock import LoopClock
from turngate.store.base import Delivery, DeliveryState, Outbox
from turngate.store.sqlite import SqliteStore
from turngate.types import WallS

TOKEN_ENV = "TG_TEST_TOKEN"
FAST = BackoffPolicy(base_s=0.01, cap_s=0.05, healthy_after_s=60.0)
"""Reconnects within milliseconds, so that a test sees the next generation at once."""
OUTBOX = OutboxSettings(backoff=BackoffPolicy(base_s=0.01, cap_s=0.05), send_timeout_s=5.0)
GROUP = -1001234


@dataclass(frozen=True)
class Admitted:
    accepted: bool = True


class FakeInbox:
    """Stores each message once per message id, as the real inbox does; can be made to fail
    (``failures``), to hold until ``gate`` is set, or to call ``on_stored`` once stored."""

    def __init__(self) -> None:
        self.calls: list[InboundMessage] = []
        self.turns: dict[str, InboundMessage] = {}
        self.failures = 0
        self.gate: asyncio.Event | None = None
        self.on_stored: Callable[[InboundMessage], None] | None = None
        self.signal = Signal()

    async def accept(self, message: InboundMessage) -> Admitted:
        self.calls.append(message)
        self.signal.notify()
        if self.failures:
            self.failures -= 1
            raise StorageUnavailableError("the store cannot write: disk full")
        if self.gate is not None:
            await self.gate.wait()
        self.turns.setdefault(message.message_id, message)
        if self.on_stored is not None:
            self.on_stored(message)
        self.signal.notify()
        return Admitted()

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.turns.values()]


class ObservedOutbox:
    """The store's outbox, telling a :class:`Signal` whenever a delivery ends."""

    def __init__(self, inner: Outbox) -> None:
        self.inner = inner
        self.ended: list[DeliveryState] = []
        self.signal = Signal()

    async def pending(self, channel_id: str, limit: int) -> list[Delivery]:
        return await self.inner.pending(channel_id, limit)

    async def advance(self, delivery_id: int, parts_sent: int, at: WallS) -> None:
        await self.inner.advance(delivery_id, parts_sent, at)

    async def retry_later(
        self, delivery_id: int, attempts: int, next_attempt_wall: WallS, error: str
    ) -> None:
        await self.inner.retry_later(delivery_id, attempts, next_attempt_wall, error)

    async def finish(
        self, delivery_id: int, state: DeliveryState, at: WallS, error: str | None = None
    ) -> None:
        await self.inner.finish(delivery_id, state, at, error)
        self.ended.append(state)
        self.signal.notify()

    async def of_session(self, session_key: str, limit: int) -> list[Delivery]:
        return await self.inner.of_session(session_key, limit)

    async def counts(self) -> dict[DeliveryState, int]:
        return await self.inner.counts()


def config(url: str, **overrides: Any) -> ChannelConfig:
    fields: dict[str, Any] = {"poll_timeout": 1.0, "allow": ("*",), **overrides}
    return ChannelConfig(id=CHANNEL, type="telegram", token_env=TOKEN_ENV, url=url, **fields)


@asynccontextmanager
async def telegram(
    token: str = TOKEN, **overrides: Any
) -> AsyncIterator[tuple[FakeTelegram, TelegramChannel]]:
    """A fake Bot API, and a channel pointed at it (not yet running)."""
    fake = FakeTelegram()
    async with running(fake) as url:
        channel = TelegramChannel(
            config(url, **overrides), token, LoopClock(), random.Random(7), backoff=FAST
        )
        try:
            yield fake, channel
        finally:
            await channel.aclose()


@asynccontextmanager
async def polling(channel: TelegramChannel, inbox: FakeInbox) -> AsyncIterator[None]:
    """``channel`` running for the duration of the block, then stopped."""
    task = asyncio.get_running_loop().create_task(channel.run(inbox))
    try:
        yield
    finally:
        channel.stop()
        async with asyncio.timeout(5.0):
            await task


async def deliver(store: SqliteStore, channel: TelegramChannel, deliveries: int) -> ObservedOutbox:
    """Run an outbox worker with ``channel``'s sender until ``deliveries`` have ended."""
    outbox = ObservedOutbox(store.outbox)
    worker = OutboxWorker(
        CHANNEL, outbox, channel.sender, LoopClock(), settings=OUTBOX, rng=random.Random(7)
    )
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        await outbox.signal.wait_until(lambda: len(outbox.ended) >= deliveries, 10.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return outbox


@asynccontextmanager
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# Inbound


@pytest.mark.asyncio
async def test_text_messages_become_inbound_messages_and_other_updates_are_passed_over() -> None:
    inbox = FakeInbox()
    async with telegram() as (fake, channel), polling(channel, inbox):
        fake.message(42, "hello")
        fake.update({"message": {"message_id": 9, "chat": {"id": 42, "type": "private"}}})
        fake.update({"edited_message": {"message_id": 1, "text": "hello!"}})
        fake.message(42, "second")
        await inbox.signal.wait_until(lambda: len(inbox.turns) == 2)
        await fake.signal.wait_until(lambda: 5 in fake.polls)
        assert fake.updates == []  # the offset confirmed all four
    assert list(inbox.turns.values()) == [
        InboundMessage("42:1", "42", "42", "hello", group=False, peer_name="Ada L"),
        InboundMessage("42:2", "42", "42", "second", group=False, peer_name="Ada L"),
    ]
    assert channel.connection().reconnects == 0


@pytest.mark.asyncio
async def test_the_offset_moves_past_a_message_only_after_the_inbox_stored_it() -> None:
    inbox = FakeInbox()
    inbox.gate = asyncio.Event()
    async with telegram() as (fake, channel), polling(channel, inbox):
        fake.message(42, "hello")
        await inbox.signal.wait_until(lambda: len(inbox.calls) == 1)
        assert (channel.offset, fake.polls) == (None, [None])
        inbox.gate.set()
        await fake.signal.wait_until(lambda: len(fake.polls) == 2)
        assert (channel.offset, fake.polls) == (2, [None, 2])


@pytest.mark.asyncio
async def test_a_message_the_inbox_failed_to_store_comes_again_and_becomes_one_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = FakeInbox()
    inbox.failures = 1
    async with telegram() as (fake, channel), polling(channel, inbox):
        fake.message(42, "first")
        fake.message(42, "second")
        await inbox.signal.wait_until(lambda: len(inbox.turns) == 2)
        await fake.signal.wait_until(lambda: 3 in fake.polls)
    assert [m.message_id for m in inbox.calls] == ["42:1", "42:1", "42:2"]
    assert inbox.texts == ["first", "second"]
    assert fake.polls[:2] == [None, None]  # the next generation asked from the same place
    assert channel.connection().reconnects == 1
    assert "message 42:1 not stored" in caplog.text


@pytest.mark.asyncio
async def test_a_restart_between_storing_and_committing_the_offset_loses_and_repeats_nothing() -> (
    None
):
    inbox = FakeInbox()
    async with telegram() as (fake, first):
        inbox.on_stored = lambda message: first.stop()  # the process dies right after the store
        fake.message(42, "hello")
        await first.run(inbox)
        assert fake.updates != []  # Telegram never heard of the offset
        inbox.on_stored = None
        second = TelegramChannel(first._config, TOKEN, LoopClock(), random.Random(7), backoff=FAST)
        try:
            async with polling(second, inbox):
                await fake.signal.wait_until(lambda: 2 in fake.polls)
        finally:
            await second.aclose()
    assert [m.message_id for m in inbox.calls] == ["42:1", "42:1"]  # the same id: one turn
    assert inbox.texts == ["hello"]


@pytest.mark.asyncio
async def test_in_groups_only_messages_that_mention_or_reply_to_the_bot_are_taken() -> None:
    inbox = FakeInbox()
    async with telegram(groups="mention") as (fake, channel), polling(channel, inbox):
        fake.message(GROUP, "hello everyone", from_id=7, chat_type="supergroup")
        fake.message(GROUP, f"@{BOT_USERNAME} what time is it?", from_id=7, chat_type="group")
        fake.message(
            GROUP, f"hey @{BOT_USERNAME.upper()}, and tomorrow?", from_id=8, chat_type="group"
        )
        fake.message(GROUP, "and the day after?", from_id=7, chat_type="group", reply_to_bot=True)
        fake.message(GROUP, f"/help@{BOT_USERNAME}", from_id=7, chat_type="group")
        fake.message(42, "direct")
        await inbox.signal.wait_until(lambda: "42:1" in inbox.turns)
        await fake.signal.wait_until(lambda: 7 in fake.polls)
    assert inbox.texts == [
        "what time is it?",
        "hey and tomorrow?",
        "and the day after?",
        "/help",
        "direct",
    ]
    turns = list(inbox.turns.values())
    assert [(m.conversation, m.peer, m.group) for m in turns[:2]] == [
        (str(GROUP), "7", True),
        (str(GROUP), "8", True),
    ]
    assert f"{GROUP}:1" not in inbox.turns


@pytest.mark.parametrize(
    ("groups", "texts"), [("all", ["hello everyone", "direct"]), ("off", ["direct"])]
)
@pytest.mark.asyncio
async def test_groups_all_takes_every_group_message_and_off_takes_none(
    groups: str, texts: list[str]
) -> None:
    inbox = FakeInbox()
    async with telegram(groups=groups) as (fake, channel), polling(channel, inbox):
        fake.message(GROUP, "hello everyone", from_id=7, chat_type="group")
        fake.message(42, "direct")
        await inbox.signal.wait_until(lambda: "42:1" in inbox.turns)
    assert inbox.texts == texts


@pytest.mark.asyncio
async def test_a_wrong_token_stops_the_channel_with_a_clear_error_that_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "987654321:AAwrong-token-that-must-stay-secret"
    caplog.set_level(logging.DEBUG)
    async with telegram(token=wrong) as (_, channel):
        async with asyncio.timeout(5.0):
            await channel.run(FakeInbox())  # returns by itself: refused for good
        snapshot = channel.connection()
    assert (snapshot.state, snapshot.fatal, snapshot.reconnects) == (
        ConnectionState.STOPPED,
        True,
        0,
    )
    assert snapshot.last_error is not None
    assert (
        f"channel {CHANNEL}: Telegram refused the bot token in ${TOKEN_ENV}" in snapshot.last_error
    )
    assert "401 Unauthorized" in snapshot.last_error
    assert "refused for good" in caplog.text
    assert wrong not in repr(snapshot)
    assert wrong not in caplog.text
    assert "AAwrong" not in caplog.text


@pytest.mark.asyncio
async def test_the_token_reaches_no_log_line_even_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    inbox = FakeInbox()
    async with telegram() as (fake, channel), polling(channel, inbox):
        fake.message(42, "hello")
        await inbox.signal.wait_until(lambda: len(inbox.turns) == 1)
        await channel.sender.send("42", "hi", "r#0")
        await channel.typing("42")
    assert "/botTOKEN/getUpdates" in caplog.text  # httpx2 logs every request's URL...
    assert TOKEN not in caplog.text  # ...but not the one that went to the socket
    assert "AAF-fake" not in caplog.text


@pytest.mark.asyncio
async def test_a_conflict_ends_the_poll_with_a_warning_and_polling_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = FakeInbox()
    async with telegram() as (fake, channel), polling(channel, inbox):
        conflict = "Conflict: terminated by other getUpdates request"
        fake.poll_failures.append(Failure(409, conflict))
        fake.message(42, "hello")
        await inbox.signal.wait_until(lambda: len(inbox.turns) == 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(conflict in w and "only one poller per bot token" in w for w in warnings)
    assert channel.connection().reconnects == 1


@pytest.mark.asyncio
async def test_a_rate_limited_poll_waits_retry_after_before_polling_again() -> None:
    inbox = FakeInbox()
    async with telegram() as (fake, channel), polling(channel, inbox):
        fake.poll_failures.append(Failure(429, "Too Many Requests: retry after 1", retry_after=1))
        fake.message(42, "hello")
        await inbox.signal.wait_until(lambda: len(inbox.turns) == 1)
    assert fake.poll_times[1] - fake.poll_times[0] >= 1.0
    assert channel.connection().reconnects == 0  # a pause, not a lost connection


# Outbound: the sender on its own


@pytest.mark.asyncio
async def test_a_reply_goes_out_as_telegram_html() -> None:
    async with telegram() as (fake, channel):
        await channel.sender.send("42", "**Hi** <you> & `x<y>`", "r#0")
    [sent] = fake.sent
    assert (sent.chat_id, sent.text, sent.parse_mode) == (
        "42",
        "<b>Hi</b> &lt;you&gt; &amp; <code>x&lt;y&gt;</code>",
        "HTML",
    )


@pytest.mark.asyncio
async def test_a_reply_whose_formatting_is_refused_is_sent_again_as_plain_text_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with telegram() as (fake, channel):
        fake.refuse_entities_marker = "UNPARSABLE"
        await channel.sender.send("42", "**UNPARSABLE** reply", "r#0")
    assert [(a.text, a.parse_mode) for a in fake.attempts] == [
        ("<b>UNPARSABLE</b> reply", "HTML"),
        ("**UNPARSABLE** reply", None),
    ]
    assert [s.text for s in fake.sent] == ["**UNPARSABLE** reply"]
    assert "sending it as plain text" in caplog.text


@pytest.mark.asyncio
async def test_a_send_failing_with_502_raises_a_channel_error_until_it_passes() -> None:
    async with telegram() as (fake, channel):
        fake.send_failures.extend([Failure(502, "Bad Gateway")] * 3)
        for _ in range(3):
            with pytest.raises(ChannelError) as failed:
                await channel.sender.send("42", "hello", "r#0")
            assert not isinstance(failed.value, DeliveryRefusedError)
            assert failed.value.retry_after_s is None
            assert TOKEN not in failed.value.message
        await channel.sender.send("42", "hello", "r#0")
    assert [s.text for s in fake.sent] == ["hello"]


@pytest.mark.asyncio
async def test_a_rate_limited_send_raises_a_channel_error_carrying_retry_after() -> None:
    async with telegram() as (fake, channel):
        fake.send_failures.append(Failure(429, "Too Many Requests: retry after 3", retry_after=3))
        with pytest.raises(ChannelError) as failed:
            await channel.sender.send("42", "hello", "r#0")
    assert not isinstance(failed.value, DeliveryRefusedError)
    assert failed.value.retry_after_s == 3.0


@pytest.mark.parametrize(
    "refusal", ["Bad Request: chat not found", "Forbidden: bot was blocked by the user"]
)
@pytest.mark.asyncio
async def test_a_chat_that_is_gone_or_blocked_the_bot_refuses_the_delivery_for_good(
    refusal: str,
) -> None:
    async with telegram() as (fake, channel):
        fake.missing_chats.add("404")
        fake.blocked_chats.add("403")
        with pytest.raises(DeliveryRefusedError, match=refusal):
            await channel.sender.send("404" if "found" in refusal else "403", "hello", "r#0")
    assert fake.sent == []


@pytest.mark.asyncio
async def test_an_unreachable_bot_api_is_a_channel_error_that_never_shows_the_token() -> None:
    sock = listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    channel = TelegramChannel(config(url), TOKEN, LoopClock(), random.Random(7), backoff=FAST)
    try:
        with pytest.raises(ChannelError) as failed:
            await channel.sender.send("42", "hello", "r#0")
    finally:
        await channel.aclose()
    assert failed.value.message.startswith("telegram sendMessage: ConnectError")
    assert TOKEN not in failed.value.message


@pytest.mark.asyncio
async def test_typing_shows_the_bot_typing_in_the_chat() -> None:
    async with telegram() as (fake, channel):
        await channel.typing("-1001234")
    assert fake.actions == [("-1001234", "typing")]


@pytest.mark.asyncio
async def test_the_sender_counts_as_telegram_does() -> None:
    channel = TelegramChannel(config("http://127.0.0.1:9"), TOKEN, LoopClock(), random.Random(7))
    await channel.aclose()
    assert (channel.sender.limit, channel.sender.measure("a😀")) == (4096, 3)
    assert (channel.kind, channel.channel_id) == ("telegram", CHANNEL)
    assert channel.connection().state is ConnectionState.CONNECTING


# Outbound: through the outbox worker and a real store


@pytest.mark.asyncio
async def test_a_reply_failing_three_times_with_502_is_delivered_once(tmp_path: Path) -> None:
    async with sqlite(tmp_path) as store, telegram() as (fake, channel):
        fake.send_failures.extend([Failure(502, "Bad Gateway")] * 3)
        await owe(store, "t1", "hello")
        outbox = await deliver(store, channel, 1)
        [delivery] = await store.outbox.of_session(f"agent:main:{CHANNEL}:direct:42", 1)
    assert outbox.ended == [DeliveryState.SENT]
    assert (delivery.state, delivery.attempts) == (DeliveryState.SENT, 3)
    assert len(fake.attempts) == 4
    assert [s.text for s in fake.sent] == ["hello"]


@pytest.mark.asyncio
async def test_a_rate_limit_is_waited_out_before_the_reply_goes_out(tmp_path: Path) -> None:
    async with sqlite(tmp_path) as store, telegram() as (fake, channel):
        fake.send_failures.append(Failure(429, "Too Many Requests: retry after 1", retry_after=1))
        await owe(store, "t1", "hello")
        outbox = await deliver(store, channel, 1)
    assert outbox.ended == [DeliveryState.SENT]
    first, second = fake.attempts
    assert second.at - first.at >= 1.0
    assert [s.text for s in fake.sent] == ["hello"]


@pytest.mark.asyncio
async def test_a_10000_character_reply_arrives_as_three_messages_in_order(tmp_path: Path) -> None:
    sentence = "Every accepted message gets exactly one real reply, in order. 🙂 "
    paragraphs = [f"Part {i}. " + sentence * 4 for i in range(60)]
    text = "\n\n".join(paragraphs)[:10_000]
    async with sqlite(tmp_path) as store, telegram() as (fake, channel):
        await owe(store, "t1", text)
        outbox = await deliver(store, channel, 1)
    assert outbox.ended == [DeliveryState.SENT]
    assert len(fake.sent) == 3
    assert all(s.parse_mode == "HTML" and utf16_length(s.text) <= 4096 for s in fake.sent)
    assert "".join(s.text for s in fake.sent) == text
    assert fake.attempts == fake.sent  # none refused


@pytest.mark.asyncio
async def test_a_reply_to_a_chat_that_is_gone_is_recorded_failed_at_once(tmp_path: Path) -> None:
    async with sqlite(tmp_path) as store, telegram() as (fake, channel):
        fake.missing_chats.add("42")
        await owe(store, "t1", "hello")
        outbox = await deliver(store, channel, 1)
        [turn] = await store.session_turns(f"agent:main:{CHANNEL}:direct:42", 1)
    assert outbox.ended == [DeliveryState.FAILED]
    assert turn.delivery == "delivery_failed"
    assert len(fake.attempts) == 1


# Formatting


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("plain text", "plain text"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*italic* and _italic_", "<i>italic</i> and <i>italic</i>"),
        ("**bold *and italic* inside**", "<b>bold <i>and italic</i> inside</b>"),
        ("**a** b **c**", "<b>a</b> b <b>c</b>"),
        ("`x <y>` and ``a`b``", "<code>x &lt;y&gt;</code> and <code>a`b</code>"),
        (
            "```python\nif a < b:\n    pass\n```\nafter",
            '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>\nafter',
        ),
        ("```\n**not bold**\n```", "<pre>**not bold**</pre>"),
        ("```\ncut by the splitter <", "<pre>cut by the splitter &lt;</pre>"),
        (
            '[the docs](https://example.org/?a=1&b="2")',
            '<a href="https://example.org/?a=1&amp;b=&quot;2&quot;">the docs</a>',
        ),
        (
            "[**bold** link](https://example.org)",
            '<a href="https://example.org"><b>bold</b> link</a>',
        ),
        ("[not a link](javascript:alert(1))", "[not a link](javascript:alert(1))"),
        ("snake_case_name and 2*3 = 6", "snake_case_name and 2*3 = 6"),
        ("- list item\n* star item", "- list item\n* star item"),
        ("**unclosed bold", "**unclosed bold"),
        ("# Heading", "# Heading"),
    ],
)
def test_markdown_becomes_telegram_html(markdown: str, html: str) -> None:
    assert telegram_html(markdown) == html


def test_deeply_nested_markers_stay_text_instead_of_recursing_without_bound() -> None:
    markdown = "**" * 600 + "x" + "**" * 600
    assert "x" in telegram_html(markdown)
