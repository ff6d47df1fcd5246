"""The ``websocket`` channel: turngate dials a WebSocket IM server and speaks its bot protocol.

This is the shape of a custom IM platform (seed 002's channel): one socket per bot, JSON text
frames both ways, heartbeats with acks, and a resumable stream of inbound messages. The full
protocol, with examples, is in ``docs/websocket-im-channel.md``; ``examples/im_server.py``
implements its server side. In short (``→`` from the bot, ``←`` from the server)::

    ← {"op": "hello", "heartbeat_ms": N}                    first frame after the handshake
    → {"op": "identify", "token": T, "resume": {"session": S, "seq": K} | null}
    ← {"op": "ready", "session": S, "resumed": bool}        then every unacked message again
    ← {"op": "invalid", "reason": "...", "fatal": bool}     identify refused
    ← {"op": "message", "seq": K, "id": M, "chat": C, "from": P, "group": bool, "text": "...",
       "name": "..."?, "mentioned": bool?}
    → {"op": "ack", "seq": K}                               K and everything before it is stored
    → {"op": "heartbeat", "seq": K | null}                  ← {"op": "heartbeat_ack"}
    → {"op": "send", "id": PART_KEY, "chat": C, "text": "..."}
    ← {"op": "sent", "id": PART_KEY}
    ← {"op": "send_failed", "id": PART_KEY, "permanent": bool, "retry_after_ms": N?,
       "reason": "..."}
    → {"op": "typing", "chat": C}                           best effort, never answered

How the channel keeps the gateway's promise over it:

- **Ack only what is stored.** Messages are handed to the :class:`~turngate.channels.base.Inbox`
  one at a time, in ``seq`` order, by one task per connection; ``ack K`` goes out only after
  ``Inbox.accept`` returned for ``K``. When ``accept`` fails (the store is down) or takes longer
  than ``accept_timeout_s``, the connection is closed unacked: the server delivers the message
  again on the next connection, and the inbox deduplicates by message id.
- **Groups.** A group message is a turn only as the ``groups`` setting says: ``mention`` (the
  default) takes those the server marks ``"mentioned": true`` (the bot was named or replied
  to), ``all`` takes every one, ``off`` none. One not taken is acked without becoming a turn.
- **Resume.** The last acked ``(session, seq)`` is the supervisor's resume state, shared across
  generations; ``identify`` carries it, and the server replays what follows. A server that no
  longer knows the session starts a new one and replays everything unacked.
- **Liveness by frames received.** Frames are read by their own task, never blocked behind a slow
  ``accept``, so heartbeat acks keep counting while the store is slow. The heartbeat interval is
  the server's ``heartbeat_ms`` (the channel's ``heartbeat`` setting when the hello has none);
  with no frame received within an interval after a beat, the connection is a zombie
  (:class:`~turngate.channels.supervisor.Supervisor`), closed and dialled again.
- **Generations.** Everything a connection starts (the reader, the acceptor, the heartbeat, the
  identify) lives in its generation; its frame handler and its send path are
  :meth:`~turngate.channels.supervisor.Generation.guard`-ed, so a handler kept past its
  connection does nothing (seed 004).
- **Sends** go over the live connection and wait up to ``confirm_timeout_s`` for the server's
  ``sent`` / ``send_failed``. Not connected, no confirmation, or ``send_failed`` raise
  :class:`~turngate.errors.ChannelError` (with ``retry_after_s``) and the outbox tries again;
  ``permanent`` raises :class:`~turngate.errors.DeliveryRefusedError`. The server deduplicates
  sends by ``id`` (the outbox's part key), so a resend after a crash shows once.
- **A peer cannot crash us.** A frame that is not JSON, has an unknown ``op`` or lacks a field is
  logged at WARNING (at most :data:`~turngate.channels.frames.WARNINGS_PER_CONNECTION_MAX`
  per connection) and ignored.
- **Refusal.** ``invalid`` with ``fatal: true`` (a bad token), HTTP 401/403 on the handshake or a
  URL that is not a WebSocket URL stop the channel
  (:class:`~turngate.errors.ChannelRefusedError`); ``fatal: false`` drops the resume state and
  identifies afresh on the next connection. The token is never logged: error texts go through
  :func:`turngate.logs.redact` with the token first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.frames import (
    EXCERPT_CHARS_MAX,
    BadFrames,
    integer,
    number,
)
from turngate.channels.outbox import Sender
from turngate.channels.supervisor import (
    LOST_ERRORS,
    ConnectionSnapshot,
    Generation,
    Supervisor,
    SupervisorSettings,
)
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import (
    ChannelError,
    ChannelRefusedError,
    DeliveryRefusedError,
    TurngateError,
)
from turngate.logs import redact
from turngate.runtime.clock import LoopClock

log = logging.getLogger("turngate.channels")

KIND = "websocket"
MESSAGE_CHARS_MAX = 4_000
"""The longest message the channel sends, in characters (what the example server takes)."""
HEARTBEAT_S_MIN = 0.01
HEARTBEAT_S_MAX = 3_600.0
REFUSED_HTTP_STATUSES = frozenset({401, 403})

FrameHandler: TypeAlias = Callable[[str | bytes], None]
"""A connection's frame handler, guarded by its generation."""


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """How a websocket channel paces and bounds its connection."""

    heartbeat_s: float = 30.0
    """The heartbeat interval when the server's hello names none."""
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    ready_timeout_s: float = 30.0
    """Dial, hello, identify and ready together, per connection."""
    accept_timeout_s: float = 60.0
    """Longest ``Inbox.accept`` of one message before the connection is closed unacked."""
    confirm_timeout_s: float = 10.0
    """Longest wait for the server's ``sent`` / ``send_failed`` after a ``send``."""
    close_timeout_s: float = 2.0
    """Longest closing handshake when a connection ends (a zombie may never answer)."""
    backlog_max: int = 10_000
    """Messages received and not yet accepted, per connection; past it, the connection ends
    (unacked, so nothing is lost)."""
    frame_bytes_max: int = 1_048_576
    message_chars_max: int = MESSAGE_CHARS_MAX
    groups: Literal["mention", "all", "off"] = "mention"
    """Group messages taken: those the server marks ``mentioned``, all, or none (the
    channel's ``groups`` setting). Those not taken are acked and never become turns."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "accept_timeout_s", "confirm_timeout_s", "close_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.backlog_max < 1 or self.message_chars_max < 1:
            raise ValueError("backlog_max and message_chars_max: must be >= 1")


@dataclass(frozen=True, slots=True)
class ResumeState:
    """Where the next connection resumes: the server's session and the last ``seq`` acked."""

    session: str
    seq: int


