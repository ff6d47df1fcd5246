"""A fake Discord on 127.0.0.1, gateway and REST API in one Starlette app, for the Discord
channel's tests.

It runs under uvicorn in the test's own event loop (so that its state and :class:`Signal` are
shared with the test), on a socket bound before the server starts: a client may connect at once.

:class:`FakeDiscord` is made of two halves, each in its own module, and hands on their script
and records under the names tests use:

- the gateway (``fake_discord_gateway.py``, :class:`FakeGateway`), at ``/gateway`` and
  ``/resume``: connections and sessions (``fake_discord_connection.py``), the frames on them,
  the controls :meth:`FakeDiscord.reconnect`, ``invalidate``, ``request_heartbeat``,
  ``close`` and ``drop``, and events (:meth:`FakeDiscord.message`, ``dispatch``);
- the REST API (``fake_discord_rest.py``, :class:`FakeRest`), under ``/api/v10``: messages,
  typing, rate limits (:meth:`FakeDiscord.rate_limit_next`) and scripted failures.

Both share the token, the :class:`Signal` (notified at every change) and the port. Every name
tests import from here (constants, records, :class:`Intent`, :class:`Failure`...) is
re-exported from the halves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Generic, TypeVar, overload

import uvicorn
from starlette.applications import Starlette

from tests.channels.fake_discord_connection import (
    CLIENT_OPS,
    CLOSE_REASONS,
    INTENTS_MAX,
    OUTBOX_FRAMES_MAX,
    Connection,
    Heartbeat,
    Intent,
    Op,
    Received,
    Session,
)
from tests.channels.fake_discord_gateway import HEARTBEAT_INTERVAL_MS_DEFAULT, FakeGateway
from tests.channels.fake_discord_rest import (
    API_PATH,
    BOT_ID,
    BOT_USERNAME,
    BUCKET_HASH,
    BUCKET_SIZE_DEFAULT,
    BUCKET_WINDOW_S_DEFAULT,
    DISCORD_EPOCH_MS,
    EARLY_TOLERANCE_S,
    MESSAGE_CHARS_MAX,
    NONCE_CHARS_MAX,
    SNOWFLAKE_BASE_MS,
    TOKEN,
    Attempt,
    Failure,
    FakeRest,
    RateLimit,
    Sent,
    Typing,
    bot_user,
)
from tests.channels.fake_telegram import Signal
from turngate.gateway.server import listening_socket

SERVER_STOP_S = 10.0
CLOSE_WAIT_S = 5.0

T = TypeVar("T")


class _Of(Generic[T]):
    """An attribute of :class:`FakeDiscord` that is one of its halves' (read and written
    there): ``_Of[int]("gateway")`` is ``self.gateway.<the same name>``."""

    def __init__(self, half: str) -> None:
        self.half = half
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _Of[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object, owner: type) -> _Of[T] | T:
        if instance is None:
            return self
        value: T = getattr(getattr(instance, self.half), self.name)
        return value

    def __set__(self, instance: object, value: T) -> None:
        setattr(getattr(instance, self.half), self.name, value)


class FakeDiscord:
    """The fake's state and script (see the module docstring); run it with :func:`fake_discord`."""

    # The gateway's script and records (see ``fake_discord_gateway.py``).
    heartbeat_interval_ms = _Of[int]("gateway")
    hello_gate = _Of[asyncio.Event | None]("gateway")
    ack_heartbeats = _Of[bool]("gateway")
    disallowed_intents = _Of[int]("gateway")
    resumable = _Of[bool]("gateway")
    enforce_intents = _Of[bool]("gateway")
    echo_sent = _Of[bool]("gateway")
    handshake_failures = _Of[list[int]]("gateway")
    refused_handshakes = _Of[int]("gateway")
    errors = _Of[list[Exception]]("gateway")
    connections = _Of[list[Connection]]("gateway")
    sessions = _Of[list[Session]]("gateway")
    messages = _Of[list[dict[str, Any]]]("gateway")
    withheld = _Of[list[dict[str, Any]]]("gateway")
    # The REST API's script and records (see ``fake_discord_rest.py``).
    bucket_size = _Of[int]("rest")
    bucket_window_s = _Of[float]("rest")
    missing_channels = _Of[set[str]]("rest")
    forbidden_channels = _Of[set[str]]("rest")
    send_failures = _Of[list[Failure]]("rest")
    attempts = _Of[list[Attempt]]("rest")
    sent = _Of[list[Sent]]("rest")
    early_requests = _Of[list[Attempt]]("rest")
    rate_limits = _Of[list[RateLimit]]("rest")
    typing = _Of[list[Typing]]("rest")

    def __init__(
        self,
        *,
        token: str = TOKEN,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
        bucket_size: int = BUCKET_SIZE_DEFAULT,
        bucket_window_s: float = BUCKET_WINDOW_S_DEFAULT,
    ) -> None:
        self.signal = Signal()
        self.port = 0
        self.rest = FakeRest(
            token=token,
            signal=self.signal,
            gateway_url=lambda: self.gateway_url,
            on_made=lambda made: self.gateway.echo(made),
            bucket_size=bucket_size,
            bucket_window_s=bucket_window_s,
        )
        self.gateway = FakeGateway(
            token=token,
            signal=self.signal,
            rest=self.rest,
            resume_url=lambda: self.resume_url,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )

    @property
    def token(self) -> str:
        """The bot token the fake accepts (both halves were given it)."""
        return self.gateway.token

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PATH}"

    @property
    def current(self) -> Connection | None:
        """The newest connection still open."""
        return self.gateway.current

    @property
    def session(self) -> Session | None:
        """The newest session: where :meth:`message` and :meth:`dispatch` go."""
        return self.gateway.session

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return self.gateway.heartbeats

    # What tests do: events.

    def message(
        self,
        channel_id: str,
        author_id: str,
        content: str,
        *,
        guild_id: str | None = None,
        mention_bot: bool = False,
        reply_to_bot: bool = False,
        author_bot: bool = False,
        username: str = "ada",
    ) -> str:
        """Dispatch MESSAGE_CREATE in the newest session (kept for a RESUME when no connection
        carries it); returns the message id. Raises RuntimeError before the first IDENTIFY."""
        return self.gateway.message(
            channel_id,
            author_id,
            content,
            guild_id=guild_id,
            mention_bot=mention_bot,
            reply_to_bot=reply_to_bot,
            author_bot=author_bot,
            username=username,
        )

    def dispatch(self, event_type: str, data: Any) -> int:
        """Dispatch any event in the newest session; returns its sequence number."""
        return self.gateway.dispatch(event_type, data)

    # What tests do: the gateway's controls, on the newest open connection by default.

    def reconnect(self, connection: Connection | None = None) -> None:
        self.gateway.reconnect(connection)

    def invalidate(self, resumable: bool, connection: Connection | None = None) -> None:
        """Op 9 with ``d = resumable``; the connection carries its session no longer (and
        with ``resumable`` False, the session cannot be resumed)."""
        self.gateway.invalidate(resumable, connection)

    def request_heartbeat(self, connection: Connection | None = None) -> None:
        self.gateway.request_heartbeat(connection)

    def close(
        self, code: int, reason: str | None = None, connection: Connection | None = None
    ) -> None:
        """Close the connection with ``code`` (and Discord's reason for it, by default),
        after the frames already queued on it."""
        self.gateway.close(code, reason, connection)

    def drop(self, connection: Connection | None = None) -> None:
        """End the TCP connection at once, without a close frame."""
        self.gateway.drop(connection)

    # What tests do: REST.

    def rate_limit_next(
        self, channel_id: str, retry_after_s: float, *, global_: bool = False
    ) -> None:
        """Answer the next message POST on ``channel_id`` with 429 for ``retry_after_s``."""
        self.rest.rate_limit_next(channel_id, retry_after_s, global_=global_)

    def close_all(self, code: int = 1001) -> None:
        self.gateway.close_all(code)

    def app(self) -> Starlette:
        return Starlette(routes=[*self.gateway.routes(), *self.rest.routes()])


