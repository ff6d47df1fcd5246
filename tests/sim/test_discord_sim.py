"""Discord-shaped seeds: the real Discord channel against the simulator's Discord.

Half of the seeds with a chat platform put their people on Discord (``sim/discord.py``); the
same checks run (I7 inbound, I9 delivery keyed by nonce, I6 stale actions) plus Discord's own
protocol. The planted bug that proves those checks can fail lives with the others, in
``test_planted_bugs.py`` (a sequence moved on when a message is received, not stored).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from turngate.sim.channel import ChannelParams, PlatformShape
from turngate.sim.channel_world import ChannelWorld, draw_channel
from turngate.sim.discord import DiscordPlatform
from turngate.sim.runner import run_seed


def discord_seeds(count: int, start: int = 0) -> list[int]:
    """The first ``count`` Discord-shaped seeds from ``start``."""
    found: list[int] = []
    seed = start
    while len(found) < count:
        params = draw_channel(seed)
        if params is not None and params.shape is PlatformShape.DISCORD:
            found.append(seed)
        seed += 1
    return found


def test_half_of_the_channel_seeds_are_discord_shaped() -> None:
    shapes = Counter(p.shape for seed in range(4000) if (p := draw_channel(seed)) is not None)
    share = shapes[PlatformShape.DISCORD] / shapes.total()
    assert 0.4 < share < 0.6, shapes


def test_an_im_seed_draws_the_platform_it_drew_before_discord_joined() -> None:
    for seed in range(3000):
        params = draw_channel(seed)
        if params is None or params.shape is not PlatformShape.IM:
            continue
        rng = random.Random(f"channel-{seed}")
        rng.random()  # whether the seed has a platform at all
        assert params == ChannelParams.draw(rng), seed


@pytest.mark.parametrize("seed", discord_seeds(6))
def test_a_discord_shaped_seed_runs_clean(seed: int) -> None:
    result = run_seed(seed)
    assert result.params.channel is not None
    assert result.params.channel.shape is PlatformShape.DISCORD
    assert result.ok, (result.violations[:5], result.error[-800:])


def test_the_discord_seeds_meet_the_faults_they_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    platforms: list[DiscordPlatform] = []
    original = ChannelWorld.__init__

    def init(self: ChannelWorld, *args: Any) -> None:
        original(self, *args)
        if isinstance(self.platform, DiscordPlatform):
            platforms.append(self.platform)

    monkeypatch.setattr(ChannelWorld, "__init__", init)
    for seed in discord_seeds(60, start=1000):
        result = run_seed(seed)
        assert result.ok, (seed, result.violations[:5], result.error[-800:])
    injected: Counter[str] = Counter()
    for platform in platforms:
        injected.update(platform.injected)
    handshakes = Counter(h for p in platforms for c in p.connections for h in c.handshakes)
    seen = [text for p in platforms for texts in p.record.seen.values() for _, text in texts]
    continued = sum(not text.startswith(("sim: ", "Sorry")) for text in seen)
    print(f"faults injected: {dict(injected)}; handshakes: {dict(handshakes)}")
    kinds = {
        "drop",
        "duplicate",
        "zombie",
        "reconnect",
        "invalid_session_true",
        "invalid_session_false",
        "session_timeout",
        "server_error",
        "answer_lost",
        "rate_limited",
        "invalid_resume",
    }
    assert kinds <= set(injected), kinds - set(injected)
    assert handshakes["resume"] > 0
    assert handshakes["identify"] > 0
    assert continued > 0  # replies past 2,000 characters went out in parts
    assert all(p.record.broken == [] and p.record.stale_actions == [] for p in platforms)


def test_an_accept_cancelled_with_its_connection_still_becomes_a_turn_that_runs() -> None:
    # Seed 24 found it: the taker's accept is cancelled with its connection while the turn's
    # commit is pending; the turn must still be queued (Engine.submit), and run once.
    result = run_seed(24)
    assert result.ok, result.violations[:3]
