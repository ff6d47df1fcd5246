"""One MCP server of one agent, kept connected under the connection supervisor.

Each ``[[agents.mcp]]`` entry becomes an :class:`McpServer`, a
:class:`~turngate.tools.base.ToolSource` of the agent's :class:`~turngate.tools.base.Toolbox`.
Its connection lives under a :class:`~turngate.channels.supervisor.Supervisor`, one generation
per attempt:

1. start the server (stdio) or dial it (Streamable HTTP); negotiate the protocol (the SDK
   probes the 2026 ``server/discover`` and falls back to the ``initialize`` handshake of
   2025-era servers);
2. follow changes, before the first listing so that none is missed: a 2026 server that says
   it has them sends ``notifications/tools/list_changed`` on a ``subscriptions/listen``
   stream, opened now; a 2025-era one sends them unasked. Each one is followed by a listing;
3. list its tools (every page; the attempt is bounded by ``ready_timeout_s`` up to here): the
   connection is *ready* and the tools are offered (:mod:`turngate.tools.mcp_listing` says
   which, under which names);
4. wait until the server's side ends (a stdio server exited, an HTTP transport failed).

There is no heartbeat (the 2026 protocol dropped ``ping``): every call and every listing has a
deadline of its own instead.

A generation that ends takes its tools with it: they are no longer offered, a call to one is
an error result saying the server is unavailable, and every call in flight ends at once
with an error result (the SDK ends them when the connection closes). Then the supervisor backs
off and starts the next generation. What an old generation's callbacks would do (a late
notification, a late listing) is dropped by the supervisor's guard (I6). A variable the
configuration names but the environment lacks stops the server for good
(:class:`~turngate.errors.ToolServerRefusedError`), visible in :meth:`McpServer.snapshot`.

Calls: the toolbox's deadline cancels a call that runs too long; the SDK then tells the server
(``notifications/cancelled``, or on a 2026 HTTP connection by closing the request's stream),
and so does a caller's cancellation. Nothing a server sends ends the process: a failing call
is an error result, a failing connection a lost generation.

Logs go to ``turngate.tools`` (and the supervisor's to ``turngate.channels``, naming the
server ``mcp:<agent>/<server>``), with every value read from the environment blanked.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client, types
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

import turngate
from turngate.channels.generation import Generation
from turngate.channels.supervisor import (
    LOST_ERRORS,
    ConnectionSnapshot,
    Supervisor,
    SupervisorSettings,
)
from turngate.config_agents import AgentConfig
from turngate.config_mcp import McpServerConfig
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ToolServerRefusedError
from turngate.logs import redact
from turngate.tools.base import ToolContext, ToolResult, ToolSpec
from turngate.tools.mcp_env import ServerEnvironment, resolve_environment
from turngate.tools.mcp_listing import SEPARATOR, Offered, offered_tools, result_of
from turngate.tools.mcp_transport import WatchedTransport, open_transport

log = logging.getLogger("turngate.tools")

READY_TIMEOUT_S = 30.0
"""From the start of an attempt to its tools listed: a server's start, handshake, listing."""
LIST_PAGES_MAX = 100
"""Pages of one ``tools/list`` at most; a server that pages on forever is cut off there."""
CLIENT_INFO = types.Implementation(name="turngate", version=turngate.__version__)
MCP_LOST_ERRORS: tuple[type[Exception], ...] = (
    *LOST_ERRORS,
    MCPError,
    ValidationError,
    httpx2.HTTPError,
)
"""How a server's connection fails without a bug on our side: it closed, it answered with an
error or with something unreadable, its HTTP transport failed."""


@dataclass(frozen=True, slots=True)
class _Connected:
    """A ready generation: its client and the tools it offers."""

    generation: int
    client: Client
    offered: Offered


