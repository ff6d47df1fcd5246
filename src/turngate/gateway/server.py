"""The HTTP server around the app: uvicorn, configured in one place for the command and tests.

Its connection-level limits (header and body deadlines, idle keep-alive, the connection cap)
live in :mod:`turngate.gateway.http_protocol`. :class:`GatewayServer` runs the app's lifespan
itself, so that a start-up error reaches the caller as the exception it is (one line for the
user, no traceback), and so that shutdown can answer waiting clients before uvicorn closes
their connections.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from turngate.config import GatewayConfig
from turngate.gateway.http_protocol import http_protocol_for

log = logging.getLogger("turngate.server")

GRACEFUL_SHUTDOWN_S = 10.0
"""After the drain (see :class:`GatewayServer`), how long uvicorn waits for connections to
finish before it cancels their handlers."""


def uvicorn_config(
    app: Starlette, config: GatewayConfig, *, loop: str = "auto", log_level: str | None = None
) -> uvicorn.Config:
    """uvicorn's settings for ``app`` served under ``config``."""
    return uvicorn.Config(
        app,
        loop=loop,
        # Header and body deadlines, idle keep-alive, the connection cap, lingering close.
        http=http_protocol_for(config, counts=getattr(app.state, "edge_counts", None)),
        log_level=log_level or _uvicorn_level(config.log_level),
        # uvicorn's loggers propagate to the handler configure_logging installed, so they
        # follow log_format (and its redaction) too.
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=config.ws_frame_bytes_max * 4,
        ws_ping_interval=config.ws_ping_interval_s,
        ws_ping_timeout=config.ws_ping_timeout_s,
        # uvicorn offers permessage-deflate unless told not to; see ws_compression for why
        # turngate does not by default.
        ws_per_message_deflate=config.ws_compression,
        # GatewayServer enters the app's lifespan itself (see the module docstring).
        lifespan="off",
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )


def _uvicorn_level(level: str) -> str:
    """uvicorn's INFO lines (process started, shutting down) repeat what turngate says
    itself, and would come before a start-up error's one line: they show at debug only."""
    return "debug" if level == "debug" else "warning" if level == "info" else level


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening.

    Listening before the server starts means a client that connects early waits in the
    backlog until start-up is complete, instead of being refused.
    """
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so.
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


class GatewayServer(uvicorn.Server):
    """uvicorn's server for one gateway app, with turngate's start-up and shutdown.

    Start-up: the app's lifespan (state directory, store, recovery, lanes) runs before the
    server listens; if it fails, :meth:`serve` raises its error. Once the gateway takes
    requests it logs ``listening on http://host:port`` at INFO and calls ``on_ready``.

    Shutdown (SIGTERM, SIGINT, ``should_exit``): stop accepting connections; then the app's
    ``drain`` (turns in hand get ``shutdown_drain_s`` to end, then every client still waiting
    is answered ``pending``, and WebSocket clients get that frame); then uvicorn closes the
    connections; then the lifespan ends (the engine stops, the store closes).
    """

    def __init__(
        self, config: uvicorn.Config, *, on_ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        app = config.app
        assert isinstance(app, Starlette), "a GatewayServer serves a turngate app"
        self.app = app
        self.on_ready = on_ready
        self._lifespan: AbstractAsyncContextManager[Any] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        lifespan = self.app.router.lifespan_context(self.app)
        await lifespan.__aenter__()
        self._lifespan = lifespan
        try:
            await super().startup(sockets)
        except BaseException:
            await self._end_lifespan()
            raise
        if self.started:
            log.info("listening on %s", self.address(sockets))
            if self.on_ready is not None:
                self.on_ready()

    def address(self, sockets: list[socket.socket] | None = None) -> str:
        """``http://host:port`` the server listens on (the first socket's, when given one)."""
        if sockets:
            host, port = sockets[0].getsockname()[:2]
        else:
            host, port = self.config.host, self.config.port
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            for server in getattr(self, "servers", []):
                server.close()
            drain: Callable[[], Awaitable[None]] | None = getattr(self.app.state, "drain", None)
            if drain is not None:
                await drain()
            await super().shutdown(sockets)
        finally:
            await self._end_lifespan()

    async def _end_lifespan(self) -> None:
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)
