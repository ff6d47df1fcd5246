"""Running MCP servers for the tool tests: the test server over stdio (a child process) or over
Streamable HTTP (uvicorn in the test's own loop), and an :class:`McpServer` connected to it.

Every wait is for a condition under a deadline: :func:`until` wakes at each change the server
connection announces (:meth:`McpServer.changed`).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from tests.tools.mcp_test_server import build_server
from turngate.config_mcp import McpServerConfig
from turngate.core.connection import BackoffPolicy
from turngate.gateway.server import listening_socket
from turngate.runtime.clock import LoopClock
from turngate.tools.base import Toolbox, ToolContext
from turngate.tools.mcp import McpServer

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")
FAST = BackoffPolicy(base_s=0.01, cap_s=0.05, healthy_after_s=60.0)
"""Reconnects within milliseconds, so that a test sees the next generation at once."""
WAIT_S = 15.0
"""The longest a test waits for a server to be ready (a stdio server's start imports the SDK:
about a second; more on a busy machine)."""
SERVER_STOP_S = 10.0


def stdio_config(*, legacy: bool = False, **fields: Any) -> McpServerConfig:
    """The test server over stdio, named ``srv``."""
    args = (str(SERVER_SCRIPT), *(("--legacy",) if legacy else ()))
    return McpServerConfig(name="srv", command=sys.executable, args=args, **fields)


async def until(server: McpServer, holds: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Return once ``holds()``; TimeoutError if it does not within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not holds():
            await server.changed()


def names(toolbox: Toolbox) -> list[str]:
    return [spec.name for spec in toolbox.specs()]


@asynccontextmanager
async def connected(
    config: McpServerConfig,
    environ: Mapping[str, str] | None = None,
    *,
    ready: bool = True,
) -> AsyncIterator[McpServer]:
    """An :class:`McpServer` for ``config``, running (and, with ``ready``, offering tools)."""
    server = McpServer(
        config,
        agent_id="main",
        clock=LoopClock(),
        rng=random.Random(7),
        environ=environ or {},
        backoff=FAST,
    )
    async with asyncio.TaskGroup() as group:
        running = group.create_task(server.run())
        try:
            if ready:
                await until(server, lambda: bool(server.specs()))
            yield server
        finally:
            server.stop()
            async with asyncio.timeout(SERVER_STOP_S):
                await running


@dataclass
class HttpServer:
    """The test server over Streamable HTTP, and what it was sent."""

    url: str
    authorizations: list[str | None] = field(default_factory=list)
    """The ``Authorization`` header of each request, in order (None: none sent)."""


@asynccontextmanager
async def http_server() -> AsyncIterator[HttpServer]:
    """A fresh test server on an ephemeral loopback port, in this loop."""
    sock = listening_socket("127.0.0.1", 0)
    served = HttpServer(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
    app = build_server().streamable_http_app()

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            value = headers.get(b"authorization")
            served.authorizations.append(None if value is None else value.decode())
        await app(scope, receive, send)

    config = uvicorn.Config(
        recording,
        # No logging configuration of uvicorn's own: it would be global to the test session.
        log_config=None,
        access_log=False,
        lifespan="on",  # the SDK's session manager runs in the app's lifespan
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield served
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(SERVER_STOP_S):
                await task
        finally:
            sock.close()


CONTEXT = ToolContext("agent:main:tools", "run-1", 1)
"""The caller of the tests' tool calls."""