class McpServer:
    """One configured MCP server of one agent: its connection and its tools."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        agent_id: str,
        clock: Clock,
        rng: random.Random,
        environ: Mapping[str, str],
        backoff: BackoffPolicy | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        """``environ`` is the gateway's environment, where ``${NAME}`` values and
        ``headers_env`` variables are read (once, here). ``ready_timeout_s`` bounds an attempt
        from its start to its tools listed, and each later listing."""
        self._config = config
        self._label = f"{agent_id}/{config.name}"
        """How logs name the server: agents do not share their servers' connections."""
        self._prefix = f"{config.name}{SEPARATOR}"
        self._list_timeout_s = ready_timeout_s
        self._environment: ServerEnvironment | ToolServerRefusedError
        try:
            self._environment = resolve_environment(config, environ)
            self._secrets = self._environment.secrets
        except ToolServerRefusedError as refused:
            self._environment = refused  # raised by the first attempt: visible in snapshot()
            self._secrets = ()
        settings = SupervisorSettings(
            backoff=backoff or BackoffPolicy(),
            ready_timeout_s=ready_timeout_s,
            lost_errors=MCP_LOST_ERRORS,
        )
        self._supervisor: Supervisor[None] = Supervisor(
            f"mcp:{self._label}",
            self._connect,
            clock=clock,
            rng=rng,
            settings=settings,
            secrets=self._secrets,
        )
        self._connected: _Connected | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        """The server's name: the namespace of its tools."""
        return self._config.name

    @property
    def label(self) -> str:
        """``<agent id>/<name>``: how logs and ``/health`` name the server."""
        return self._label

    @property
    def call_timeout_s(self) -> float:
        """The configured ``tool_timeout``."""
        return self._config.tool_timeout

    async def run(self) -> None:
        """Keep the server connected until :meth:`stop`, cancellation, or a refusal for good."""
        try:
            await self._supervisor.run()
        finally:
            self._signal()

    def stop(self) -> None:
        """End the connection now (a stdio server is stopped); :meth:`run` returns promptly."""
        self._supervisor.stop()

    def snapshot(self) -> ConnectionSnapshot:
        """The connection's state and counters, for ``/health`` and metrics."""
        return self._supervisor.snapshot()

    async def changed(self) -> None:
        """Return at the next change: tools offered or listed again, an attempt ended, or
        :meth:`run` returned."""
        await self._changed.wait()

    def specs(self) -> list[ToolSpec]:
        """The tools offered now: none unless connected."""
        connected = self._connected
        return [] if connected is None else list(connected.offered.specs)

    def owns(self, name: str) -> bool:
        """Whether ``name`` is in this server's namespace."""
        return name.startswith(self._prefix)

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Call tool ``name`` (namespaced); every failure is an error result."""
        connected = self._connected
        if connected is None:
            return ToolResult(self._unavailable(name), is_error=True)
        tool = connected.offered.names.get(name)
        if tool is None:
            why = "not offered to this agent" if name in connected.offered.withheld else "unknown"
            return ToolResult(f"tool {name} is {why} (MCP server {self.name})", is_error=True)
        try:
            result = await connected.client.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                log.warning(
                    "MCP server %s: its connection closed during a call of %s",
                    self._label,
                    tool,
                    extra={"event": "tool_server_lost"},
                )
                return ToolResult(
                    f"tool {name}: MCP server {self.name} went away during the call, which may"
                    " or may not have taken effect; it is being reconnected",
                    is_error=True,
                )
            return self._failed(name, f"refused the call: {exc.message}")
        except (ValidationError, RuntimeError) as exc:
            return self._failed(name, f"answered with something unusable: {exc}")
        return result_of(result)

    def _failed(self, name: str, what: str) -> ToolResult:
        text = self._redact(f"tool {name}: MCP server {self.name} {what}")
        log.warning("MCP server %s: %s", self._label, text, extra={"event": "tool_call_failed"})
        return ToolResult(text, is_error=True)

    def _unavailable(self, name: str) -> str:
        snapshot = self._supervisor.snapshot()
        why = f"; last error: {snapshot.last_error}" if snapshot.last_error else ""
        return f"tool {name}: MCP server {self.name} is unavailable (it is {snapshot.state}{why})"

    async def _connect(self, gen: Generation[None]) -> None:
        """One generation: start, list, follow changes, until the server's side ends."""
        try:
            if isinstance(self._environment, ToolServerRefusedError):
                raise self._environment
            transport = WatchedTransport(open_transport(self._config, self._environment))
            changed = asyncio.Event()
            notice = gen.guard(self._notice)

            async def on_message(message: IncomingMessage) -> None:
                notice(message, changed)

            client = Client(
                transport, cache=None, message_handler=on_message, client_info=CLIENT_INFO
            )
            async with client:
                gen.identifying()
                try:
                    # Follow changes before the first listing: none is missed in between.
                    following = asyncio.Event()
                    gen.spawn(self._listen(client, changed, following))
                    await following.wait()
                    await self._list(gen, client)
                    gen.ready()
                    gen.spawn(self._relist(gen, client, changed))
                    await transport.ended.wait()
                finally:
                    # Before the client closes: no call may reach a closed client.
                    self._withdraw(gen)
        except ExceptionGroup as group:
            # The SDK's task groups wrap what failed; the supervisor reports the cause.
            raise _first_cause(group) from group
        finally:
            self._signal()

    async def _list(self, gen: Generation[None], client: Client) -> None:
        """List the tools (every page) and offer them, if ``gen`` is still current."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self._list_timeout_s):
                for _ in range(LIST_PAGES_MAX):
                    page = await client.list_tools(cursor=cursor)
                    tools += page.tools
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except TimeoutError:
            raise TimeoutError(
                f"tools/list not answered within {self._list_timeout_s:g}s"
            ) from None
        if cursor is not None:
            log.warning(
                "MCP server %s: over %d pages of tools; the rest not offered",
                self._label,
                LIST_PAGES_MAX,
            )
        offered = offered_tools(
            self.name, tools, self._config.allow, self._config.deny, label=self._label
        )
        gen.guard(self._publish)(gen.number, client, offered)

    def _publish(self, generation: int, client: Client, offered: Offered) -> None:
        self._connected = _Connected(generation, client, offered)
        log.info(
            "MCP server %s: generation %d offers %d tools (%d withheld by allow/deny)",
            self._label,
            generation,
            len(offered.specs),
            len(offered.withheld),
        )
        self._signal()

    def _withdraw(self, gen: Generation[None]) -> None:
        # Not guarded: a generation that is over must still take back what it offered.
        if self._connected is not None and self._connected.generation == gen.number:
            self._connected = None
            self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _notice(self, message: IncomingMessage, changed: asyncio.Event) -> None:
        """What the server sent besides answers: a change of its tools, or something
        unreadable (logged; the connection goes on)."""
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()
        elif isinstance(message, Exception):
            log.warning(
                "MCP server %s sent something unreadable: %s",
                self._label,
                self._redact(f"{type(message).__name__}: {message}"),
                extra={"event": "tool_server_garbage"},
            )

    async def _listen(
        self, client: Client, changed: asyncio.Event, following: asyncio.Event
    ) -> None:
        """Open the 2026 change subscription, when the server has one, and follow it; set
        ``following`` once changes are followed (or cannot be)."""
        tools = client.server_capabilities.tools
        entry = asyncio.timeout(self._list_timeout_s)
        try:
            if tools is None or not tools.list_changed:
                return
            async with entry, client.listen(tools_list_changed=True) as subscription:
                entry.reschedule(None)
                following.set()
                async for _event in subscription:
                    changed.set()
        except TimeoutError:
            if not entry.expired():
                raise
            raise TimeoutError(
                f"subscriptions/listen not acknowledged within {self._list_timeout_s:g}s"
            ) from None
        except ListenNotSupportedError:
            return  # a 2025-era connection: the server sends its notifications unasked
        except SubscriptionLost as exc:
            raise ConnectionError(
                "the tools/list_changed subscription was lost: the server closed the"
                " connection or dropped the stream"
            ) from exc
        except MCPError as exc:
            log.warning(
                "MCP server %s: changes to its tools cannot be followed: %s",
                self._label,
                self._redact(exc.message),
            )
            return
        finally:
            following.set()
        raise ConnectionError("the server ended its tools/list_changed subscription")

    async def _relist(self, gen: Generation[None], client: Client, changed: asyncio.Event) -> None:
        while True:
            await changed.wait()
            changed.clear()
            await self._list(gen, client)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def _first_cause(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first exception in ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first


def mcp_servers(
    agent: AgentConfig,
    *,
    clock: Clock,
    rng: random.Random,
    environ: Mapping[str, str],
    backoff: BackoffPolicy | None = None,
) -> list[McpServer]:
    """The MCP servers of ``agent``, not yet running: run each one's :meth:`McpServer.run`
    in a task group that outlives the agent's turns, and :meth:`McpServer.stop` it at
    shutdown. They are the sources of the agent's :class:`~turngate.tools.base.Toolbox`."""
    return [
        McpServer(server, agent_id=agent.id, clock=clock, rng=rng, environ=environ, backoff=backoff)
        for server in agent.mcp
    ]
