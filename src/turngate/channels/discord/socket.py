"""A gateway connection's transport: text frames both ways over one WebSocket.

:class:`GatewaySocket` is what :mod:`~turngate.channels.discord.gateway` speaks through:
``websockets`` in production (:func:`dial_websocket`), memory in the simulator
(``sim/discord.py``), so that the protocol code runs on virtual time unchanged. A closed
connection is a :class:`GatewayClosedError` carrying Discord's close code, which decides
whether the channel resumes, identifies afresh or stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI

from turngate.channels.frames import EXCERPT_CHARS_MAX
from turngate.errors import ChannelError, ChannelRefusedError

GATEWAY_URL_DEFAULT = "wss://gateway.discord.gg"
API_VERSION = 10
FRAME_BYTES_MAX = 8 * 1_048_576
"""READY lists every guild of the bot: larger than websockets' 1 MiB default for big bots."""


class GatewayClosedError(ChannelError):
    """The gateway closed the connection (``code`` None: without a close frame)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        text = "without a close frame" if code is None else f"with code {code}"
        super().__init__(f"Discord closed the connection {text}{f' ({reason})' if reason else ''}")
        self.close_code = code


class GatewaySocket(Protocol):
    """One gateway connection's transport: text frames both ways."""

    async def send(self, text: str) -> None:
        """Send one frame; :class:`GatewayClosedError` if the connection is closed."""
        ...

    async def recv(self) -> str | bytes:
        """The next frame; :class:`GatewayClosedError` once the connection is closed."""
        ...

    async def close(self, code: int) -> None:
        """Close with ``code`` (bounded: a zombie may never answer the close)."""
        ...


Dial = Callable[[str], Awaitable[GatewaySocket]]
"""Opens a gateway connection to a URL; OSError (or another ChannelError) if it cannot."""


class _WebSocket:
    """A :class:`GatewaySocket` over ``websockets``."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int) -> None:
        await self._ws.close(code)


def _closed(exc: ConnectionClosed) -> GatewayClosedError:
    received = exc.rcvd
    if received is None:
        return GatewayClosedError(None)
    return GatewayClosedError(received.code, received.reason[:EXCERPT_CHARS_MAX])


async def dial_websocket(url: str, *, close_timeout_s: float = 2.0) -> GatewaySocket:
    """Open ``url`` with ``websockets``; liveness is the protocol's heartbeat, not pings."""
    try:
        ws = await connect(
            url,
            open_timeout=None,  # the supervisor's ready deadline bounds the dial
            ping_interval=None,
            close_timeout=close_timeout_s,
            max_size=FRAME_BYTES_MAX,
        )
    except InvalidURI:
        raise ChannelRefusedError(f"{url[:80]!r} is not a ws:// or wss:// URL") from None
    return _WebSocket(ws)


def gateway_url(base: str) -> str:
    """``base`` with the API version and encoding Discord expects, unless it has a query."""
    if urlsplit(base).query:
        return base
    return f"{base.rstrip('/')}/?v={API_VERSION}&encoding=json"


__all__ = [
    "GATEWAY_URL_DEFAULT",
    "Dial",
    "GatewayClosedError",
    "GatewaySocket",
    "dial_websocket",
    "gateway_url",
]
