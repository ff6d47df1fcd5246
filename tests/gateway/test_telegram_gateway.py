"""A Telegram bot on a real gateway process against the fake Bot API: every message is
answered once, in order per chat, across a kill -9 whether Telegram heard of the new offset
or not (the turns were stored before the offset moved; a message that comes again is the
same turn)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.channels.fake_telegram import FakeTelegram, running
from tests.gateway.process import GatewayProcess
from tests.secrets import TELEGRAM_BOT_TOKEN

CHATS = (1001, 1002, 1003)
PER_CHAT = 4


def config_file(tmp_path: Path, api_url: str) -> Path:
    path = tmp_path / "turngate.toml"
    path.write_text(
        f"""
[[channels]]
id = "tg"
type = "telegram"
token_env = "TG_TEST_TOKEN"
url = "{api_url}"
allow = ["*"]
poll_timeout = "1s"
""",
        encoding="utf-8",
    )
    return path


def start(tmp_path: Path, config: Path, echo_latency_ms: int) -> GatewayProcess:
    return GatewayProcess(
        tmp_path / "state",
        echo_latency_ms=echo_latency_ms,
        log_level="warning",
        args=["--config", str(config)],
        env={"TG_TEST_TOKEN": TELEGRAM_BOT_TOKEN},
    )


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


async def next_poll(fake: FakeTelegram) -> None:
    polls = len(fake.polls)
    await fake.signal.wait_until(lambda: len(fake.polls) > polls, timeout_s=5.0)


async def all_delivered(fake: FakeTelegram, url: str, count: int) -> None:
    """Until ``count`` messages were sent and the gateway's outbox holds nothing pending."""
    await fake.signal.wait_until(lambda: len(fake.sent) >= count, timeout_s=60.0)
    # The last send's end is recorded just after Telegram took it: ask the gateway (another
    # process) until its outbox says so, each time after the fake saw its next poll.
    async with asyncio.timeout(60.0):
        while (await asyncio.to_thread(health, url))["deliveries"]["pending"]:
            await next_poll(fake)


@pytest.mark.asyncio
@pytest.mark.parametrize("offset_reached_telegram", [True, False])
async def test_every_message_is_answered_once_in_order_across_a_kill(
    tmp_path: Path, offset_reached_telegram: bool
) -> None:
    fake = FakeTelegram(confirm_offsets=offset_reached_telegram)
    async with running(fake) as api_url:
        config = config_file(tmp_path, api_url)
        # Life 1: a slow model, so that no reply goes out before the kill.
        first = start(tmp_path, config, echo_latency_ms=600_000)
        try:
            await asyncio.to_thread(first.url)
            for i in range(PER_CHAT):
                for chat in CHATS:
                    fake.message(chat, f"chat {chat} message {i}")
            last = fake.updates[-1]["update_id"]
            # Asking for the updates after the last one means every one is a stored turn.
            await fake.signal.wait_until(lambda: last + 1 in fake.polls, timeout_s=30.0)
            await asyncio.to_thread(first.kill)
        finally:
            await asyncio.to_thread(first.stop)
        assert fake.sent == []
        second = start(tmp_path, config, echo_latency_ms=0)
        try:
            url = await asyncio.to_thread(second.url)
            await all_delivered(fake, url, len(CHATS) * PER_CHAT)
            status = await asyncio.to_thread(turngate, "channels", "status", "--url", url)
            overall = await asyncio.to_thread(turngate, "status", "--url", url)
            metrics = await asyncio.to_thread(scrape, url)
        finally:
            await asyncio.to_thread(second.stop)
    for chat in CHATS:
        replies = [s.text for s in fake.sent if s.chat_id == str(chat)]
        assert replies == [f"echo: chat {chat} message {i}" for i in range(PER_CHAT)]
    assert status.returncode == 0, status.stderr
    assert "  tg (telegram, agent main): ready, 0 reconnects, 12 sent, 0 failed" in overall.stdout
    assert status.stdout.splitlines()[0] == "tg (telegram, agent main): ready"
    assert "outbox: 12 sent, 0 retried, 0 failed" in status.stdout
    assert 'turngate_channel_deliveries_total{channel="tg",result="sent"} 12.0' in metrics
    assert 'turngate_channel_state{channel="tg",state="ready"} 1.0' in metrics


def turngate(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "turngate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


@pytest.mark.asyncio
async def test_two_gateways_on_one_database_poll_the_bot_from_one_process_at_a_time(
    tmp_path: Path, postgres_url: str
) -> None:
    """Telegram refuses two pollers of one bot: of two gateways sharing a database, one runs
    the channel; when it is killed, the other takes the channel over (within the claim's
    time to live) and answers the next message."""
    fake = FakeTelegram()
    async with running(fake) as api_url:
        config = config_file(tmp_path, api_url)
        shared = {
            "TURNGATE_STORE": postgres_url,
            "TURNGATE_SESSION_CLAIM_TTL_S": "2",
            "TURNGATE_CLAIM_POLL_S": "0.2",
        }
        gateways = [
            GatewayProcess(
                tmp_path / name,
                echo_latency_ms=0,
                log_level="warning",
                args=["--config", str(config)],
                env={"TG_TEST_TOKEN": TELEGRAM_BOT_TOKEN, "TURNGATE_INSTANCE": name, **shared},
            )
            for name in ("a", "b")
        ]
        try:
            urls = [await asyncio.to_thread(gateway.url) for gateway in gateways]
            fake.message(1001, "one")
            await fake.signal.wait_until(lambda: len(fake.sent) >= 1, timeout_s=30.0)
            held = [(await asyncio.to_thread(health, url))["channels"][0] for url in urls]
            holder = [view["heldHere"] for view in held].index(True)
            conflicts_before_kill = fake.conflicts
            await asyncio.to_thread(gateways[holder].kill)
            fake.message(1001, "two")
            await fake.signal.wait_until(lambda: len(fake.sent) >= 2, timeout_s=30.0)
            other = (await asyncio.to_thread(health, urls[1 - holder]))["channels"][0]
        finally:
            for gateway in gateways:
                await asyncio.to_thread(gateway.stop)
    assert [view["heldHere"] for view in held].count(True) == 1
    assert other["heldHere"] is True
    assert [s.text for s in fake.sent] == ["echo: one", "echo: two"]
    # Never two pollers: only the killed process's last long poll, left hanging, was cut
    # off by its successor's first one.
    assert conflicts_before_kill == 0
    assert fake.conflicts <= 1
