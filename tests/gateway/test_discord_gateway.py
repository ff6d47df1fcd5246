"""A Discord bot on a real gateway process against the fake Discord: every DM is answered
once, in order per conversation, across a kill -9 (each message was a stored turn before the
sequence the bot reported moved past it), and the connection's session shows in
``turngate channels status``, ``/health`` and the metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.channels.fake_discord import FakeDiscord, fake_discord
from tests.gateway.process import GatewayProcess
from tests.gateway.test_telegram_gateway import health, scrape, turngate
from tests.secrets import DISCORD_BOT_TOKEN

DMS = ("2000000000000000001", "2000000000000000002", "2000000000000000003")
PER_DM = 4


def config_file(tmp_path: Path, fake: FakeDiscord) -> Path:
    path = tmp_path / "turngate.toml"
    path.write_text(
        f"""
[[channels]]
id = "dc"
type = "discord"
token_env = "DC_TEST_TOKEN"
url = "{fake.gateway_url}"
api_url = "{fake.api_url}"
allow = ["*"]
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
        env={"DC_TEST_TOKEN": DISCORD_BOT_TOKEN},
    )


async def all_delivered(fake: FakeDiscord, url: str, count: int) -> None:
    """Until ``count`` messages were sent and the gateway's outbox holds nothing pending."""
    await fake.signal.wait_until(lambda: len(fake.sent) >= count, timeout_s=60.0)
    # The last send's end is recorded just after Discord took it: ask the gateway (another
    # process) until its outbox says so, each time after the fake saw its next heartbeat.
    async with asyncio.timeout(60.0):
        while (await asyncio.to_thread(health, url))["deliveries"]["pending"]:
            await next_heartbeat(fake)


async def next_heartbeat(fake: FakeDiscord) -> None:
    beats = len(fake.heartbeats)
    await fake.signal.wait_until(lambda: len(fake.heartbeats) > beats, timeout_s=5.0)


@pytest.mark.asyncio
async def test_every_dm_is_answered_once_in_order_across_a_kill(tmp_path: Path) -> None:
    async with fake_discord(heartbeat_interval_ms=200) as fake:
        config = config_file(tmp_path, fake)
        # Life 1: a slow model, so that no reply goes out before the kill.
        first = start(tmp_path, config, echo_latency_ms=600_000)
        try:
            await asyncio.to_thread(first.url)
            await fake.signal.wait_until(lambda: fake.session is not None, timeout_s=30.0)
            for i in range(PER_DM):
                for dm in DMS:
                    fake.message(dm, dm.replace("2", "3", 1), f"dm {dm[-1]} message {i}")
            assert fake.session is not None
            last = fake.session.seq
            # A heartbeat reporting the last sequence means every message is a stored turn.
            await fake.signal.wait_until(
                lambda: any(beat.seq == last for beat in fake.heartbeats), timeout_s=30.0
            )
            await asyncio.to_thread(first.kill)
        finally:
            await asyncio.to_thread(first.stop)
        assert fake.sent == []
        second = start(tmp_path, config, echo_latency_ms=0)
        try:
            url = await asyncio.to_thread(second.url)
            await all_delivered(fake, url, len(DMS) * PER_DM)
            status = await asyncio.to_thread(turngate, "channels", "status", "--url", url)
            body = await asyncio.to_thread(health, url)
            metrics = await asyncio.to_thread(scrape, url)
        finally:
            await asyncio.to_thread(second.stop)
    for dm in DMS:
        replies = [s.content for s in fake.sent if s.channel_id == dm]
        assert replies == [f"echo: dm {dm[-1]} message {i}" for i in range(PER_DM)]
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "dc (discord, agent main): ready"
    [session] = [line for line in lines if line.startswith("  session: ")]
    # The second life identified afresh (a new process has no session to resume).
    assert session.startswith(f"  session: {fake.sessions[-1].session_id}, stored through")
    assert session.endswith("0 resumes, 1 identifies")
    [channel] = body["channels"]
    assert (channel["type"], channel["sessionId"], channel["identifies"]) == (
        "discord",
        fake.sessions[-1].session_id,
        1,
    )
    assert channel["heartbeatRttS"] is not None
    assert channel["lastFrameAgoS"] is not None
    assert 'turngate_channel_deliveries_total{channel="dc",result="sent"} 12.0' in metrics
    assert 'turngate_channel_identifies_total{channel="dc"} 1.0' in metrics
    assert "turngate_channel_heartbeat_rtt_seconds{" in metrics
    assert DISCORD_BOT_TOKEN not in status.stdout + status.stderr
