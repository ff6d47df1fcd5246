"""Agents as the runtime sees them: per agent, its session policy, model, prompt and tools.

A registry is either *open* (no agents configured: any agent id is served with the defaults,
so a gateway with no configuration answers ``agent:test:main``) or *strict* (only the agents
configured, and ``main``; any other agent id is refused with ``unknown_agent``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from turngate.core.queue import QueueMode
from turngate.core.session import SessionPolicy
from turngate.errors import UnknownAgentError
from turngate.providers.base import Provider
from turngate.tools.base import Toolbox


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """What the runtime needs to serve one agent's sessions."""

    agent_id: str
    policy: SessionPolicy
    provider: Provider
    system_prompt: str | None = None
    queue_mode: QueueMode = QueueMode.FOLLOWUP
    toolbox: Toolbox | None = None
    """The tools its model is offered; None: none, and the model only talks."""
    max_steps: int = 1
    """Model steps one run may take (each after the results of the one before's tool
    calls) before it fails with ``max_steps``."""


class AgentRegistry:
    """Looks agents up by id; see the module docstring for open and strict registries."""

    def __init__(self, default: AgentSpec, agents: Iterable[AgentSpec] = (), *, strict: bool):
        self.default = default
        self.strict = strict
        self._agents = {agent.agent_id: agent for agent in agents}
        if strict and "main" not in self._agents:
            self._agents["main"] = replace(default, agent_id="main")

    @property
    def ids(self) -> list[str]:
        """The configured agent ids, sorted."""
        return sorted(self._agents)

    def specs(self) -> list[AgentSpec]:
        """The default agent and every configured one."""
        return [self.default, *self._agents.values()]

    def get(self, agent_id: str, field: str = "sessionKey") -> AgentSpec:
        """The agent ``agent_id``, or :class:`UnknownAgentError` naming ``field`` (where the
        client named it) and the agents there are."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        if not self.strict:
            return replace(self.default, agent_id=agent_id)
        raise UnknownAgentError(
            f"{field}: unknown agent {agent_id!r}; this gateway serves {', '.join(self.ids)}"
        )