class _RefusedHandshakeQuiet(logging.Filter):
    """Drops uvicorn's ERROR line for a WebSocket handshake refused with an HTTP answer
    (``handshake_failures``): uvicorn logs it for every such refusal, though it is one the
    ASGI spec provides for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


@asynccontextmanager
async def fake_discord(
    *,
    token: str = TOKEN,
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    bucket_size: int = BUCKET_SIZE_DEFAULT,
    bucket_window_s: float = BUCKET_WINDOW_S_DEFAULT,
) -> AsyncIterator[FakeDiscord]:
    """Serve a :class:`FakeDiscord` on an ephemeral loopback port in this loop; on exit close
    every gateway connection (1001) and stop the server, within :data:`SERVER_STOP_S`."""
    fake = FakeDiscord(
        token=token,
        heartbeat_interval_ms=heartbeat_interval_ms,
        bucket_size=bucket_size,
        bucket_window_s=bucket_window_s,
    )
    sock = listening_socket("127.0.0.1", 0)
    fake.port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(),
        # No logging configuration of uvicorn's own: it would be global to the test session
        # (uvicorn's loggers would stop propagating), and other tests read those lines.
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=None,  # Discord's liveness is its heartbeats, not WebSocket pings
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    quiet = _RefusedHandshakeQuiet()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    fake.gateway.server = server
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield fake
    finally:
        fake.close_all()
        with suppress(TimeoutError):
            await fake.signal.wait_until(
                lambda: all(not c.open for c in fake.connections), CLOSE_WAIT_S
            )
        server.should_exit = True
        try:
            async with asyncio.timeout(SERVER_STOP_S):
                await task
        finally:
            sock.close()
            logging.getLogger("uvicorn.error").removeFilter(quiet)


__all__ = [
    "BOT_ID",
    "BOT_USERNAME",
    "BUCKET_HASH",
    "BUCKET_SIZE_DEFAULT",
    "BUCKET_WINDOW_S_DEFAULT",
    "CLIENT_OPS",
    "CLOSE_REASONS",
    "CLOSE_WAIT_S",
    "DISCORD_EPOCH_MS",
    "EARLY_TOLERANCE_S",
    "HEARTBEAT_INTERVAL_MS_DEFAULT",
    "INTENTS_MAX",
    "MESSAGE_CHARS_MAX",
    "NONCE_CHARS_MAX",
    "OUTBOX_FRAMES_MAX",
    "SERVER_STOP_S",
    "SNOWFLAKE_BASE_MS",
    "TOKEN",
    "Attempt",
    "Connection",
    "Failure",
    "FakeDiscord",
    "FakeGateway",
    "FakeRest",
    "Heartbeat",
    "Intent",
    "Op",
    "RateLimit",
    "Received",
    "Sent",
    "Session",
    "Signal",
    "Typing",
    "bot_user",
    "fake_discord",
]
