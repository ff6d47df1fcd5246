"""A real MCP server for the tool tests, written with the SDK's own ``MCPServer``.

Run as a script it serves stdio (``--legacy``: the 2025 handshake era only, as a server built
on an older SDK would); :func:`build_server` gives a fresh one to serve over Streamable HTTP in
the test's own process.

Its tools: ``add``; ``hang`` (never returns; records that it started and that it was
cancelled); ``seen`` (waits, up to :data:`SEEN_WAIT_S`, for ``hang`` with that label to have
started or been cancelled: how a test learns what the server saw, without sleeping); ``fail``
(the tool reports an error); ``die`` (the process exits mid-call); ``grow`` (adds the tool
``extra`` and announces the change, in either era); ``env`` (a variable of the server's
environment); and two whose names no model API accepts once namespaced.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

SEEN_WAIT_S = 5.0
FAILURE_TEXT = "the tool failed on purpose"
LONG_NAME = "a_tool_name_so_long_that_no_model_api_accepts_it_once_namespaced"
UNSET = "(unset)"


def build_server() -> MCPServer:
    """A fresh server: its own tools and its own record of what ``hang`` saw."""
    server = MCPServer("turngate-test")
    events: dict[tuple[str, str], anyio.Event] = {}

    def event(label: str, what: str) -> anyio.Event:
        return events.setdefault((label, what), anyio.Event())

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    async def hang(label: str) -> str:
        """Never return (unless cancelled)."""
        event(label, "started").set()
        try:
            await anyio.sleep_forever()
        finally:
            event(label, "cancelled").set()
        return "unreachable"

    @server.tool()
    async def seen(label: str, what: Literal["started", "cancelled"]) -> bool:
        """Whether hang(label) has started / been cancelled, waiting a little for it."""
        with anyio.move_on_after(SEEN_WAIT_S):
            await event(label, what).wait()
        return event(label, what).is_set()

    @server.tool()
    def fail() -> str:
        """Report an error."""
        raise ToolError(FAILURE_TEXT)

    @server.tool()
    def die() -> str:
        """Exit the server process at once."""
        os._exit(3)

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add the tool `extra`, and say so."""

        def extra(x: int) -> int:
            """Double a number."""
            return 2 * x

        server.add_tool(extra)
        await ctx.notify_tools_changed()  # 2026: to subscriptions/listen streams
        await ctx.session.send_tool_list_changed()  # 2025: a notification, unasked
        return "grown"

    @server.tool()
    def env(name: str) -> str:
        """A variable of this server's environment."""
        return os.environ.get(name, UNSET)

    def unlisted() -> str:
        """A tool no model may be offered: its name does not fit."""
        return "never called"

    server.add_tool(unlisted, name="dotted.name")
    server.add_tool(unlisted, name=LONG_NAME)
    return server


async def _serve_legacy(server: MCPServer) -> None:
    """Serve stdio in the 2025 handshake era only: ``server/discover`` is not understood."""
    from mcp.server.runner import serve_loop
    from mcp.server.stdio import stdio_server

    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream), lowlevel.lifespan(lowlevel) as state:
        await serve_loop(
            lowlevel,
            read_stream,
            write_stream,
            lifespan_state=state,
            init_options=lowlevel.create_initialization_options(),
        )


if __name__ == "__main__":
    if "--legacy" in sys.argv:
        anyio.run(_serve_legacy, build_server())
    else:
        build_server().run()
