"""The HTTP server around the app: uvicorn, configured in one place for the command and tests.

Its connection-level limits (header and body deadlines, idle keep-alive, the connection cap)
live in :mod:`turngate.gateway.http_protocol`.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from turngate.config import GatewayConfig
from turngate.gateway.http_protocol import GatewayHttpProtocol

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
        http=GatewayHttpProtocol,
        log_level=log_level or config.log_level,
        # uvicorn's loggers propagate to the handler configure_logging installed, so they
        # follow log_format (and its redaction) too.
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=config.ws_frame_bytes_max * 4,
        ws_ping_interval=config.ws_ping_interval_s,
        ws_ping_timeout=config.ws_ping_timeout_s,
        lifespan="on",
        timeout_keep_alive=int(max(1, config.http_keepalive_timeout_s)),
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )


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
    """uvicorn's server for one gateway app."""
