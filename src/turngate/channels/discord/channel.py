"""One Discord bot: its gateway connection under a supervisor, its REST sender.

Inbound is :mod:`~turngate.channels.discord.gateway` (one :class:`GatewayLink` per
generation of the channel's :class:`~turngate.channels.supervisor.Supervisor`), with
:mod:`~turngate.channels.discord.messages` deciding what is a turn. Outbound is
:mod:`~turngate.channels.discord.rest`: messages over REST, split at 2,000 characters by the
outbox, paced by Discord's rate limits.

Closing a connection: with code 4000 when the next generation will resume (a zombie, op 7, a
lost connection), with 1000 when the channel stops for good (Discord then ends the session
at once instead of keeping it for a resume that will not come).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from dataclasses import dataclass, field, replace

import httpx2
from websockets.exceptions import WebSocketException

from turngate.channels.base import Inbox
from turngate.channels.discord.gateway import (
    CLOSE_END_SESSION,
    CLOSE_KEEP_SESSION,
    GatewayLink,
    Intent,
    ResumeState,
)
from turngate.channels.discord.messages import MessageFilter
from turngate.channels.discord.rest import API_URL_DEFAULT, DiscordRest, DiscordSender
from turngate.channels.discord.socket import (
    GATEWAY_URL_DEFAULT,
    Dial,
    GatewayClosedError,
    GatewaySocket,
    dial_websocket,
    gateway_url,
)
from turngate.channels.generation import Generation, SessionCounts
from turngate.channels.supervisor import (
    LOST_ERRORS,
    ConnectionSnapshot,
    Supervisor,
    SupervisorSettings,
)
from turngate.config_channels import ChannelConfig
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ChannelError

KIND = "discord"
INTENTS: dict[str, Intent] = {
    "guilds": Intent.GUILDS,
    "guild_messages": Intent.GUILD_MESSAGES,
    "direct_messages": Intent.DIRECT_MESSAGES,
    "message_content": Intent.MESSAGE_CONTENT,
}


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    """How a Discord channel paces and bounds its connection."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    ready_timeout_s: float = 30.0
    """Dial, HELLO, IDENTIFY (or RESUME) and READY (or RESUMED) together, per connection."""
    accept_timeout_s: float = 60.0
    """Longest ``Inbox.accept`` of one message before the connection is dropped to resume."""
    close_timeout_s: float = 2.0
    """Longest closing handshake (a zombie may never answer it)."""
    backlog_max: int = 10_000
    """Events received and not yet taken, per connection; past it, the connection ends (and
    resumes before them, so nothing is lost)."""

    def __post_init__(self) -> None:
        for name in ("ready_timeout_s", "accept_timeout_s", "close_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.backlog_max < 1:
            raise ValueError(f"backlog_max: must be >= 1, got {self.backlog_max}")


def intents_of(config: ChannelConfig) -> int:
    """The intents ``config`` asks for (see :attr:`ChannelConfig.intents`)."""
    if config.intents is not None:
        names: tuple[str, ...] = config.intents
    else:
        names = ("guild_messages", "direct_messages")
        if config.groups == "all":
            names += ("message_content",)
    value = 0
    for name in names:
        value |= INTENTS[name]
    return value


class DiscordChannel:
    """One Discord bot (see the module docstring)."""

    def __init__(
        self,
        config: ChannelConfig,
        token: str,
        clock: Clock,
        rng: random.Random,
        *,
        settings: DiscordSettings | None = None,
        dial: Dial | None = None,
        rest_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        """``token`` is the value of ``config.token_env`` (only ever named, never shown);
        ``dial`` and ``rest_transport`` replace the network (the simulator's memory)."""
        self._config = config
        self._token_env = f"${config.token_env}" if config.token_env else "its token variable"
        if not token or any(ch.isspace() for ch in token):
            raise ValueError(
                f"channel {config.id}: {self._token_env} does not hold a Discord bot token"
                " (the token alone, without 'Bot ')"
            )
        self._token = token
        self.settings = settings or DiscordSettings()
        self._base_url = config.url or GATEWAY_URL_DEFAULT
        self._intents = intents_of(config)
        self._dial: Dial = dial or functools.partial(
            dial_websocket, close_timeout_s=self.settings.close_timeout_s
        )
        self._rest = DiscordRest(
            config.api_url or API_URL_DEFAULT, token, clock, transport=rest_transport
        )
        self._sender = DiscordSender(self._rest)
        self._messages = MessageFilter(config.groups)
        self._counts = SessionCounts()
        self._inbox: Inbox | None = None
        self._link: GatewayLink | None = None
        self._supervisor: Supervisor[ResumeState] = Supervisor(
            config.id,
            self._connect,
            clock=clock,
            rng=rng,
            settings=SupervisorSettings(
                backoff=self.settings.backoff,
                ready_timeout_s=self.settings.ready_timeout_s,
                lost_errors=(*LOST_ERRORS, WebSocketException, ChannelError),
            ),
            secrets=(token,),
        )

    @property
    def channel_id(self) -> str:
        return self._config.id

    @property
    def kind(self) -> str:
        return KIND

    @property
    def sender(self) -> DiscordSender:
        return self._sender

    @property
    def link(self) -> GatewayLink | None:
        """The current connection's protocol, if one is open (for tests and the simulator)."""
        return self._link

    async def run(self, inbox: Inbox) -> None:
        """Connect, and reconnect, until :meth:`stop`, cancellation, or a refusal for good."""
        self._inbox = inbox
        await self._supervisor.run()

    def stop(self) -> None:
        """End the current connection (ending its session) and make :meth:`run` return."""
        self._supervisor.stop()

    async def aclose(self) -> None:
        """Close the REST client (after :meth:`run` returned and the last send ended)."""
        await self._rest.aclose()

    async def typing(self, conversation: str) -> None:
        await self._rest.trigger_typing(conversation)

    def connection(self) -> ConnectionSnapshot:
        snapshot = self._supervisor.snapshot()
        link, resume = self._link, self._supervisor.resume
        session_id = resume.session_id if resume is not None else None
        sequence = resume.seq if resume is not None else None
        if link is not None and link.session_id is not None:
            session_id, sequence = link.session_id, link.stored_seq
        return replace(
            snapshot,
            session_id=session_id,
            last_sequence=sequence,
            resumes=self._counts.resumes,
            identifies=self._counts.identifies,
        )

    async def _connect(self, gen: Generation[ResumeState]) -> None:
        """The supervisor's connector: dial, then read frames until the connection ends."""
        assert self._inbox is not None, "run() sets the inbox before the first dial"
        resume = gen.resume
        socket = await self._dial(
            gateway_url(self._base_url if resume is None else resume.resume_url)
        )
        gen.identifying()
        link = GatewayLink(
            channel_id=self._config.id,
            gen=gen,
            socket=socket,
            inbox=self._inbox,
            token=self._token,
            token_env=self._token_env,
            intents=self._intents,
            messages=self._messages,
            counts=self._counts,
            accept_timeout_s=self.settings.accept_timeout_s,
            backlog_max=self.settings.backlog_max,
            base_url=self._base_url,
        )
        self._link = link
        try:
            while True:
                raw = await socket.recv()
                gen.received()
                link.handle_frame(raw)
        except GatewayClosedError as closed:
            raise link.closed_error(closed) from None
        finally:
            link.close()
            if self._link is link:
                self._link = None
            await self._close(socket, gen)

    async def _close(self, socket: GatewaySocket, gen: Generation[ResumeState]) -> None:
        code = CLOSE_END_SESSION if gen.ending_for_good else CLOSE_KEEP_SESSION
        with contextlib.suppress(ChannelError, OSError, WebSocketException, TimeoutError):
            async with asyncio.timeout(self.settings.close_timeout_s):
                await socket.close(code)


__all__ = ["DiscordChannel", "DiscordSettings", "intents_of"]
