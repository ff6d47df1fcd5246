"""The ``websocket`` channel: turngate dials a WebSocket IM server and speaks its bot protocol.

One bot on a custom IM server (seed 002's channel): :class:`WebSocketChannel` dials the server,
keeps the connection under its :class:`~turngate.channels.supervisor.Supervisor` (one
generation per connection, backoff between them) and sends replies over the live connection
(its :class:`~turngate.channels.outbox.Sender`). The protocol itself, and how the channel keeps
the gateway's promise over it (ack only what is stored, resume, liveness, sends, refusal), is
described in :mod:`turngate.channels.websocket_im_link`, whose
:class:`~turngate.channels.websocket_im_link.ImLink` speaks it over one connection.

Refused at the dial: HTTP 401/403 on the handshake, or a URL that is not a WebSocket URL, stop
the channel (:class:`~turngate.errors.ChannelRefusedError`). The token is never logged: error
texts go through :func:`turngate.logs.redact` with the token first.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from turngate.channels.base import Inbox
from turngate.channels.generation import Generation, SessionCounts
from turngate.channels.outbox import Sender
from turngate.channels.supervisor import (
    LOST_ERRORS,
    ConnectionSnapshot,
    Supervisor,
    SupervisorSettings,
)
from turngate.channels.websocket_im_link import Groups, ImLink, ResumeState
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ChannelError, ChannelRefusedError
from turngate.runtime.clock import LoopClock

KIND = "websocket"
MESSAGE_CHARS_MAX = 4_000
"""The longest message the channel sends, in characters (what the example server takes)."""
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
    groups: Groups = "mention"
    """Group messages taken: those the server marks ``mentioned``, all, or none (the
    channel's ``groups`` setting). Those not taken are acked and never become turns."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "accept_timeout_s", "confirm_timeout_s", "close_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.backlog_max < 1 or self.message_chars_max < 1:
            raise ValueError("backlog_max and message_chars_max: must be >= 1")


class WebSocketChannel:
    """One bot on a WebSocket IM server (its protocol: :mod:`.websocket_im_link`)."""

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
        self._link: ImLink | None = None
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
        self._counts = SessionCounts()

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
            resumes=self._counts.resumes,
            identifies=self._counts.identifies,
        )

    @property
    def handle_frame(self) -> FrameHandler | None:
        """The current connection's frame handler (what its reader calls for each frame),
        bound to its generation: kept past its connection, it does nothing (I6)."""
        return None if self._link is None else self._link.handle_frame

    def _ready_link(self) -> ImLink | None:
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
            link = ImLink(
                channel_id=self._channel_id,
                gen=gen,
                ws=ws,
                inbox=self._inbox,
                token=self._token,
                counts=self._counts,
                heartbeat_s=self.settings.heartbeat_s,
                accept_timeout_s=self.settings.accept_timeout_s,
                confirm_timeout_s=self.settings.confirm_timeout_s,
                backlog_max=self.settings.backlog_max,
                groups=self.settings.groups,
            )
            self._link = link
            try:
                async for raw in ws:
                    gen.received()
                    link.handle_frame(raw)
            finally:
                link.close()
                if self._link is link:
                    self._link = None


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


__all__ = [
    "MESSAGE_CHARS_MAX",
    "WebSocketChannel",
    "WebSocketSettings",
]
