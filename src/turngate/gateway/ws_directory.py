"""What the gateway has, as OpenClaw's interactive clients ask for it on a WebSocket: its
sessions and agents, a session's description, subscriptions to session changes, and the
features turngate does not have, answered with valid empty results so that the clients
render. A list carries ``defaults`` (the model of the agent's sessions), which OpenClaw's
Control UI reads on every render.

``sessions.subscribe`` registers the connection for ``sessions.changed`` events: one each
time a turn of any session is queued, starts or ends, keyed by the session
(``{sessionKey, reason, runId, ts}``). The events carry no row: a client refreshes the rows it
holds with ``sessions.list`` or ``sessions.describe`` (OpenClaw's protocol allows a change that
only invalidates). The subscription belongs to the connection's generation: it ends when the
connection ends (:meth:`Directory.close`), and nothing is sent through a closed one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from turngate.config import GatewayConfig
from turngate.core.keys import parse_session_key
from turngate.gateway.ws_frames import (
    DescribeParams,
    ListParams,
    RequestFrame,
    model_defaults,
    response,
    session_row,
)
from turngate.gateway.ws_outbox import ConnectionClosed, now_ms
from turngate.gateway.ws_peer import Handler, Peer
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventKind

CHANGE_REASONS = {
    EventKind.QUEUED: "send",
    EventKind.STARTED: "agent.run.started",
    EventKind.ENDED: "agent.run.ended",
}
"""The engine events a session subscription reports, and the ``reason`` each carries."""

ABSENT_FEATURES: dict[str, Any] = {
    "question.list": {"questions": []},
    "plugin.approval.list": [],
    "exec.approval.list": [],
    "openclaw.approval.list": [],
    "commands.list": {"commands": []},
}
"""Methods of features turngate does not have, with the empty result each client expects (an
error would show in their windows, or stop them)."""

MAIN_SESSION = "agent:main:main"

DIRECTORY_METHODS = (
    "sessions.list",
    "sessions.subscribe",
    "sessions.unsubscribe",
    "sessions.describe",
    "agents.list",
    *ABSENT_FEATURES,
)


class Directory:
    """The directory methods as answered on one connection (one per connection)."""

    def __init__(self, peer: Peer, engine: Engine, config: GatewayConfig) -> None:
        self.peer = peer
        self.engine = engine
        self.config = config
        self._unsubscribe: Callable[[], None] | None = None

    def handlers(self) -> dict[str, Handler]:
        """The dispatch table of the directory's methods."""
        handlers: dict[str, Handler] = {
            "sessions.list": self._sessions_list,
            "sessions.subscribe": self._subscribe,
            "sessions.unsubscribe": self._unsubscribe_method,
            "sessions.describe": self._describe,
            "agents.list": self._agents_list,
        }
        for method, result in ABSENT_FEATURES.items():
            handlers[method] = self._absent(result)
        return handlers

    def close(self) -> None:
        """The connection ended: its subscription ends with it."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def _subscribe(self, request: RequestFrame) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.engine.events.subscribe(self._on_event)
        payload: dict[str, Any] = {"subscribed": True}
        if request.params:
            # With list parameters, the first page comes with the subscription.
            payload["list"] = await self._page(ListParams.model_validate(request.params))
        self.peer.send(response(request.id, payload))

    async def _sessions_list(self, request: RequestFrame) -> None:
        page = await self._page(ListParams.model_validate(request.params))
        self.peer.send(response(request.id, page))

    async def _page(self, params: ListParams) -> dict[str, Any]:
        """A page of sessions, most recently active first, with the model defaults."""
        rows = (
            []
            if params.spawnedBy
            else await self.engine.store.sessions(params.limit + 1, params.offset)
        )
        more = len(rows) > params.limit
        sessions = [
            session_row(row)
            for row in rows[: params.limit]
            if (row.lease_run_id is not None or not params.activeOnly)
            and params.agentId in (None, row.agent_id)
        ]
        return {
            "ts": now_ms(),
            "sessions": sessions,
            "count": len(sessions),
            "hasMore": more,
            "defaults": model_defaults(self.config.model_refs(params.agentId or "main")[0]),
        }

    async def _unsubscribe_method(self, request: RequestFrame) -> None:
        self.close()
        self.peer.send(response(request.id, {"subscribed": False}))

    async def _describe(self, request: RequestFrame) -> None:
        params = DescribeParams.model_validate(request.params)
        # OpenClaw's clients name the default agent's main session "main".
        key = parse_session_key(MAIN_SESSION if params.key == "main" else params.key)
        record = await self.engine.store.session(str(key))
        row = None if record is None else session_row(record)
        self.peer.send(response(request.id, {"session": row}))

    async def _agents_list(self, request: RequestFrame) -> None:
        agents = self.engine.agents
        ids = agents.ids if agents.strict else ["main"]
        self.peer.send(
            response(
                request.id,
                {
                    "defaultId": "main",
                    "mainKey": "main",
                    "scope": "per-sender",
                    "agents": [
                        {
                            "id": agent_id,
                            "name": agent_id,
                            "model": {"primary": self.config.model_refs(agent_id)[0]},
                        }
                        for agent_id in ids
                    ],
                },
            )
        )

    def _absent(self, result: Any) -> Handler:
        async def answer(request: RequestFrame) -> None:
            self.peer.send(response(request.id, result))

        return answer

    def _on_event(self, event: Event) -> None:
        reason = CHANGE_REASONS.get(event.kind)
        if reason is None or self.peer.closed:
            return  # a closed connection's subscription acts on nothing (I6)
        payload: dict[str, Any] = {"sessionKey": event.session_key, "reason": reason}
        if event.run_id is not None:
            payload["runId"] = event.run_id
        if event.state is not None:
            payload["state"] = event.state
        payload["ts"] = now_ms()
        try:
            self.peer.event("sessions.changed", payload)
        except ConnectionClosed:
            self.close()  # the client is too far behind: the connection is being dropped
