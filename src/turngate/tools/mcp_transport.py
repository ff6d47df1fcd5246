"""The transports to an MCP server, from its configuration, each telling when its server's side
has ended.

A stdio server is a child process speaking over its stdin and stdout (the SDK's
``stdio_client``: started in its own process group, stopped by closing its stdin, then
terminated if it lingers). A Streamable HTTP server is a URL (``streamable_http_client``),
with the configured headers on every request.

The SDK ends every request in flight when a server's output ends (a stdio server that died),
but tells nobody else; :class:`WatchedTransport` sets :attr:`~WatchedTransport.ended` then, so
that the connection's generation ends and the server is started again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Self

import anyio
import httpx2
from mcp import StdioServerParameters, stdio_client
from mcp.client import Transport
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from turngate.config_mcp import McpServerConfig
from turngate.tools.mcp_env import ServerEnvironment

HTTP_CONNECT_TIMEOUT_S = 30.0
"""Connecting, writing a request, waiting for a pooled connection. Reading has no limit of
the transport's own: a server may stay silent while a tool runs or while nothing changes, and
every call and listing has its own deadline."""


def open_transport(config: McpServerConfig, environment: ServerEnvironment) -> Transport:
    """The SDK transport to ``config``'s server (not yet entered)."""
    if config.url is not None:
        return _http_transport(config.url, environment.headers)
    assert config.command is not None  # the configuration has one of the two
    return stdio_client(
        StdioServerParameters(command=config.command, args=list(config.args), env=environment.env)
    )


@asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[TransportStreams]:
    timeout = httpx2.Timeout(HTTP_CONNECT_TIMEOUT_S, read=None)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


class WatchedTransport(AbstractAsyncContextManager[TransportStreams]):
    """An SDK transport whose read side sets :attr:`ended` when it ends."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.ended = asyncio.Event()
        """Set once the server's messages have ended (or the session closed its side)."""

    async def __aenter__(self) -> TransportStreams:
        read_stream, write_stream = await self._inner.__aenter__()
        return _WatchedReadStream(read_stream, self.ended), write_stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc_value, traceback)


class _WatchedReadStream:
    """A read stream that sets ``ended`` at its end; the rest is the inner stream's."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], ended: asyncio.Event) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> object:
        # The SDK reads the sender's context off the stream when it has one (HTTP does).
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended.set()
            raise

    async def aclose(self) -> None:
        self._ended.set()
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None
