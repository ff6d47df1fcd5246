"""The gateway's sessions as OpenClaw's interactive clients list and describe them on a
WebSocket, and the features turngate does not have, answered with valid empty results so
that those clients render instead of breaking.

A session list carries ``defaults`` (the model of the agent's sessions), which OpenClaw's
Control UI reads on every render. Subscriptions to sessions are
:mod:`~turngate.gateway.ws_session_events`'; agents, models and the configuration
:mod:`~turngate.gateway.ws_agents`'; cron jobs :mod:`~turngate.gateway.ws_cron`'.
"""

from __future__ import annotations

from typing import Any

from turngate.config import GatewayConfig
from turngate.gateway.ws_frames import (
    KeyParams,
    ListParams,
    ObserverParams,
    RequestFrame,
    model_defaults,
    response,
    session_row,
)
from turngate.gateway.ws_outbox import now_ms
from turngate.gateway.ws_peer import MethodHandler, Peer
from turngate.runtime.engine import Engine
from turngate.store.base import SessionRecord

SCAN_BATCH = 500
"""Sessions read from the store at a time when a list is filtered (by agent, by activity)."""

ABSENT_FEATURES: dict[str, Any] = {
    "question.list": {"questions": []},
    "plugin.approval.list": [],
    "exec.approval.list": [],
    "openclaw.approval.list": [],
    "commands.list": {"commands": []},
    "update.status": {"sentinel": None, "updateAvailable": None},
    "talk.catalog": {
        "modes": [],
        "transports": [],
        "brains": [],
        "speech": {"providers": []},
        "transcription": {"providers": []},
        "realtime": {"providers": []},
    },
    "sessions.branches.list": {"branches": []},
    "sessions.companion.state": {"exchanges": []},
    "tasks.list": {"tasks": []},
    "progressCard.get": {"card": None},
}
"""Methods of features turngate does not have (questions, approvals, commands, updates,
voice, branches, tasks, progress cards), with the empty result each client expects: an error
would show in their windows, or stop them."""


class Directory:
    """The directory methods as answered on one connection (one per connection, made by its
    first request for one of them)."""

    def __init__(self, peer: Peer, engine: Engine, config: GatewayConfig) -> None:
        self.peer = peer
        self.engine = engine
        self.config = config

    async def _sessions_list(self, request: RequestFrame) -> None:
        page = await self.page(ListParams.model_validate(request.params))
        self.peer.send(response(request.id, page))

    async def page(self, params: ListParams) -> dict[str, Any]:
        """A page of sessions, most recently active first, with the model defaults."""
        if params.spawnedBy:
            rows, more = [], False  # turngate's sessions spawn none
        elif params.agentId is None and not params.activeOnly:
            rows = await self.engine.store.sessions(params.limit + 1, params.offset)
            rows, more = rows[: params.limit], len(rows) > params.limit
        else:
            rows, more = await self._filtered(params)
        sessions = [session_row(row) for row in rows]
        return {
            "ts": now_ms(),
            "sessions": sessions,
            "count": len(sessions),
            "hasMore": more,
            "defaults": model_defaults(self.config.model_refs(params.agentId or "main")[0]),
        }

    async def _filtered(self, params: ListParams) -> tuple[list[SessionRecord], bool]:
        """The page of the sessions that pass the filters (``offset`` counts those only),
        read from the store a batch at a time; and whether more pass after it."""
        passed: list[SessionRecord] = []
        skip, at = params.offset, 0
        while True:
            batch = await self.engine.store.sessions(SCAN_BATCH, at)
            at += len(batch)
            for row in batch:
                if params.agentId not in (None, row.agent_id):
                    continue
                if params.activeOnly and row.lease_run_id is None:
                    continue
                if skip:
                    skip -= 1
                    continue
                passed.append(row)
                if len(passed) > params.limit:
                    return passed[: params.limit], True
            if len(batch) < SCAN_BATCH:
                return passed, False

    async def _describe(self, request: RequestFrame) -> None:
        key = KeyParams.model_validate(request.params).session_key()
        record = await self.engine.store.session(str(key))
        row = None if record is None else session_row(record)
        self.peer.send(response(request.id, {"session": row}))

    async def _observer_visibility(self, request: RequestFrame) -> None:
        # turngate sends a watching client the same events whether it shows them or not.
        ObserverParams.model_validate(request.params)
        self.peer.send(response(request.id, {"ok": True}))

    async def _absent(self, request: RequestFrame) -> None:
        self.peer.send(response(request.id, ABSENT_FEATURES[request.method]))


HANDLERS: dict[str, MethodHandler[Directory]] = {
    "sessions.list": Directory._sessions_list,
    "sessions.describe": Directory._describe,
    "sessions.observer.visibility": Directory._observer_visibility,
    **dict.fromkeys(ABSENT_FEATURES, Directory._absent),
}
"""The dispatch table of :class:`Directory`: each method's handler, by method name."""