@dataclass(frozen=True, slots=True)
class _Message:
    seq: int
    inbound: InboundMessage
    wanted: bool
    """False for a group message the ``groups`` setting skips: acked, never a turn."""


class WebSocketChannel:
    """One bot on a WebSocket IM server (see the module docstring for the protocol)."""

    def __init__(
        self,
        channel_id: str,
        url: str,
        token: str,
        *,
        settings: WebSocketSettings | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._channel_id = channel_id
        self._url = url
        self._token = token
        self.settings = settings or WebSocketSettings()
        self._inbox: Inbox | None = None
        self._link: _Link | None = None
        supervisor_settings = SupervisorSettings(
            backoff=self.settings.backoff,
            ready_timeout_s=self.settings.ready_timeout_s,
            lost_errors=(*LOST_ERRORS, WebSocketException, ChannelError),
        )
        self._supervisor: Supervisor[ResumeState] = Supervisor(
            channel_id,
            self._connect,
            clock=clock or LoopClock(),
            rng=rng or random.Random(),
            settings=supervisor_settings,
            secrets=[token],
        )
        self._sender = _Sender(self)
        self._resumes = 0
        self._identifies = 0

    @property
    def channel_id(self) -> str:
        return self._channel_id

    @property
    def kind(self) -> str:
        return KIND

    @property
    def sender(self) -> Sender:
        return self._sender

    async def run(self, inbox: Inbox) -> None:
        """Connect, and reconnect, until cancelled, :meth:`stop`, or refused for good."""
        self._inbox = inbox
        await self._supervisor.run()

    def stop(self) -> None:
        """Close the connection and make :meth:`run` return."""
        self._supervisor.stop()

    async def aclose(self) -> None:
        """Nothing to release: each connection closes with its generation."""

    async def typing(self, conversation: str) -> None:
        """Send ``typing`` when connected; nothing otherwise."""
        link = self._ready_link()
        if link is not None:
            await link.send_checked({"op": "typing", "chat": conversation})

    def connection(self) -> ConnectionSnapshot:
        resume, link = self._supervisor.resume, self._link
        session = link.session if link is not None and link.session else None
        sequence = link.acked_seq if session is not None and link is not None else None
        if session is None and resume is not None:
            session, sequence = resume.session, resume.seq
        return dataclasses.replace(
            self._supervisor.snapshot(),
            session_id=session,
            last_sequence=sequence,
            resumes=self._resumes,
            identifies=self._identifies,
        )

    @property
    def handle_frame(self) -> FrameHandler | None:
        """The current connection's frame handler (what its reader calls for each frame),
        bound to its generation: kept past its connection, it does nothing (I6)."""
        return None if self._link is None else self._link.handle_frame

    def _ready_link(self) -> _Link | None:
        link = self._link
        return link if link is not None and link.ready and not link.gen.over else None

    async def _connect(self, gen: Generation[ResumeState]) -> None:
        """The supervisor's connector: dial, then read frames until the connection ends."""
        assert self._inbox is not None, "run() sets the inbox before the first dial"
        try:
            ws = await connect(
                self._url,
                open_timeout=None,  # the supervisor's ready deadline bounds the dial
                ping_interval=None,  # liveness is the protocol's heartbeat, by frames received
                close_timeout=self.settings.close_timeout_s,
                max_size=self.settings.frame_bytes_max,
            )
        except InvalidURI:
            raise ChannelRefusedError(
                f"channel {self._channel_id}: the url is not a ws:// or wss:// URL"
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in REFUSED_HTTP_STATUSES:
                raise ChannelRefusedError(
                    f"channel {self._channel_id}: the IM server refused the connection (HTTP"
                    f" {status})"
                ) from None
            raise
        async with ws:
            gen.identifying()
            link = _Link(self, gen, ws, self._inbox)
            self._link = link
            try:
                async for raw in ws:
                    gen.received()
                    link.handle_frame(raw)
            finally:
                link.close()
                if self._link is link:
                    self._link = None


class _Link:
    """One connection: its frame handler, its acceptor, its pending sends."""

    def __init__(
        self,
        channel: WebSocketChannel,
        gen: Generation[ResumeState],
        ws: ClientConnection,
        inbox: Inbox,
    ) -> None:
        self.channel = channel
        self.gen = gen
        self.ws = ws
        self.inbox = inbox
        self.name = f"channel {channel.channel_id}: generation {gen.number}"
        self.ready = False
        self.hello_seen = False
        self.session: str | None = None
        self.acked_seq: int | None = None
        self.backlog: asyncio.Queue[_Message] = asyncio.Queue()
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.bad_frames = BadFrames(self.name, [channel._token])
        self.handle_frame = gen.guard(self._handle_frame)
        self._send_frame = gen.guard(self._send_raw)

    # Inbound frames.

    def _handle_frame(self, raw: str | bytes) -> None:
        frame = self.bad_frames.json_object(raw)
        if frame is None:
            return
        op = frame.get("op")
        if op == "message":
            self._on_message(frame)
        elif op == "heartbeat_ack":
            self.gen.heartbeat_acked()  # for its round trip: received() counted it as alive
        elif op in ("sent", "send_failed"):
            self._on_send_result(frame)
        elif op == "hello":
            self._on_hello(frame)
        elif op == "ready":
            self._on_ready(frame)
        elif op == "invalid":
            self._on_invalid(frame)
        else:
            self.bad_frames.warn("ignored a frame with an unknown op", raw)

    def _on_hello(self, frame: dict[str, Any]) -> None:
        if self.hello_seen:
            self.bad_frames.warn("ignored a second hello", frame)
            return
        self.hello_seen = True
        interval_s = self.channel.settings.heartbeat_s
        beat_ms = frame.get("heartbeat_ms")
        if number(beat_ms) and HEARTBEAT_S_MIN <= beat_ms / 1000 <= HEARTBEAT_S_MAX:
            interval_s = beat_ms / 1000
        elif beat_ms is not None:
            self.bad_frames.warn("ignored a hello's heartbeat_ms out of range", frame)
        self.gen.start_heartbeat(interval_s, self._beat)
        resume = self.gen.resume
        self.gen.spawn(
            self.send_checked(
                {
                    "op": "identify",
                    "token": self.channel._token,
                    "resume": None
                    if resume is None
                    else {"session": resume.session, "seq": resume.seq},
                }
            )
        )

    def _on_ready(self, frame: dict[str, Any]) -> None:
        session = frame.get("session")
        if self.ready or not self.hello_seen or not isinstance(session, str):
            self.bad_frames.warn("ignored an unexpected ready", frame)
            return
        resume = self.gen.resume
        if resume is not None and resume.session == session:
            self.acked_seq = resume.seq
            self.channel._resumes += 1
        else:
            self.channel._identifies += 1
            if resume is not None:
                log.info("%s: the IM server started a new session", self.name)
            self.gen.resume = None
        self.session = session
        self.ready = True
        self.gen.ready()
        self.gen.spawn(self._accept_messages())

    def _on_invalid(self, frame: dict[str, Any]) -> None:
        reason = redact(str(frame.get("reason") or "no reason given"), [self.channel._token])
        reason = reason[:EXCERPT_CHARS_MAX]
        if frame.get("fatal") is True:
            raise ChannelRefusedError(
                f"channel {self.channel.channel_id}: the IM server refused the bot: {reason}"
            )
        self.gen.resume = None
        raise ChannelError(f"the IM server ended the session ({reason}); identifying afresh")

    def _on_message(self, frame: dict[str, Any]) -> None:
        if not self.ready:
            self.bad_frames.warn("ignored a message before ready (it comes again after)", frame)
            return
        seq, message_id, chat = frame.get("seq"), _id(frame.get("id")), _id(frame.get("chat"))
        peer, text, group = _id(frame.get("from")), frame.get("text"), frame.get("group", False)
        name, mentioned = frame.get("name"), frame.get("mentioned") is True
        if not (integer(seq) and message_id and chat and peer and isinstance(text, str)):
            self.bad_frames.warn("ignored a message without seq, id, chat, from or text", frame)
            return
        if self.backlog.qsize() >= self.channel.settings.backlog_max:
            raise ChannelError(
                f"over {self.channel.settings.backlog_max} messages not yet stored; reconnecting"
            )
        inbound = InboundMessage(
            message_id=message_id,
            conversation=chat,
            peer=peer,
            text=text,
            group=group is True,
            peer_name=name if isinstance(name, str) else None,
        )
        groups = self.channel.settings.groups
        wanted = not inbound.group or groups == "all" or (groups == "mention" and mentioned)
        self.backlog.put_nowait(_Message(seq, inbound, wanted))

    def _on_send_result(self, frame: dict[str, Any]) -> None:
        key = frame.get("id")
        waiter = self.confirmations.get(key) if isinstance(key, str) else None
        if waiter is None or waiter.done():
            log.debug("%s: a send result for no pending send: %.80s", self.name, key)
            return
        if frame["op"] == "sent":
            waiter.set_result(None)
            return
        reason = str(frame.get("reason") or "no reason given")[:EXCERPT_CHARS_MAX]
        if frame.get("permanent") is True:
            waiter.set_exception(DeliveryRefusedError(f"the IM server refused it: {reason}"))
            return
        after_ms = frame.get("retry_after_ms")
        after_s = after_ms / 1000 if number(after_ms) and after_ms >= 0 else None
        waiter.set_exception(
            ChannelError(f"the IM server failed it: {reason}", retry_after_s=after_s)
        )

    # The acceptor: stored, then acked.

    async def _accept_messages(self) -> None:
        while True:
            message = await self.backlog.get()
            if message.wanted:  # else a group message the channel skips: acked, never a turn
                await self._store(message)
            await self.send_checked({"op": "ack", "seq": message.seq})
            self.acked_seq = message.seq
            assert self.session is not None  # messages are taken only once ready
            self.gen.resume = ResumeState(self.session, message.seq)

    async def _store(self, message: _Message) -> None:
        inbound = message.inbound
        try:
            async with asyncio.timeout(self.channel.settings.accept_timeout_s):
                await self.inbox.accept(inbound)
        except (TurngateError, TimeoutError) as exc:
            why = exc.message if isinstance(exc, TurngateError) else "timed out"
            raise ChannelError(
                f"message {inbound.message_id[:80]} (seq {message.seq}) was not stored"
                f" ({why}); closing unacked, the server delivers it again"
            ) from exc

    # Outbound frames.

    async def _beat(self) -> None:
        await self._send_raw(json.dumps({"op": "heartbeat", "seq": self.acked_seq}))

    async def _send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def send_checked(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` on this connection; ChannelError when it is over or closed."""
        sending = self._send_frame(json.dumps(frame, ensure_ascii=False))
        if sending is None:
            raise ChannelError("the connection to the IM server is closed")
        try:
            await sending
        except ConnectionClosed:
            raise ChannelError("the connection to the IM server closed") from None

    async def deliver(self, chat: str, text: str, key: str) -> None:
        """Send one message and wait for the server's answer (see the module docstring)."""
        if key in self.confirmations:
            raise ChannelError(f"message {key[:80]} is already being sent")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirmations[key] = waiter
        timeout_s = self.channel.settings.confirm_timeout_s
        try:
            await self.send_checked({"op": "send", "id": key, "chat": chat, "text": text})
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            raise ChannelError(f"the IM server did not confirm it within {timeout_s:g}s") from None
        finally:
            if self.confirmations.get(key) is waiter:
                del self.confirmations[key]
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: a failure set after the send failed is ours

    def close(self) -> None:
        """The connection ended: pending sends fail now (the outbox tries them again)."""
        self.ready = False
        for waiter in self.confirmations.values():
            if not waiter.done():
                waiter.set_exception(
                    ChannelError("the connection closed before the IM server confirmed it")
                )


class _Sender:
    """The channel's :class:`~turngate.channels.outbox.Sender`: over the live connection."""

    def __init__(self, channel: WebSocketChannel) -> None:
        self._channel = channel

    @property
    def limit(self) -> int:
        return self._channel.settings.message_chars_max

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        link = self._channel._ready_link()
        if link is None:
            raise ChannelError(
                f"channel {self._channel.channel_id}: not connected to the IM server"
            )
        await link.deliver(conversation, text, part_key)


def _id(value: object) -> str | None:
    """A platform id as text: a non-empty string, or an integer (some platforms use numbers)."""
    if isinstance(value, str):
        return value or None
    if integer(value):
        return str(value)
    return None


__all__ = [
    "MESSAGE_CHARS_MAX",
    "ResumeState",
    "WebSocketChannel",
    "WebSocketSettings",
]
