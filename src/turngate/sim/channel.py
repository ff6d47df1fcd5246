"""A chat platform in the simulated world, and the channel that connects the gateway to it.

:class:`SimPlatform` is an IM platform with people on it: each person sends messages (each
with the platform's own id) to the bot; the platform hands them to the bot's current
connection and keeps each until the bot acks it, handing it again to the next connection
(resume). Its faults, drawn from the seed: a connection that drops, one that goes silent (a
zombie: no heartbeat acks), a message handed twice, a send that fails (sometimes with a
``retry_after``) or, rarely, is refused for good. What the people see is kept: each part of
a reply once, by its key (the platform deduplicates, like ``docs/websocket-im-channel.md``'s
server), in the order it arrived.

:class:`SimChannel` is the gateway's side: a real
:class:`~turngate.channels.supervisor.Supervisor` dials the platform, one generation per
connection, heartbeats it, and hands each message to the channel's inbox, acking it only once
``accept`` returned. Every action a connection takes is checked by the platform against the
connection's life: an ack, a heartbeat or a handshake from a connection that is already over
is a stale actor (I6), recorded for the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace

from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.generation import Generation
from turngate.channels.supervisor import ConnectionSnapshot, Supervisor, SupervisorSettings
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ChannelError, DeliveryRefusedError
from turngate.sim.world import Faults

CHANNEL_ID = "im"
HEARTBEAT_S = 5.0
ACK_DELAY_S = 0.05
"""Acks go out on a timer, as cumulative acks often do: a callback that can fire after its
connection is over (seed 004's shape), which only its generation's guard stops."""
LIMIT = 60
"""The platform's message limit (short, so that replies are split into parts)."""


class PlatformShape(enum.StrEnum):
    """Which platform a seed's people are on."""

    IM = "im"
    """:class:`SimPlatform`, reached by :class:`SimChannel`."""
    DISCORD = "discord"
    """``sim/discord.py``'s platform, reached by the real Discord channel."""


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """A seed's platform: its people and its faults."""

    peers: int
    messages_per_peer: int
    think_max_s: float
    p_duplicate: float
    p_drop: float
    p_zombie: float
    p_send_fail: float
    p_retry_after: float
    p_refuse: float
    shape: PlatformShape = PlatformShape.IM
    p_reconnect: float = 0.0
    """Discord: chance, per heartbeat, that the gateway asks for a reconnect (op 7)."""
    p_invalid: float = 0.0
    """Discord: chance, per heartbeat and per resume, of an INVALID_SESSION (op 9)."""
    p_session_timeout: float = 0.0
    """Discord: chance, per heartbeat, that the gateway closes with 4009 (not resumable)."""
    p_long_text: float = 0.0
    """Discord: chance a message is long enough that its reply needs two messages."""

    @classmethod
    def draw(cls, rng: random.Random) -> ChannelParams:
        """A platform drawn from ``rng``."""
        return cls(
            peers=rng.randint(1, 6),
            messages_per_peer=rng.randint(1, 8),
            think_max_s=rng.choice([0.0, 0.5, 3.0]),
            p_duplicate=rng.choice([0.0, 0.1, 0.3]),
            p_drop=rng.choice([0.0, 0.02, 0.1]),
            p_zombie=rng.choice([0.0, 0.02, 0.05]),
            p_send_fail=rng.choice([0.0, 0.1, 0.3]),
            p_retry_after=rng.choice([0.0, 0.5]),
            p_refuse=rng.choice([0.0, 0.0, 0.02]),
        )

    def as_discord(self, rng: random.Random) -> ChannelParams:
        """The same people and faults on a Discord-shaped platform, with its own faults drawn
        from ``rng`` (after the rest: the draws before are those of an IM platform)."""
        return replace(
            self,
            shape=PlatformShape.DISCORD,
            p_reconnect=rng.choice([0.0, 0.02, 0.05]),
            p_invalid=rng.choice([0.0, 0.03, 0.08]),
            p_session_timeout=rng.choice([0.0, 0.02, 0.05]),
            p_long_text=rng.choice([0.0, 0.0, 0.1]),
        )

    def line(self) -> str:
        """The parameters on one line."""
        discord = ""
        if self.shape is PlatformShape.DISCORD:
            discord = (
                f" shape=discord p_reconnect={self.p_reconnect} p_invalid={self.p_invalid}"
                f" p_session_timeout={self.p_session_timeout} p_long_text={self.p_long_text}"
            )
        return (
            f"peers={self.peers} messages/peer={self.messages_per_peer}"
            f" p_duplicate={self.p_duplicate} p_drop={self.p_drop} p_zombie={self.p_zombie}"
            f" p_send_fail={self.p_send_fail} p_retry_after={self.p_retry_after}"
            f" p_refuse={self.p_refuse}{discord}"
        )


@dataclass(frozen=True, slots=True)
class PlatformMessage:
    """A person's message, as the platform keeps it."""

    seq: int
    message_id: str
    peer: str
    text: str


@dataclass(slots=True)
class _Connection:
    number: int
    open: bool = True
    zombie: bool = False
    inbox: asyncio.Queue[PlatformMessage] = field(default_factory=asyncio.Queue)


@dataclass(slots=True)
class PlatformRecord:
    """What happened on the platform, for the checker."""

    sent_by_peer: dict[str, list[PlatformMessage]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    """Platform message ids the bot acked (it said they were stored)."""
    seen: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    """Per conversation, what the person saw: ``(part key, text)`` in arrival order, once
    per key (Discord's platform keys a part by its nonce)."""
    stale_actions: list[tuple[float, str]] = field(default_factory=list)
    """Actions of connections that were already over: ``(time, what)``."""
    refused: set[str] = field(default_factory=set)
    """Part keys the platform refused for good."""
    broken: list[tuple[float, str]] = field(default_factory=list)
    """What the bot did that the platform's protocol forbids: ``(time, what)``."""


class SimPlatform:
    """The platform (see the module docstring). Faults only while ``faults()`` is true."""

    def __init__(self, rng: random.Random, params: ChannelParams, faults: Faults) -> None:
        """``faults`` is the world's switch: faults only in the safety phase."""
        self.rng = rng
        self.params = params
        self.faults = faults
        self.record = PlatformRecord()
        self._unacked: dict[str, PlatformMessage] = {}
        self._seq = 0
        self._connections = 0
        self._current: _Connection | None = None
        self._changed = asyncio.Event()

    async def changed(self, at_most_s: float) -> None:
        """Until the next ack or send the platform takes, or ``at_most_s``."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._changed.wait()

    # -- the people -------------------------------------------------------------------------

    async def people(self) -> None:
        """Every person sends their messages, each after a think time."""
        async with asyncio.TaskGroup() as group:
            for index in range(self.params.peers):
                group.create_task(self._person(f"p{index}"))

    async def _person(self, peer: str) -> None:
        sent = self.record.sent_by_peer.setdefault(peer, [])
        for index in range(self.params.messages_per_peer):
            if self.params.think_max_s:
                await asyncio.sleep(self.rng.uniform(0.0, self.params.think_max_s))
            self._seq += 1
            message = PlatformMessage(self._seq, f"{peer}-{index}", peer, f"{peer} says {index}")
            sent.append(message)
            self._unacked[message.message_id] = message
            self._hand(message)

    def _hand(self, message: PlatformMessage) -> None:
        connection = self._current
        if connection is None or not connection.open:
            return  # handed on the next connection's resume
        connection.inbox.put_nowait(message)
        if self.faults.on and self.rng.random() < self.params.p_duplicate:
            connection.inbox.put_nowait(message)

    # -- the bot's connection ----------------------------------------------------------------

    def dial(self) -> _Connection:
        """A new connection of the bot (the old one, if any, is over): it gets every message
        not acked yet, in order."""
        if self._current is not None:
            self._current.open = False
        self._connections += 1
        connection = _Connection(self._connections)
        self._current = connection
        for message in sorted(self._unacked.values(), key=lambda m: m.seq):
            connection.inbox.put_nowait(message)
        return connection

    def hang_up(self, connection: _Connection) -> None:
        """The bot closed ``connection``."""
        connection.open = False

    def ack(self, connection: _Connection, message_id: str, at: float) -> None:
        """The bot says ``message_id`` is stored."""
        if not self._alive(connection, at, f"ack of {message_id}"):
            return
        self.record.acked.add(message_id)
        self._unacked.pop(message_id, None)
        self._changed.set()

    def heartbeat(self, connection: _Connection, at: float) -> bool:
        """A heartbeat; True when the platform answers it (an ack comes back)."""
        if not self._alive(connection, at, "heartbeat"):
            return False
        if self.faults.on and not connection.zombie and self.rng.random() < self.params.p_zombie:
            connection.zombie = True
        return not connection.zombie

    def maybe_drop(self, connection: _Connection) -> bool:
        """Whether the platform drops ``connection`` now (a fault)."""
        if self.faults.on and self.rng.random() < self.params.p_drop:
            connection.open = False
            return True
        return False

    def _alive(self, connection: _Connection, at: float, what: str) -> bool:
        if connection.open:
            return True
        # The platform would ignore it; a gateway that acts through a finished connection
        # has a stale actor, which I6 forbids.
        self.record.stale_actions.append((at, f"connection {connection.number}: {what}"))
        return False

    # -- sends (the platform's REST side) ------------------------------------------------------

    def send(self, conversation: str, text: str, part_key: str) -> None:
        """Take one part of a reply, or fail (transiently, or for good)."""
        if self.faults.on and self.rng.random() < self.params.p_send_fail:
            if self.rng.random() < self.params.p_refuse:
                self.record.refused.add(part_key)
                raise DeliveryRefusedError(f"sim platform: {part_key} refused (injected)")
            retry_after = self.rng.uniform(0.5, 5.0)
            after = retry_after if self.rng.random() < self.params.p_retry_after else None
            raise ChannelError(f"sim platform: {part_key} failed (injected)", retry_after_s=after)
        seen = self.record.seen[conversation]
        if all(key != part_key for key, _ in seen):
            seen.append((part_key, text))
        self._changed.set()


class SimChannel:
    """The gateway's channel to :class:`SimPlatform` (see the module docstring)."""

    def __init__(self, platform: SimPlatform, rng: random.Random, clock: Clock) -> None:
        self.platform = platform
        settings = SupervisorSettings(
            backoff=BackoffPolicy(base_s=0.5, cap_s=10.0, healthy_after_s=5.0),
            ready_timeout_s=10.0,
            lost_errors=(ChannelError, OSError),
        )
        self._supervisor: Supervisor[None] = Supervisor(
            CHANNEL_ID,
            self._connect,
            clock=clock,
            rng=rng,
            settings=settings,
        )
        self._inbox: Inbox | None = None

    channel_id = CHANNEL_ID
    kind = "sim"

    @property
    def sender(self) -> SimChannel:
        return self

    @property
    def limit(self) -> int:
        return LIMIT

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        await asyncio.sleep(0)  # a network round trip: other tasks run in between
        self.platform.send(conversation, text, part_key)

    async def typing(self, conversation: str) -> None:
        del conversation

    def connection(self) -> ConnectionSnapshot:
        return self._supervisor.snapshot()

    async def aclose(self) -> None:
        """Nothing to release."""

    async def run(self, inbox: Inbox) -> None:
        self._inbox = inbox
        await self._supervisor.run()

    async def _connect(self, gen: Generation[None]) -> None:
        platform = self.platform
        loop = asyncio.get_running_loop()
        connection = platform.dial()
        try:
            gen.identifying()
            gen.ready()
            gen.start_heartbeat(HEARTBEAT_S, lambda: self._beat(gen, connection))
            ack = gen.guard(self._ack)
            while True:
                message = await connection.inbox.get()
                gen.received()
                if platform.maybe_drop(connection):
                    raise ChannelError("sim platform: connection dropped (injected)")
                await self._accept(message)
                loop.call_later(ACK_DELAY_S, ack, connection, message.message_id)
        finally:
            platform.hang_up(connection)

    def _ack(self, connection: _Connection, message_id: str) -> None:
        self.platform.ack(connection, message_id, asyncio.get_running_loop().time())

    async def _beat(self, gen: Generation[None], connection: _Connection) -> None:
        await asyncio.sleep(0)  # the heartbeat frame's trip
        if self.platform.heartbeat(connection, asyncio.get_running_loop().time()):
            gen.received()

    async def _accept(self, message: PlatformMessage) -> None:
        assert self._inbox is not None
        inbound = InboundMessage(message.message_id, message.peer, message.peer, message.text)
        await self._inbox.accept(inbound)
