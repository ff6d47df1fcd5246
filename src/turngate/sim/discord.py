"""A Discord-shaped platform in the simulated world: its gateway in memory, and its people.

:class:`DiscordPlatform` plays Discord for the real
:class:`~turngate.channels.discord.DiscordChannel`, on the loop's virtual time: the channel is
given :meth:`DiscordPlatform.dial` (each call is a new gateway connection of the bot) and
:meth:`DiscordPlatform.rest_transport` (an ``httpx2`` transport onto the platform's REST API,
:class:`~turngate.sim.discord_rest.RestApi`, whose module describes it: messages, typing,
nonces, rate limits and send faults); nothing touches a network. A frame's trip is one loop
iteration (``asyncio.sleep(0)``). A connection and its session, as the platform keeps them,
are ``sim/discord_connection.py``'s records.

The gateway, per connection: HELLO at once (:attr:`DiscordPlatform.hello_delay` can hold it),
IDENTIFY opens a new session (READY, with a ``resume_gateway_url`` of its own, so that its use
shows), RESUME replays the session's dispatches after the bot's ``seq`` then RESUMED (or op 9
``d: false`` for a session that is over), HEARTBEAT is acknowledged. Each person's message is a
``MESSAGE_CREATE`` (a DM: the conversation is the person's DM channel, the peer their user id)
with the session's next sequence number, sent at once on the session's live connection, else
kept for a replay.

*Acked*, in :class:`~turngate.sim.channel.PlatformRecord`'s terms: the bot's channel reports,
in every HEARTBEAT's ``d`` and every RESUME's ``seq``, the sequence number up to which it has
stored everything. Every message dispatched in a session at or before the highest number the
bot reported in it is acked.

Faults (only while the world's faults are on, probabilities from
:class:`~turngate.sim.channel.ChannelParams`): after a dispatch, the connection drops (closed
without a close frame) or the message is dispatched again (same id, next sequence number); at
a heartbeat, the connection turns zombie (no more acks, and nothing more arrives, socket
open; what the bot sends is lost too), the gateway asks for a reconnect (op 7), invalidates
the session (op 9, ``d`` true or false) or closes with 4009 (session timed out); a RESUME may
be answered with op 9. The REST API's faults are its own module's; they share the platform's
record, rng and :attr:`DiscordPlatform.injected`.

Recorded for the checker (``sim/channel_world.py``): what each person sent, what was acked,
frames the bot sent on a connection after a newer one was dialled (stale actions, I6), and
whatever the bot did on the gateway that Discord forbids (``broken``: a frame before HELLO, a
second IDENTIFY, a reported sequence never dispatched, a RESUME away from the
``resume_gateway_url``...); what each conversation saw is recorded by the REST API. A send on
a connection the platform closed before the bot noticed is not stale: it raises
:class:`GatewayClosedError`, as a socket would.

Idealisations: real Discord does not replay a session that is over; this one dispatches again,
at the start of each new session, every message the bot never reported, so that "every
message a person sent became a turn" stays checkable in every seed. A message the bot
reported is never dispatched again: if it is no turn, the channel broke I7. One session at a
time: IDENTIFY ends the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx2

from turngate.channels.discord.gateway import Op
from turngate.channels.discord.socket import GatewayClosedError, GatewaySocket
from turngate.sim.channel import ChannelParams, PlatformMessage, PlatformRecord
from turngate.sim.discord_connection import GatewaySession, ServerConnection
from turngate.sim.discord_rest import API_URL, BOT_ID, MESSAGE_ID_BASE, TOKEN, RestApi
from turngate.sim.world import Faults

GATEWAY_URL = "wss://sim-discord/"
RESUME_URL = "wss://sim-discord-resume/"
USER_ID_BASE = 200_000_000_000_000_000
DM_CHANNEL_BASE = 300_000_000_000_000_000
HEARTBEAT_MS = 5_000
LONG_TEXT_CHARS = (1_900, 4_000)
"""A long message's length (Nitro users may write 4,000): its reply needs two or three."""
ACK = json.dumps({"op": Op.HEARTBEAT_ACK})
END_SESSION_CODES = frozenset({1000, 1001})
"""A bot's close codes that end its session at once (any other keeps it resumable)."""

Observer = Callable[[str, ServerConnection], None]
"""Told of each step of a connection: ``dial``, ``hello``, ``identify``, ``resume``,
``ready``, ``resumed``, ``heartbeat``, ``closed``."""


