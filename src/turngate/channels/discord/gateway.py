"""Discord's gateway protocol, one connection per generation of the channel's supervisor.

Why not discord.py: it runs its own reconnect loop and a heartbeat *thread* whose callbacks
outlive the socket they were made for (seed 004's "Attempted to reconnect zombie connection"
is exactly that), and it dispatches each event to handlers that run on their own; we need the
loop, the heartbeat and every callback to belong to one
:class:`~turngate.channels.generation.Generation`, and a message to be stored before we move
past its sequence number. The protocol itself is small; this module speaks it.

One connection (``→`` we send, ``←`` Discord sends)::

    ← op 10 HELLO {heartbeat_interval}       heartbeat from now on, first beat jittered
    → op 2 IDENTIFY {token, intents, ...}    or → op 6 RESUME {token, session_id, seq}
    ← op 0 READY {session_id, resume_gateway_url, user}    (or replayed events, then RESUMED)
    ← op 0 MESSAGE_CREATE ..., each with its sequence number s
    → op 1 HEARTBEAT {d: seq}  ← op 11 HEARTBEAT_ACK
    ← op 1 HEARTBEAT (beat now), op 7 RECONNECT, op 9 INVALID_SESSION {d: resumable}

How it keeps the gateway's promise:

- **Identify exactly once per connection, never zero.** IDENTIFY or RESUME goes out in answer
  to this connection's HELLO, on this connection, once: no frame is sent before the socket is
  open and the handshake done (the field's "silent drop" was an identify sent into a socket not
  ready yet). A connection whose HELLO never comes misses the supervisor's ready deadline and
  is dialled again, which identifies again.
- **Zombies.** Liveness is the heartbeat's *ack*: no HEARTBEAT_ACK before the next beat is a
  zombie (Discord's rule: events flowing do not prove the heartbeat got through). The
  generation ends, the socket is closed with a code that keeps the session (4000, not 1000,
  which would end it), and the next generation RESUMEs it on the ``resume_gateway_url``.
- **Sequence numbers advance only past what is stored.** Dispatches are taken in order by one
  task per connection; the sequence the channel resumes from (and reports in heartbeats) moves
  past a MESSAGE_CREATE only once :meth:`Inbox.accept <turngate.channels.base.Inbox.accept>`
  returned. A connection lost with messages received but not stored resumes before them:
  Discord replays them, and the inbox deduplicates by message id.
- **op 7** (reconnect) ends the connection and resumes; **op 9** with ``d: true`` resumes, with
  ``d: false`` forgets the session and identifies afresh; so do close codes 4007 and 4009.
  Close codes that retrying cannot fix (4004 bad token, 4013/4014 intents, 4010-4012) stop the
  channel with :class:`~turngate.errors.ChannelRefusedError`, naming what to change.
- **Generations.** The frame handler and the send path are guarded by the connection's
  generation: kept past their connection (a timer, a late callback), they do nothing and are
  counted (seed 004).
- **A peer cannot crash us.** A frame that is not JSON, or lacks what its op needs, is logged
  at WARNING (at most :data:`~turngate.channels.frames.WARNINGS_PER_CONNECTION_MAX` per
  connection) and ignored.

The socket is a :class:`~turngate.channels.discord.socket.GatewaySocket` (``websockets`` in
production, memory in the simulator), so the same code runs on virtual time.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import platform
from dataclasses import dataclass
from typing import Any

from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.discord.messages import MessageFilter, snowflake
from turngate.channels.discord.socket import GatewayClosedError, GatewaySocket
from turngate.channels.frames import BadFrames, integer, number
from turngate.channels.generation import Generation, SessionCounts
from turngate.errors import ChannelError, ChannelRefusedError, TurngateError

log = logging.getLogger("turngate.channels")

HEARTBEAT_S_MIN = 0.01
HEARTBEAT_S_MAX = 3_600.0
CLOSE_KEEP_SESSION = 4000
"""Our close code when the next connection resumes: 1000 and 1001 end the session."""
CLOSE_END_SESSION = 1000


class Op(enum.IntEnum):
    """Gateway opcodes this channel sends or handles."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class Intent(enum.IntFlag):
    """Gateway intents (what Discord sends the bot) that a text bot may ask for."""

    GUILDS = 1 << 0
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15
    """Privileged: enable it in the Developer Portal. Without it, guild messages that neither
    mention the bot nor are DMs arrive without their text."""


FATAL_CLOSE_CODES: dict[int, str] = {
    4004: "Discord refused the bot token in {token_env} (4004 authentication failed); set the"
    " bot's token and restart",
    4010: "Discord refused the shard (4010 invalid shard)",
    4011: "Discord requires this bot to shard (4011 sharding required); turngate runs one"
    " connection per bot",
    4012: "Discord refused the API version (4012 invalid API version)",
    4013: "Discord refused the intents {intents} (4013 invalid intents); fix the channel's"
    " intents setting",
    4014: "Discord refused the intents {intents} (4014 disallowed intents): enable the"
    " privileged ones (Message Content) for the bot in the Developer Portal (Bot, Privileged"
    " Gateway Intents), or drop them from the channel's intents setting",
}
"""Close codes that retrying cannot fix: the channel stops with this text."""
NEW_SESSION_CLOSE_CODES = frozenset({4007, 4009})
"""Close codes after which the session cannot be resumed (invalid seq, session timed out)."""


