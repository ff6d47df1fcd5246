"""The ``websocket`` channel's bot protocol, one connection per generation of its supervisor.

:class:`ImLink` speaks it over one connection; :mod:`turngate.channels.websocket_im` dials the
connection, runs it under the supervisor and sends replies through it.

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
  (:meth:`~turngate.channels.generation.Generation.start_heartbeat`), closed and dialled again.
- **Generations.** Everything a connection starts (the reader, the acceptor, the heartbeat, the
  identify) lives in its generation; its frame handler and its send path are
  :meth:`~turngate.channels.generation.Generation.guard`-ed, so a handler kept past its
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
  URL that is not a WebSocket URL (those two found by the channel's dial) stop the channel
  (:class:`~turngate.errors.ChannelRefusedError`); ``fatal: false`` drops the resume state and
  identifies afresh on the next connection. The token is never logged: error texts go through
  :func:`turngate.logs.redact` with the token first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.frames import (
    EXCERPT_CHARS_MAX,
    BadFrames,
    integer,
    number,
)
from turngate.channels.generation import Generation, SessionCounts
from turngate.errors import (
    ChannelError,
    ChannelRefusedError,
    DeliveryRefusedError,
    TurngateError,
)
from turngate.logs import redact

log = logging.getLogger("turngate.channels")

HEARTBEAT_S_MIN = 0.01
HEARTBEAT_S_MAX = 3_600.0

Groups: TypeAlias = Literal["mention", "all", "off"]
"""Which group messages become turns: those the server marks ``mentioned``, all, or none."""


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


class ImLink:
    """One connection's protocol: its frame handler, its acceptor, its pending sends."""

    def __init__(
        self,
        *,
        channel_id: str,
        gen: Generation[ResumeState],
        ws: ClientConnection,
        inbox: Inbox,
        token: str,
        counts: SessionCounts,
        heartbeat_s: float,
        accept_timeout_s: float,
        confirm_timeout_s: float,
        backlog_max: int,
        groups: Groups,
    ) -> None:
        """``heartbeat_s`` is the interval when the hello names none; ``groups``, the channel's
        ``groups`` setting (see :class:`~turngate.channels.websocket_im.WebSocketSettings`)."""
        self.channel_id = channel_id
        self.gen = gen
        self.ws = ws
        self.inbox = inbox
        self._token = token
        self._counts = counts
        self._heartbeat_s = heartbeat_s
        self._accept_timeout_s = accept_timeout_s
        self._confirm_timeout_s = confirm_timeout_s
        self._backlog_max = backlog_max
        self._groups = groups
        self.name = f"channel {channel_id}: generation {gen.number}"
        self.ready = False
        self.hello_seen = False
        self.session: str | None = None
        self.acked_seq: int | None = None
        self.backlog: asyncio.Queue[_Message] = asyncio.Queue()
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.bad_frames = BadFrames(self.name, [token])
        self.handle_frame = gen.guard(self._handle_frame)
        self._send_frame = gen.guard(self._send_raw)

    # Inbound frames.

    def _handle_frame(self, raw: str | bytes) -> None:
        # As the Discord link does: what a frame means for the connection ends the
        # generation, and is never an exception in whoever handed the frame.
        try:
            self._on_frame(raw)
        except ChannelError as exc:
            self.gen.fail(exc)

    def _on_frame(self, raw: str | bytes) -> None:
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
        interval_s = self._heartbeat_s
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
                    "token": self._token,
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
            self._counts.resumes += 1
        else:
            self._counts.identifies += 1
            if resume is not None:
                log.info("%s: the IM server started a new session", self.name)
            self.gen.resume = None
        self.session = session
        self.ready = True
        self.gen.ready()
        self.gen.spawn(self._accept_messages())

    def _on_invalid(self, frame: dict[str, Any]) -> None:
        reason = redact(str(frame.get("reason") or "no reason given"), [self._token])
        reason = reason[:EXCERPT_CHARS_MAX]
        if frame.get("fatal") is True:
            raise ChannelRefusedError(
                f"channel {self.channel_id}: the IM server refused the bot: {reason}"
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
        if self.backlog.qsize() >= self._backlog_max:
            raise ChannelError(f"over {self._backlog_max} messages not yet stored; reconnecting")
        inbound = InboundMessage(
            message_id=message_id,
            conversation=chat,
            peer=peer,
            text=text,
            group=group is True,
            peer_name=name if isinstance(name, str) else None,
        )
        groups = self._groups
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
            async with asyncio.timeout(self._accept_timeout_s):
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
        timeout_s = self._confirm_timeout_s
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


def _id(value: object) -> str | None:
    """A platform id as text: a non-empty string, or an integer (some platforms use numbers)."""
    if isinstance(value, str):
        return value or None
    if integer(value):
        return str(value)
    return None


__all__ = [
    "HEARTBEAT_S_MAX",
    "HEARTBEAT_S_MIN",
    "Groups",
    "ImLink",
    "ResumeState",
]