class _BotSocket:
    """The bot's end of a :class:`ServerConnection` (a :class:`GatewaySocket`)."""

    def __init__(self, platform: DiscordPlatform, connection: ServerConnection) -> None:
        self._platform = platform
        self.connection = connection

    async def send(self, text: str) -> None:
        await self._platform._from_bot(self.connection, text)

    async def recv(self) -> str | bytes:
        connection = self.connection
        while not connection.frames or connection.closed_by == "bot":
            if connection.closed:
                raise GatewayClosedError(connection.close_code)
            connection.waiter = asyncio.get_running_loop().create_future()
            try:
                await connection.waiter
            finally:
                connection.waiter = None
        frame = connection.frames.popleft()
        if frame is connection.hello:
            connection.hello_received_at = asyncio.get_running_loop().time()
        return frame

    async def close(self, code: int) -> None:
        await self._platform._bot_closed(self.connection, code)


class DiscordPlatform:
    """Discord, in memory (see the module docstring). Faults only while ``faults.on``."""

    def __init__(self, rng: random.Random, params: ChannelParams, faults: Faults) -> None:
        self.rng = rng
        self.params = params
        self.faults = faults
        self.record = PlatformRecord()
        self.connections: list[ServerConnection] = []
        self.observers: list[Observer] = []
        self.hello_delay: Callable[[ServerConnection], float] = lambda connection: 0.0
        """Seconds between a dial and its HELLO (tests hold it)."""
        self.injected: Counter[str] = Counter()
        """Faults injected, by kind (for tests and for a look at a seed)."""
        self._unacked: dict[str, PlatformMessage] = {}
        self._dm_of_peer: dict[str, str] = {}
        self._dm_channels: set[str] = set()
        self._sessions: dict[str, GatewaySession] = {}
        self._session: GatewaySession | None = None
        self._messages = 0
        self._changed = asyncio.Event()
        self._rest = RestApi(
            record=self.record,
            rng=rng,
            params=params,
            faults=faults,
            changed=self._changed,
            injected=self.injected,
            dm_channels=self._dm_channels,
        )

    async def changed(self, at_most_s: float) -> None:
        """Until the next ack or send the platform takes, or ``at_most_s``."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._changed.wait()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _broken(self, connection: ServerConnection, what: str) -> None:
        self.record.broken.append((self._now(), f"connection {connection.number}: {what}"))

    def _notify(self, what: str, connection: ServerConnection) -> None:
        for observer in self.observers:
            observer(what, connection)

    # -- the people -------------------------------------------------------------------------

    async def people(self) -> None:
        """Every person sends their messages, each after a think time."""
        for index in range(self.params.peers):
            dm = str(DM_CHANNEL_BASE + index)
            self._dm_of_peer[str(USER_ID_BASE + index)] = dm
            self._dm_channels.add(dm)
        async with asyncio.TaskGroup() as group:
            for index in range(self.params.peers):
                group.create_task(self._person(index))

    async def _person(self, index: int) -> None:
        peer = str(USER_ID_BASE + index)
        sent = self.record.sent_by_peer.setdefault(peer, [])
        for number in range(self.params.messages_per_peer):
            if self.params.think_max_s:
                await asyncio.sleep(self.rng.uniform(0.0, self.params.think_max_s))
            text = f"p{index} says {number}"
            if self.params.p_long_text and self.rng.random() < self.params.p_long_text:
                chars = self.rng.randint(*LONG_TEXT_CHARS)
                text = (text + ": " + "lorem ipsum " * (chars // 12))[:chars].rstrip()
            self._messages += 1
            message_id = str(MESSAGE_ID_BASE + self._messages)
            message = PlatformMessage(self._messages, message_id, peer, text)
            sent.append(message)
            self._unacked[message_id] = message
            if self._session is not None:
                self._dispatch(self._session, message)

    def _message_frame(self, message: PlatformMessage, seq: int) -> str:
        data = {
            "id": message.message_id,
            "channel_id": self._dm_of_peer[message.peer],
            "author": {"id": message.peer, "username": f"user{message.peer[-4:]}"},
            "content": message.text,
            "type": 0,
            "tts": False,
            "mentions": [],
            "attachments": [],
        }
        return json.dumps({"op": Op.DISPATCH, "t": "MESSAGE_CREATE", "s": seq, "d": data})

    def _dispatch(
        self, session: GatewaySession, message: PlatformMessage, *, again: bool = True
    ) -> None:
        """Give ``message`` the session's next number; send it if the session is live."""
        session.last_seq += 1
        frame = self._message_frame(message, session.last_seq)
        session.dispatches.append((session.last_seq, message.message_id, frame))
        connection = session.connection
        if connection is None or connection.closed:
            return  # kept for a replay
        connection.push(frame)
        if not self.faults.on:
            return
        if again and self.rng.random() < self.params.p_duplicate:
            self.injected["duplicate"] += 1
            self._dispatch(session, message, again=False)
        elif self.rng.random() < self.params.p_drop:
            self.injected["drop"] += 1
            self.drop(connection)

    def _event(self, session: GatewaySession, kind: str, data: dict[str, Any]) -> str:
        session.last_seq += 1
        frame = json.dumps({"op": Op.DISPATCH, "t": kind, "s": session.last_seq, "d": data})
        session.dispatches.append((session.last_seq, None, frame))
        return frame

    # -- connections ---------------------------------------------------------------------------

    async def dial(self, url: str) -> GatewaySocket:
        """A new gateway connection of the bot; HELLO follows (after :attr:`hello_delay`)."""
        await asyncio.sleep(0)  # the connection's opening handshake
        connection = ServerConnection(len(self.connections) + 1, url)
        self.connections.append(connection)
        self._notify("dial", connection)
        delay_s = self.hello_delay(connection)
        if delay_s > 0:
            loop = asyncio.get_running_loop()
            connection.hello_timer = loop.call_later(delay_s, self._hello, connection)
        else:
            self._hello(connection)
        return _BotSocket(self, connection)

    def _hello(self, connection: ServerConnection) -> None:
        connection.hello_timer = None
        if connection.closed:
            return
        hello = {"op": Op.HELLO, "d": {"heartbeat_interval": HEARTBEAT_MS}}
        connection.hello = json.dumps(hello)
        connection.push(connection.hello)
        self._notify("hello", connection)

    def drop(self, connection: ServerConnection, code: int | None = None) -> None:
        """Close ``connection`` from the platform's side (``code`` None: no close frame)."""
        if connection.closed:
            return
        connection.close("server", code, self._now())
        self._notify("closed", connection)

    def send_frame(self, connection: ServerConnection, frame: dict[str, Any]) -> None:
        """Send the bot any frame on ``connection`` (tests)."""
        connection.push(json.dumps(frame))

    async def _bot_closed(self, connection: ServerConnection, code: int) -> None:
        if connection.closed:
            return
        connection.close("bot", code, self._now())
        session = connection.session
        if session is not None and code in END_SESSION_CODES:
            self._end_session(session)
        self._notify("closed", connection)
        await asyncio.sleep(0)  # the closing handshake's trip

    def _end_session(self, session: GatewaySession) -> None:
        session.alive = False
        if self._session is session:
            self._session = None

    async def _from_bot(self, connection: ServerConnection, text: str) -> None:
        """A frame the bot sends: checked, then (a trip later) answered."""
        newest = len(self.connections)
        if connection.number < newest:
            self.record.stale_actions.append(
                (
                    self._now(),
                    f"connection {connection.number}: a frame {text[:60]!r} sent"
                    f" after connection {newest} was dialled",
                )
            )
        if connection.closed:
            raise GatewayClosedError(connection.close_code)
        try:
            frame = json.loads(text)
            op = frame["op"]
        except (ValueError, TypeError, KeyError):
            self._broken(connection, f"a frame that is not a gateway frame: {text[:60]!r}")
            self.drop(connection, 4002)
            return
        if connection.hello_received_at is None:
            self._broken(connection, f"op {op} sent before HELLO was received")
        if op in (Op.IDENTIFY, Op.RESUME):
            connection.handshakes.append("identify" if op == Op.IDENTIFY else "resume")
        await asyncio.sleep(0)  # the frame's trip
        if connection.closed or connection.zombie:
            return  # lost on the way
        data = frame.get("d")
        if op == Op.HEARTBEAT:
            self._heartbeat(connection, data)
        elif op in (Op.IDENTIFY, Op.RESUME):
            if len(connection.handshakes) > 1:
                self._broken(connection, f"a second handshake: {connection.handshakes}")
                self.drop(connection, 4005)  # already authenticated
            elif not isinstance(data, dict) or data.get("token") != TOKEN:
                self.drop(connection, 4004)  # authentication failed
            elif op == Op.IDENTIFY:
                self._identify(connection)
            else:
                self._resume(connection, data)

    # -- the gateway's answers -----------------------------------------------------------------

    def _heartbeat(self, connection: ServerConnection, seq: object) -> None:
        self._notify("heartbeat", connection)
        session = connection.session
        if session is not None:
            self._reported(connection, session, seq)
        connection.push(ACK)  # lost if the connection is a zombie
        if session is None or not self.faults.on or connection.zombie:
            return
        params, draw = self.params, self.rng.random()
        if draw < (threshold := params.p_zombie):
            self.injected["zombie"] += 1
            connection.zombie = True
        elif draw < (threshold := threshold + params.p_reconnect):
            self.injected["reconnect"] += 1
            connection.push(json.dumps({"op": Op.RECONNECT, "d": None}))
        elif draw < (threshold := threshold + params.p_invalid):
            resumable = self.rng.random() < 0.5
            self.injected[f"invalid_session_{str(resumable).lower()}"] += 1
            if not resumable:
                self._end_session(session)
            connection.push(json.dumps({"op": Op.INVALID_SESSION, "d": resumable}))
        elif draw < threshold + params.p_session_timeout:
            self.injected["session_timeout"] += 1
            self._end_session(session)
            self.drop(connection, 4009)  # session timed out

    def _reported(self, connection: ServerConnection, session: GatewaySession, seq: object) -> None:
        """The bot says everything up to ``seq`` of ``session`` is stored."""
        if seq is None:
            return
        if not isinstance(seq, int) or isinstance(seq, bool) or seq > session.last_seq:
            self._broken(
                connection, f"reported sequence {seq!r}; the last dispatched is {session.last_seq}"
            )
            return
        if seq <= session.reported_seq:
            return
        session.reported_seq = seq
        dispatches = session.dispatches
        while session.acked_upto < len(dispatches) and dispatches[session.acked_upto][0] <= seq:
            message_id = dispatches[session.acked_upto][1]
            session.acked_upto += 1
            if message_id is not None:
                self.record.acked.add(message_id)
                self._unacked.pop(message_id, None)
        self._changed.set()

    def _identify(self, connection: ServerConnection) -> None:
        self._notify("identify", connection)
        if self._session is not None:
            self._end_session(self._session)
        session = GatewaySession(f"{self.rng.getrandbits(64):016x}")
        self._sessions[session.session_id] = session
        self._session = session
        connection.session = session
        ready = {
            "v": 10,
            "session_id": session.session_id,
            "resume_gateway_url": RESUME_URL,
            "user": {"id": BOT_ID, "username": "sim-bot", "bot": True},
            "guilds": [],
        }
        connection.push(self._event(session, "READY", ready))
        self._notify("ready", connection)
        session.connection = connection
        # The idealisation: every message never reported, again (a drop on the way leaves
        # the rest in the session, for a resume).
        for message in sorted(self._unacked.values(), key=lambda m: m.seq):
            self._dispatch(session, message)

    def _resume(self, connection: ServerConnection, data: dict[str, Any]) -> None:
        self._notify("resume", connection)
        session = self._sessions.get(str(data.get("session_id")))
        if session is None:
            connection.push(json.dumps({"op": Op.INVALID_SESSION, "d": False}))
            return
        seq = data.get("seq")
        self._reported(connection, session, seq)
        if urlsplit(connection.url).netloc != urlsplit(RESUME_URL).netloc:
            self._broken(connection, f"RESUME on {connection.url}, not the resume_gateway_url")
        if self.faults.on and session.alive and self.rng.random() < self.params.p_invalid:
            self.injected["invalid_resume"] += 1
            self._end_session(session)
        if not session.alive:
            connection.push(json.dumps({"op": Op.INVALID_SESSION, "d": False}))
            return
        if not isinstance(seq, int) or seq > session.last_seq:
            self.drop(connection, 4007)  # invalid seq
            return
        old = session.connection
        if old is not None and old is not connection:
            old.session = None
        connection.session = session
        session.connection = connection
        for number, message_id, frame in session.dispatches:
            if number <= seq:
                continue
            connection.push(frame)
            if message_id is not None and self.faults.on and self.rng.random() < self.params.p_drop:
                self.injected["drop"] += 1
                self.drop(connection)
                return
        connection.push(self._event(session, "RESUMED", {}))
        self._notify("resumed", connection)

    # -- REST ------------------------------------------------------------------------------------

    @property
    def rate_limited(self) -> int:
        """429s answered because the bot sent past a limit its headers had shown."""
        return self._rest.rate_limited

    def rest_transport(self) -> httpx2.AsyncBaseTransport:
        """The REST API (``sim/discord_rest.py``), for one bot's ``DiscordRest`` (no network)."""
        return self._rest.transport()


__all__ = [
    "API_URL",
    "BOT_ID",
    "GATEWAY_URL",
    "RESUME_URL",
    "TOKEN",
    "DiscordPlatform",
    "Observer",
    "ServerConnection",
]