@dataclass(frozen=True, slots=True)
class ResumeState:
    """What the next connection resumes: the session, the sequence number everything up to
    which is stored, and where to resume it."""

    session_id: str
    seq: int
    resume_url: str


@dataclass(frozen=True, slots=True)
class _Dispatch:
    seq: int
    message: InboundMessage | None
    """The message to store first; None for an event that only moves the sequence on."""


class GatewayLink:
    """One connection's protocol: its frame handler, its dispatch taker, its sends."""

    def __init__(
        self,
        *,
        channel_id: str,
        gen: Generation[ResumeState],
        socket: GatewaySocket,
        inbox: Inbox,
        token: str,
        token_env: str,
        intents: int,
        messages: MessageFilter,
        counts: SessionCounts,
        accept_timeout_s: float,
        backlog_max: int,
        base_url: str,
    ) -> None:
        self.channel_id = channel_id
        self.name = f"channel {channel_id}: generation {gen.number}"
        self.gen = gen
        self.socket = socket
        self.inbox = inbox
        self._token = token
        self._token_env = token_env
        self._intents = intents
        self._messages = messages
        self._counts = counts
        self._accept_timeout_s = accept_timeout_s
        self._backlog_max = backlog_max
        self._base_url = base_url
        self.hello_seen = False
        self.ready = False
        resume = gen.resume
        self.session_id = None if resume is None else resume.session_id
        self.resume_url = base_url if resume is None else resume.resume_url
        self.stored_seq = None if resume is None else resume.seq
        """Everything up to this sequence number is stored (or was not for us)."""
        self.backlog: asyncio.Queue[_Dispatch] = asyncio.Queue()
        self._taker_started = False
        self.bad_frames = BadFrames(self.name, [token])
        self.handle_frame = gen.guard(self._handle_frame)
        self._send_frame = gen.guard(self.socket.send)

    # Inbound frames.

    def _handle_frame(self, raw: str | bytes) -> None:
        # Whoever hands the frame (the reader, or a callback kept too long), what it means
        # for the connection (reconnect, identify afresh, stop) ends the generation; it is
        # never an exception in the caller.
        try:
            self._on_frame(raw)
        except ChannelError as exc:
            self.gen.fail(exc)

    def _on_frame(self, raw: str | bytes) -> None:
        frame = self.bad_frames.json_object(raw)
        if frame is None:
            return
        op = frame.get("op")
        if op == Op.DISPATCH:
            self._on_dispatch(frame)
        elif op == Op.HEARTBEAT_ACK:
            self.gen.heartbeat_acked()
        elif op == Op.HEARTBEAT:
            self.gen.spawn(self._beat())  # Discord asks for a beat now
        elif op == Op.HELLO:
            self._on_hello(frame)
        elif op == Op.RECONNECT:
            raise ChannelError("Discord asked the bot to reconnect (op 7); resuming")
        elif op == Op.INVALID_SESSION:
            self._on_invalid_session(frame)
        else:
            self.bad_frames.warn("ignored a frame with an unknown op", raw)

    def _on_hello(self, frame: dict[str, Any]) -> None:
        if self.hello_seen:
            self.bad_frames.warn("ignored a second HELLO", frame)
            return
        data = frame.get("d")
        interval_ms = data.get("heartbeat_interval") if isinstance(data, dict) else None
        if not (number(interval_ms) and HEARTBEAT_S_MIN <= interval_ms / 1000 <= HEARTBEAT_S_MAX):
            raise ChannelError(f"Discord's HELLO has no usable heartbeat_interval: {data!r:.80}")
        self.hello_seen = True
        self.gen.start_heartbeat(interval_ms / 1000, self._beat, acks=True)
        self.gen.spawn(self._identify_or_resume())
        self._start_taker()

    async def _identify_or_resume(self) -> None:
        resume = self.gen.resume
        if resume is not None:
            await self.send({"op": Op.RESUME, "d": self._resume_payload(resume)})
            return
        await self.send({"op": Op.IDENTIFY, "d": self._identify_payload()})

    def _identify_payload(self) -> dict[str, Any]:
        return {
            "token": self._token,
            "intents": self._intents,
            "properties": {
                "os": platform.system().lower(),
                "browser": "turngate",
                "device": "turngate",
            },
        }

    def _resume_payload(self, resume: ResumeState) -> dict[str, Any]:
        return {"token": self._token, "session_id": resume.session_id, "seq": resume.seq}

    def _on_invalid_session(self, frame: dict[str, Any]) -> None:
        if frame.get("d") is True:
            raise ChannelError("Discord invalidated the connection (op 9, resumable); resuming")
        self._forget_session()
        raise ChannelError("Discord ended the session (op 9); identifying afresh")

    def _forget_session(self) -> None:
        # Both: the taker may still store a message before the generation is over, and must
        # not make the forgotten session resumable again.
        self.session_id = None
        self.gen.resume = None

    def _on_dispatch(self, frame: dict[str, Any]) -> None:
        seq, kind, data = frame.get("s"), frame.get("t"), frame.get("d")
        if not (integer(seq) and isinstance(kind, str)):
            self.bad_frames.warn("ignored a dispatch without s or t", frame)
            return
        if kind == "READY":
            self._on_ready(seq, data)
        elif kind == "RESUMED":
            self._on_resumed(seq)
        message = None
        if kind == "MESSAGE_CREATE" and isinstance(data, dict):
            message = self._messages.inbound(data)
        if self.backlog.qsize() >= self._backlog_max:
            raise ChannelError(f"over {self._backlog_max} events not yet stored; reconnecting")
        self.backlog.put_nowait(_Dispatch(seq, message))

    def _on_ready(self, seq: int, data: object) -> None:
        session_id = data.get("session_id") if isinstance(data, dict) else None
        resume_url = data.get("resume_gateway_url") if isinstance(data, dict) else None
        user = data.get("user") if isinstance(data, dict) else None
        bot_id = snowflake(user.get("id")) if isinstance(user, dict) else None
        if self.ready or not isinstance(session_id, str) or bot_id is None:
            raise ChannelError("Discord's READY lacks a session id or the bot's user")
        self._messages.bot_id = bot_id
        # A new session: nothing of an old one is resumable any more, nothing before READY is
        # owed to us; the session becomes resumable once READY itself is taken (below).
        self.gen.resume = None
        self.session_id = session_id
        self.resume_url = resume_url if isinstance(resume_url, str) else self._base_url
        self.stored_seq = seq - 1
        self._counts.identifies += 1
        self._became_ready()

    def _on_resumed(self, seq: int) -> None:
        if self.ready or self.gen.resume is None:
            self.bad_frames.warn("ignored an unexpected RESUMED", {"s": seq})
            return
        self._counts.resumes += 1
        self._became_ready()

    def _became_ready(self) -> None:
        self.ready = True
        self.gen.ready()

    # The taker: stored, then the sequence moves on.

    def _start_taker(self) -> None:
        if not self._taker_started:
            self._taker_started = True
            self.gen.spawn(self._take_dispatches())

    async def _take_dispatches(self) -> None:
        while True:
            dispatch = await self.backlog.get()
            if dispatch.message is not None:
                await self._store(dispatch)
            self._stored(dispatch.seq)

    def _stored(self, seq: int) -> None:
        if self.stored_seq is not None and seq <= self.stored_seq:
            return  # a replay of what is stored already
        self.stored_seq = seq
        if self.session_id is not None:
            self.gen.resume = ResumeState(self.session_id, seq, self.resume_url)

    async def _store(self, dispatch: _Dispatch) -> None:
        inbound = dispatch.message
        assert inbound is not None
        try:
            async with asyncio.timeout(self._accept_timeout_s):
                await self.inbox.accept(inbound)
        except (TurngateError, TimeoutError) as exc:
            why = exc.message if isinstance(exc, TurngateError) else "timed out"
            raise ChannelError(
                f"message {inbound.message_id[:80]} (s {dispatch.seq}) was not stored ({why});"
                " resuming before it, Discord sends it again"
            ) from exc

    # Outbound frames.

    async def _beat(self) -> None:
        await self.send({"op": Op.HEARTBEAT, "d": self.stored_seq})

    async def send(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` on this connection; ChannelError when it is over or closed."""
        sending = self._send_frame(json.dumps(frame, ensure_ascii=False))
        if sending is None:
            raise ChannelError("the connection to Discord is over")
        await sending

    def closed_error(self, closed: GatewayClosedError) -> ChannelError:
        """What a close from Discord means for the channel: stop, identify afresh, resume."""
        code = closed.close_code
        if code in FATAL_CLOSE_CODES:
            text = FATAL_CLOSE_CODES[code].format(
                token_env=self._token_env,
                intents=f"{self._intents} ({_intent_names(self._intents)})",
            )
            return ChannelRefusedError(f"channel {self.channel_id}: {text}")
        if code in NEW_SESSION_CLOSE_CODES:
            self._forget_session()
        return closed

    def close(self) -> None:
        """The connection ended: nothing more is taken from it."""
        self.ready = False


def _intent_names(intents: int) -> str:
    names = [intent.name.lower() for intent in Intent if intent.name and intents & intent]
    return ", ".join(names) or "none"


__all__ = [
    "CLOSE_END_SESSION",
    "CLOSE_KEEP_SESSION",
    "GatewayLink",
    "Intent",
    "Op",
    "ResumeState",
]
