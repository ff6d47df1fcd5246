"""A chat platform in a seed's world, and invariant I9 (delivery) checked on it.

In a share of seeds (:data:`CHANNEL_SHARE`), people on a simulated platform write to the
agent through a channel, while the other clients do what they always do. The platform is an
IM platform (``sim/channel.py``, reached by its :class:`~turngate.sim.channel.SimChannel`), or,
in :data:`DISCORD_SHARE` of those seeds, Discord (``sim/discord.py``, reached by the real
:class:`~turngate.channels.discord.DiscordChannel`: its gateway protocol, its REST sender and
its rate limits). Each gateway life runs the real channel runtime (inbound, outbox worker,
supervisor) against the platform; the platform outlives the lives, as a real one does.

At the end, over the settled world:

- I7 (inbound): every message the channel acked is a stored turn; every message a person
  sent became one (the platform hands unacked ones again), and only one.
- I9 (delivery): every replied turn of a channel session was delivered (every part of its
  run's reply seen by the person, once, in order) or recorded ``delivery_failed``, never left
  pending; the people saw nothing that no turn owed them; each conversation's messages came
  in the order the outbox queued them.
- I6 (generations): no connection acted after it was over.
- Discord's protocol: nothing the platform forbids (``PlatformRecord.broken``: a frame before
  HELLO, a second IDENTIFY on a connection, a sequence reported that was never dispatched, a
  message over the length limit or without ``enforce_nonce``...), reported as ``protocol``.

What a Discord conversation saw is keyed by nonce: each part key is mapped with
:func:`~turngate.channels.discord.rest.nonce_of`, and replies split at Discord's 2,000.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from turngate.channels.base import Channel
from turngate.channels.discord import DiscordChannel, DiscordSettings
from turngate.channels.discord.rest import MESSAGE_CHARS_MAX as DISCORD_LIMIT
from turngate.channels.discord.rest import nonce_of
from turngate.channels.outbox import OutboxSettings
from turngate.channels.routes import ChannelRoutes
from turngate.channels.runtime import ChannelRuntime
from turngate.channels.split import split_message
from turngate.config_channels import ChannelConfig
from turngate.core.connection import BackoffPolicy
from turngate.core.turn import TurnState
from turngate.runtime.engine import Engine
from turngate.sim import discord
from turngate.sim.channel import (
    CHANNEL_ID,
    LIMIT,
    ChannelParams,
    PlatformShape,
    SimChannel,
    SimPlatform,
)
from turngate.sim.world import Faults
from turngate.store.base import Delivery, DeliveryState, TurnRecord

CHANNEL_SHARE = 0.15
DISCORD_SHARE = 0.5
"""Share of the channel seeds whose platform is Discord-shaped."""
AGENT_ID = "sim"
CONFIG = ChannelConfig(
    id=CHANNEL_ID, type="websocket", url="ws://sim/", agent=AGENT_ID, allow=("*",)
)
DISCORD_CONFIG = ChannelConfig(
    id="discord",
    type="discord",
    token_env="SIM_DISCORD",
    url=discord.GATEWAY_URL,
    api_url=discord.API_URL,
    agent=AGENT_ID,
    allow=("*",),
)
DISCORD_SETTINGS = DiscordSettings(
    backoff=BackoffPolicy(base_s=0.5, cap_s=10.0, healthy_after_s=5.0), ready_timeout_s=10.0
)
OUTBOX = OutboxSettings(
    attempts_max=4,
    backoff=BackoffPolicy(base_s=0.5, cap_s=8.0),
    send_timeout_s=10.0,
    rate_per_s=50.0,
    poll_s=5.0,
)
MESSAGE_CHARS_MAX = 10_000
SETTLE_POLL_S = 1.0
"""A settle check runs when the platform sees an ack or a send, and at least this often (the
last record of a delivery comes just after its last send)."""


def draw_channel(seed: int) -> ChannelParams | None:
    """The platform of ``seed``, if it has one (from a Random of its own; its shape is drawn
    last, so that an IM platform's draws are those it had before Discord joined)."""
    rng = random.Random(f"channel-{seed}")
    if rng.random() >= CHANNEL_SHARE:
        return None
    params = ChannelParams.draw(rng)
    return params.as_discord(rng) if rng.random() < DISCORD_SHARE else params


@dataclass(frozen=True, slots=True)
class Finding:
    """A violation the channel checks found."""

    invariant: str
    at: float
    message: str


class ChannelWorld:
    """The platform of one seed and the channel of each gateway life."""

    def __init__(self, seed: int, params: ChannelParams, faults: Faults) -> None:
        self.seed = seed
        rng = random.Random(f"platform-{seed}")
        self.platform: SimPlatform | discord.DiscordPlatform
        self.config = CONFIG
        self.limit = LIMIT
        self.key_of: Callable[[str], str] = str
        """A part key as the platform records it (Discord: its nonce)."""
        if params.shape is PlatformShape.DISCORD:
            self.platform = discord.DiscordPlatform(rng, params, faults)
            self.config, self.limit, self.key_of = DISCORD_CONFIG, DISCORD_LIMIT, nonce_of
        else:
            self.platform = SimPlatform(rng, params, faults)
        self.routes = ChannelRoutes([self.config])

    def runtime(self, engine: Engine, life: int) -> ChannelRuntime:
        """The channel of gateway life ``life``."""
        rng = random.Random(f"supervisor-{self.seed}-{life}")
        channel: Channel
        if isinstance(self.platform, discord.DiscordPlatform):
            channel = DiscordChannel(
                self.config,
                discord.TOKEN,
                engine.clock,
                rng,
                settings=DISCORD_SETTINGS,
                dial=self.platform.dial,
                rest_transport=self.platform.rest_transport(),
            )
        else:
            channel = SimChannel(self.platform, rng, engine.clock)
        return ChannelRuntime(
            self.config,
            channel,
            engine,
            message_chars_max=MESSAGE_CHARS_MAX,
            outbox=OUTBOX,
            rng=random.Random(f"outbox-{self.seed}-{life}"),
        )

    async def settle(self, engine: Engine, budget_s: float) -> bool:
        """Wait (at most ``budget_s``) until every message is acked and no delivery is
        pending; False if that did not happen."""
        try:
            async with asyncio.timeout(budget_s):
                while not await self._settled(engine):
                    await self.platform.changed(SETTLE_POLL_S)
        except TimeoutError:
            return False
        return True

    async def _settled(self, engine: Engine) -> bool:
        record = self.platform.record
        sent = {m.message_id for ms in record.sent_by_peer.values() for m in ms}
        if not sent <= record.acked or not engine.snapshot().settled:
            return False
        return (await engine.store.outbox.counts())[DeliveryState.PENDING] == 0

    def check(
        self, turns: dict[str, TurnRecord], deliveries: list[Delivery], end_at: float
    ) -> list[Finding]:
        """I7, I9 and I6 over the settled world (see the module docstring)."""
        findings: list[Finding] = []
        findings += self._check_inbound(turns, end_at)
        findings += self._check_delivered(turns, deliveries, end_at)
        record = self.platform.record
        findings += [
            Finding("I6", at, f"channel {self.config.id}: {what} after its connection was over")
            for at, what in record.stale_actions
        ]
        findings += [
            Finding("protocol", at, f"channel {self.config.id}: {what}")
            for at, what in record.broken
        ]
        return findings

    def _check_inbound(self, turns: dict[str, TurnRecord], end_at: float) -> list[Finding]:
        record = self.platform.record
        findings = []
        for messages in record.sent_by_peer.values():
            for message in messages:
                turn = turns.get(f"{self.config.id}:{message.message_id}")
                if turn is None:
                    invariant = "I7" if message.message_id in record.acked else "I4"
                    findings.append(
                        Finding(invariant, end_at, f"message {message.message_id} is no turn")
                    )
                elif turn.state is TurnState.REPLIED and (
                    turn.reply is None or message.text not in turn.reply
                ):
                    findings.append(
                        Finding("I1", end_at, f"turn {turn.turn_id}: {turn.reply!r} is not its own")
                    )
        return findings

    def _check_delivered(
        self, turns: dict[str, TurnRecord], deliveries: list[Delivery], end_at: float
    ) -> list[Finding]:
        findings: list[Finding] = []
        by_key = {d.order.key: d for d in deliveries}
        for turn in turns.values():
            if turn.lane != "channel" or turn.state is not TurnState.REPLIED:
                continue
            delivery = by_key.get(f"reply:{turn.run_id}")
            if delivery is None or delivery.state is DeliveryState.PENDING:
                what = "no delivery" if delivery is None else "its delivery still pending"
                findings.append(Finding("I9", end_at, f"replied turn {turn.turn_id}: {what}"))
            elif (
                turn.delivery
                != {"sent": "delivered", "failed": "delivery_failed"}[delivery.state.value]
            ):
                findings.append(
                    Finding(
                        "I9",
                        end_at,
                        f"turn {turn.turn_id} shows delivery {turn.delivery!r}, its delivery is"
                        f" {delivery.state.value}",
                    )
                )
        findings += self._check_seen(deliveries, end_at)
        return findings

    def _check_seen(self, deliveries: list[Delivery], end_at: float) -> list[Finding]:
        """What each person saw: every part of every sent delivery, in the outbox's order,
        and nothing else."""
        findings = []
        parts: dict[str, tuple[int, int, str]] = {}
        owed: dict[str, list[str]] = {}
        for delivery in sorted(deliveries, key=lambda d: d.delivery_id):
            for index, text in enumerate(split_message(delivery.order.text, self.limit)):
                key = self.key_of(f"{delivery.order.key}#{index}")
                parts[key] = (delivery.delivery_id, index, text)
                if delivery.state is DeliveryState.SENT:
                    owed.setdefault(delivery.order.conversation, []).append(key)
        for conversation, seen in self.platform.record.seen.items():
            keys = [key for key, _ in seen]
            twice = [key for key, count in Counter(keys).items() if count > 1]
            if twice:
                findings.append(Finding("I9", end_at, f"{conversation} saw {twice[0]!r} twice"))
            unknown = [key for key in keys if key not in parts]
            if unknown:
                findings.append(
                    Finding("I9", end_at, f"{conversation} saw {unknown[0]!r}, owed by no turn")
                )
            places = [parts[key][:2] for key in keys if key in parts]
            if places != sorted(places):
                findings.append(
                    Finding("I9", end_at, f"{conversation} saw its messages out of order: {keys}")
                )
            wrong = [key for key, text in seen if key in parts and parts[key][2] != text]
            if wrong:
                findings.append(Finding("I9", end_at, f"{conversation}: {wrong[0]} altered"))
        for conversation, keys in owed.items():
            seen_keys = {key for key, _ in self.platform.record.seen.get(conversation, [])}
            missing = [key for key in keys if key not in seen_keys]
            if missing:
                findings.append(
                    Finding(
                        "I9",
                        end_at,
                        f"{conversation} never saw {missing[0]}, recorded sent",
                    )
                )
        return findings
