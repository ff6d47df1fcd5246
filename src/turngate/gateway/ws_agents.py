"""The agents, their models and the configuration, as OpenClaw's interactive clients ask for
them on a WebSocket: ``agents.list``, ``agent.identity.get``, ``models.list``,
``models.authStatus``, ``chat.metadata`` and ``config.get``, each answered from the
gateway's configuration.

An agent's models are its model and fallbacks; a session keeps its agent's models
(``manualSelectionAllowed: false``: turngate has no per-session model switch). A provider's
key is reported set or missing, never read out; ``config.get`` shows the effective
configuration with every secret replaced by OpenClaw's redaction marker.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from turngate.config_providers import ProviderConfig
from turngate.config_sources import redact
from turngate.gateway.ws_frames import AgentScopeParams, RequestFrame, response
from turngate.gateway.ws_outbox import now_ms
from turngate.gateway.ws_peer import MethodHandler, Peer, Services

REDACTED = "__OPENCLAW_REDACTED__"
"""What OpenClaw's clients know a redacted value by (they never send it back as a value)."""

ACCOUNT_SELECTION = {"kind": "automatic", "label": "Automatic account selection"}
"""Which provider account a session's calls use: always the provider's configured key."""


class AgentCatalog:
    """The agent and model methods as answered on one connection (one per connection, made
    by its first request for one of them)."""

    def __init__(self, peer: Peer, services: Services) -> None:
        self.peer = peer
        self.services = services
        self.config = services.config

    def agent_ids(self) -> list[str]:
        """The gateway's agents (just ``main`` for a gateway without ``[[agents]]``)."""
        agents = self.services.engine.agents
        return list(agents.ids) if agents.strict else ["main"]

    async def _agents_list(self, request: RequestFrame) -> None:
        agents = [
            {
                "id": agent_id,
                "name": agent_id,
                "model": {"primary": self.config.model_refs(agent_id)[0]},
            }
            for agent_id in self.agent_ids()
        ]
        payload = {"defaultId": "main", "mainKey": "main", "scope": "per-sender", "agents": agents}
        self.peer.send(response(request.id, payload))

    async def _identity(self, request: RequestFrame) -> None:
        agent_id = self._agent(AgentScopeParams.model_validate(request.params))
        payload = {"agentId": agent_id, "name": agent_id, "nameSource": "config"}
        self.peer.send(response(request.id, payload))

    async def _models_list(self, request: RequestFrame) -> None:
        params = AgentScopeParams.model_validate(request.params)
        payload: dict[str, Any] = {"models": self._models(params)}
        if params.sessionKey is not None:
            payload["accountSelection"] = ACCOUNT_SELECTION
        self.peer.send(response(request.id, payload))

    async def _chat_metadata(self, request: RequestFrame) -> None:
        params = AgentScopeParams.model_validate(request.params)
        payload: dict[str, Any] = {
            "models": self._models(params),
            "commands": [],
            "swarmEnabled": False,
            "accountSelection": ACCOUNT_SELECTION,
        }
        if params.sessionKey is not None:
            payload["runtimeSelectionLocked"] = True
        self.peer.send(response(request.id, payload))

    def _models(self, params: AgentScopeParams) -> list[dict[str, Any]]:
        """The models of the agent ``params`` name, or of every agent, each once."""
        scoped = params.sessionKey is not None or params.agentId is not None
        agent_ids = [self._agent(params)] if scoped else self.agent_ids()
        refs = dict.fromkeys(ref for a in agent_ids for ref in self.config.model_refs(a))
        providers = {p.id: p for p in self.config.all_providers}
        return [_model_choice(ref, providers.get(ref.partition("/")[0])) for ref in refs]

    def _agent(self, params: AgentScopeParams) -> str:
        """The agent ``params`` name, refused (``unknown_agent``) if it is not served."""
        agent_id = params.agent_id()
        field = "sessionKey" if params.sessionKey is not None else "agentId"
        self.services.engine.agents.get(agent_id, field)
        return agent_id

    async def _auth_status(self, request: RequestFrame) -> None:
        AgentScopeParams.model_validate(request.params)
        providers = [_auth_entry(p) for p in self.config.all_providers]
        self.peer.send(response(request.id, {"ts": now_ms(), "providers": providers}))

    async def _config_get(self, request: RequestFrame) -> None:
        config = {
            name: redact(name, value, REDACTED)
            for name, value in self.config.model_dump(mode="json").items()
        }
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        config_file = self.services.config_file
        payload = {
            "path": "" if config_file is None else str(config_file),
            "exists": config_file is not None,
            "valid": True,
            "config": config,
            "sourceConfig": config,
            "resolved": config,
            "hash": f"sha256:{digest}",
            "configRevisionHash": f"sha256:{digest}",
            "issues": [],
            "warnings": [],
            "legacyIssues": [],
        }
        self.peer.send(response(request.id, payload))


HANDLERS: dict[str, MethodHandler[AgentCatalog]] = {
    "agents.list": AgentCatalog._agents_list,
    "agent.identity.get": AgentCatalog._identity,
    "models.list": AgentCatalog._models_list,
    "models.authStatus": AgentCatalog._auth_status,
    "chat.metadata": AgentCatalog._chat_metadata,
    "config.get": AgentCatalog._config_get,
}
"""The dispatch table of :class:`AgentCatalog`: each method's handler, by method name."""


def _key_set(provider: ProviderConfig) -> bool | None:
    """Whether the provider's API key variable is set (None: it takes no key)."""
    if provider.api_key_env is None:
        return None
    return bool(os.environ.get(provider.api_key_env))


def _model_choice(ref: str, provider: ProviderConfig | None) -> dict[str, Any]:
    provider_id, _, model = ref.partition("/")
    choice: dict[str, Any] = {
        "id": model,
        "name": model,
        "provider": provider_id,
        "available": True,
        "manualSelectionAllowed": False,
    }
    if provider is not None and _key_set(provider) is False:
        choice.update(available=False, unavailableReason="missing-auth")
    return choice


def _auth_entry(provider: ProviderConfig) -> dict[str, Any]:
    """A provider as ``models.authStatus`` shows it: ``static`` (no key), ``ok`` (its key's
    variable is set) or ``missing``."""
    key_set = _key_set(provider)
    entry: dict[str, Any] = {
        "provider": provider.id,
        "authProvider": provider.id,
        "displayName": provider.id,
        "status": "static" if key_set is None else "ok" if key_set else "missing",
        "profiles": [],
    }
    if provider.api_key_env is not None:
        entry["apiKey"] = {"source": "env", "envVar": provider.api_key_env}
    return entry
