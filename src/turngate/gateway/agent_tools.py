"""Each agent's tools, from the configuration: its MCP servers and its built-in tools.

The agents are built before the engine (the engine serves them), and the built-in tools act
on the engine: so they are built unattached, and :meth:`AgentTools.attach` hands them the
engine once it exists. The MCP servers are built here and run by the gateway's lifespan for
as long as it runs (:meth:`AgentTools.run`); the MCP SDK is imported only when an agent has
servers (it takes about a second).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from turngate.config import GatewayConfig
from turngate.core.clock import Clock
from turngate.gateway.session_desk import EngineDesk
from turngate.runtime.engine import Engine
from turngate.tools.base import Toolbox, ToolSource
from turngate.tools.sessions import SessionTools

if TYPE_CHECKING:
    from turngate.tools.mcp import McpServer


@dataclass(slots=True)
class AgentTools:
    """The toolboxes of the agents that have tools, by agent id, and what runs them."""

    toolboxes: dict[str, Toolbox] = field(default_factory=dict)
    servers: list[McpServer] = field(default_factory=list)
    """Every agent's MCP servers, in configuration order."""
    session_tools: list[SessionTools] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        """Give the built-in tools the engine they act on."""
        for tools in self.session_tools:
            tools.attach(EngineDesk(engine))

    async def run(self) -> None:
        """Run every MCP server until cancelled; each is told to stop on the way out."""
        try:
            async with asyncio.TaskGroup() as servers:
                for server in self.servers:
                    servers.create_task(server.run(), name=f"mcp {server.name}")
        finally:
            for server in self.servers:
                server.stop()


def build_agent_tools(
    config: GatewayConfig, clock: Clock, environ: Mapping[str, str]
) -> AgentTools:
    """The tools of every configured agent (an agent without any has no toolbox)."""
    built = AgentTools()
    rng = random.Random()
    for agent in config.agents:
        sources: list[ToolSource] = []
        if agent.mcp:
            from turngate.tools.mcp import mcp_servers

            servers = mcp_servers(agent, clock=clock, rng=rng, environ=environ)
            built.servers.extend(servers)
            sources.extend(servers)
        if agent.tools:
            session_tools = SessionTools(agent.id, agent.tools)
            built.session_tools.append(session_tools)
            sources.append(session_tools)
        if sources:
            built.toolboxes[agent.id] = Toolbox(sources)
    return built
