"""A channel's outbox worker, on virtual time against a real SQLite store and a fake platform:
each owed reply goes out once, in order per conversation, split at the platform's limit,
retried as the platform asks, and recorded as failed (never lost) when it cannot go out."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from turngate.channels.outbox import OutboxSettings, OutboxWorker, TokenBucket
from turngate.core.connection import BackoffPolicy
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ChannelError, DeliveryRefusedError
from turngate.runtime.clock import LoopClock
from turngate.sim.loop import run_virtual
from turngate.store.base import DeliveryOrder, DeliveryState, TurnRecord
from turngate.store.sqlite import SqliteStore

CHANNEL = "tg"


@dataclass
class FakePlatform:
    """Takes messages (``limit`` characters at most); ``failures`` are raised first, in order."""

    limit: int = 100
    failures: list[Exception] = field(default_factory=list)
    taken: list[tuple[float, str, str, str]] = field(default_factory=list)
    """(loop time, conversation, text, part key) of each message taken."""
    delay_s: float = 0.0

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        assert len(text) <= self.limit
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)
        self.taken.append((asyncio.get_running_loop().time(), conversation, text, part_key))


async def owe(store: SqliteStore, turn_id: str, text: str, conversation: str = "42") -> None:
    """End a turn replied with ``text``, owing it to ``conversation``."""
    key = f"agent:main:{CHANNEL}:direct:{conversation}"
    await store.accept_turn(
        TurnRecord(turn_id, key, "main", f"m-{turn_id}", "followup", TurnState.ACCEPTED, 0.0, 60)
    )
    epoch = await store.session_epoch(key) + 1
    await store.start_run(key, turn_id, epoch, [turn_id], at=0.0)
    outcome = Outcome(turn_id, TurnState.REPLIED, turn_id, reply=text)
    order = DeliveryOrder(f"reply:{turn_id}", key, turn_id, CHANNEL, conversation, text)
    await store.end_run(key, turn_id, epoch, [outcome], [], at=0.0, orders=[order])


def run(
    tmp_path: Path,
    platform: FakePlatform,
    scenario: Callable[[SqliteStore, OutboxWorker], Awaitable[None]],
    settings: OutboxSettings | None = None,
) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "turngate.db")
        await store.open()
        worker = OutboxWorker(
            CHANNEL, store.outbox, platform, LoopClock(0.0), settings=settings, rng=random.Random(7)
        )
        try:
            await scenario(store, worker)
        finally:
            await store.close()

    run_virtual(main())


async def drain(worker: OutboxWorker, until_s: float = 3600.0) -> None:
    """Run the worker until nothing is pending (bounded in virtual time)."""
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        async with asyncio.timeout(until_s):
            while await worker.outbox.pending(CHANNEL, 10):
                worker.wake()
                await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_an_owed_reply_goes_out_once_and_its_turn_shows_it_delivered(tmp_path: Path) -> None:
    platform = FakePlatform()

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "hello")
        await drain(worker)
        [turn] = await store.session_turns(f"agent:main:{CHANNEL}:direct:42", 1)
        assert turn.delivery == "delivered"

    run(tmp_path, platform, scenario)
    assert [(c, t, k) for _, c, t, k in platform.taken] == [("42", "hello", "reply:t1#0")]


def test_a_long_reply_goes_out_in_parts_in_order_with_nothing_lost(tmp_path: Path) -> None:
    platform = FakePlatform(limit=100)
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 12 for i in range(6))

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", text)
        await drain(worker)

    run(tmp_path, platform, scenario)
    assert len(platform.taken) > 3
    assert "".join(t for _, _, t, _ in platform.taken) == text
    assert [k for *_, k in platform.taken] == [f"reply:t1#{i}" for i in range(len(platform.taken))]


def test_a_conversation_gets_its_replies_in_order_while_others_go_side_by_side(
    tmp_path: Path,
) -> None:
    platform = FakePlatform(delay_s=1.0)

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        for i in range(3):
            await owe(store, f"a{i}", f"a{i}", conversation="a")
            await owe(store, f"b{i}", f"b{i}", conversation="b")
        await drain(worker)

    run(tmp_path, platform, scenario)
    by_conversation = {c: [t for _, cc, t, _ in platform.taken if cc == c] for c in ("a", "b")}
    assert by_conversation == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    # Each conversation waits for its own previous message, not for the other's.
    times = [at for at, *_ in platform.taken]
    assert times[0] == times[1]


def test_a_send_that_fails_three_times_then_succeeds_is_delivered_once(tmp_path: Path) -> None:
    platform = FakePlatform(failures=[ChannelError("502 from the platform")] * 3)

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "hello")
        await drain(worker)
        [delivery] = await store.outbox.of_session(f"agent:main:{CHANNEL}:direct:42", 1)
        assert (delivery.state, delivery.attempts) == (DeliveryState.SENT, 3)

    run(tmp_path, platform, scenario)
    assert [t for _, _, t, _ in platform.taken] == ["hello"]


def test_a_rate_limit_with_retry_after_is_waited_out_by_the_whole_bot(tmp_path: Path) -> None:
    platform = FakePlatform(failures=[ChannelError("429", retry_after_s=7.0)])

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "first", conversation="a")
        await drain(worker)
        await owe(store, "t2", "second", conversation="b")
        await drain(worker)

    run(tmp_path, platform, scenario)
    assert next((round(at, 3), t) for at, _, t, _ in platform.taken) == (7.0, "first")


def test_a_rate_limit_of_one_conversation_holds_back_only_that_conversation(
    tmp_path: Path,
) -> None:
    limited = ChannelError("429 on this channel's route", retry_after_s=7.0, conversation_only=True)
    platform = FakePlatform(failures=[limited])

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "first", conversation="a")
        await worker.send_due()  # a's send meets the limit of a's route
        await owe(store, "t2", "second", conversation="b")
        await drain(worker)

    run(tmp_path, platform, scenario)
    sent = sorted(
        (round(at, 3), conversation, text) for at, conversation, text, _ in platform.taken
    )
    assert sent[0][1:] == ("b", "second")
    assert sent[0][0] < 7.0
    assert sent[1] == (7.0, "a", "first")


def test_a_message_the_platform_refuses_for_good_is_recorded_failed_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = FakePlatform(failures=[DeliveryRefusedError("400: chat not found")])
    failed: list[str] = []

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        worker._on_failed = lambda delivery, reason: failed.append(reason)
        await owe(store, "t1", "hello")
        await drain(worker)
        [turn] = await store.session_turns(f"agent:main:{CHANNEL}:direct:42", 1)
        assert turn.delivery == "delivery_failed"

    with caplog.at_level(logging.WARNING, logger="turngate.channels"):
        run(tmp_path, platform, scenario)
    assert platform.taken == []
    assert failed == ["refused by the platform: 400: chat not found"]
    assert "agent:main:tg:direct:42 (run t1) failed for good" in caplog.text


def test_a_message_that_keeps_failing_is_recorded_failed_after_the_last_attempt(
    tmp_path: Path,
) -> None:
    platform = FakePlatform(failures=[ChannelError("timeout")] * 10)
    settings = OutboxSettings(attempts_max=4, backoff=BackoffPolicy(base_s=1.0, cap_s=8.0))

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "hello")
        await drain(worker)
        [delivery] = await store.outbox.of_session(f"agent:main:{CHANNEL}:direct:42", 1)
        assert delivery.state is DeliveryState.FAILED
        assert delivery.last_error == "4 attempts failed; the last: timeout"
        assert worker.counts.failed == 1
        assert worker.counts.retries == 3

    run(tmp_path, platform, scenario, settings)
    assert len(platform.failures) == 6


def test_after_a_restart_a_reply_resumes_after_the_parts_already_sent(tmp_path: Path) -> None:
    platform = FakePlatform(limit=10)

    async def scenario(store: SqliteStore, worker: OutboxWorker) -> None:
        await owe(store, "t1", "aaaa bbbb cccc dddd")
        [delivery] = await store.outbox.pending(CHANNEL, 1)
        await store.outbox.advance(delivery.delivery_id, 1, 0.0)  # a life before took part 0
        restarted = OutboxWorker(CHANNEL, store.outbox, platform, LoopClock(0.0))
        await drain(restarted)

    run(tmp_path, platform, scenario)
    assert [(t, k) for _, _, t, k in platform.taken] == [("cccc dddd", "reply:t1#1")]


def test_the_rate_limiter_spreads_a_burst_past_its_size() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    assert bucket.reserve(10.0) == 0.0
