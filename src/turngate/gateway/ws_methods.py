"""What each method of the gateway WebSocket protocol does, answered on one connection.

:class:`Methods` holds the handlers of ``chat.send`` (with the relay of its run's events),
``agent``, ``chat.history``, ``chat.startup``, ``chat.abort`` and ``health``, and the
delivery of lane (heartbeat, cron) replies. It knows the connection only as a :class:`Peer`
that queues frames; answering a request that fails, rate limits and the handshake are the
connection's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from turngate.config import GatewayConfig
from turngate.core.keys import parse_session_key
from turngate.core.turn import Outcome
from turngate.errors import ErrorCode, UnavailableError
from turngate.gateway.admission import Ask, admit, no_outcome, outcome_of
from turngate.gateway.frames import WIRE_STATUS
from turngate.gateway.ws_frames import (
    AgentParams,
    ChatSendParams,
    RequestFrame,
    SessionParams,
    assistant_message,
    client_session,
    error_response,
    history_message,
    model_defaults,
    pending_chat,
    response,
    terminal_chat,
    tool_event,
)
from turngate.gateway.ws_outbox import ConnectionClosed, now_ms
from turngate.gateway.ws_peer import MethodHandler, Peer
from turngate.lanes.delivery import DeliveryTargets
from turngate.runtime.deltas import DeltaStream
from turngate.runtime.engine import Engine, Ticket

log = logging.getLogger("turngate.gateway")

RUN_IDS_REMEMBERED_MAX = 4096
"""Run ids a connection remembers having had their terminal ``chat`` event. A retry of an
older one (same ``idempotencyKey``, same connection) would get it a second time."""
LANE = "ws"


class RunLedger:
    """The run ids one connection relays, so that each gets exactly one terminal event there.

    A retry of a run id (same ``idempotencyKey``) on the connection that is streaming it, or
    already sent its terminal event, is acknowledged and nothing more. Each connection keeps
    its own ledger: a client that reconnects and retries gets the run's reply on the new one.
    """

    def __init__(self, delivered_max: int) -> None:
        self._relaying: set[str] = set()
        self._delivered: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._delivered_max = delivered_max

    def claim(self, run_id: str) -> bool:
        """True if the caller is to relay ``run_id`` (nobody on this connection has yet)."""
        if run_id in self._relaying or run_id in self._delivered:
            return False
        self._relaying.add(run_id)
        return True

    def delivered(self, run_id: str) -> None:
        """The run's terminal event is queued; a retry from now on gets only a response."""
        self._relaying.discard(run_id)
        self._delivered[run_id] = None
        if len(self._delivered) > self._delivered_max:
            del self._delivered[next(iter(self._delivered))]


@dataclass(slots=True)
class _Relay:
    """What one run's ``chat`` events have said so far on this connection."""

    seq: int = 0
    text: str = ""


class Methods:
    """The protocol's methods as answered on one connection (one per connection, made by
    its first request for one of them)."""

    def __init__(
        self,
        peer: Peer,
        engine: Engine,
        config: GatewayConfig,
        targets: DeliveryTargets,
    ) -> None:
        self.peer = peer
        self.engine = engine
        self.config = config
        self.targets = targets
        self._runs = RunLedger(RUN_IDS_REMEMBERED_MAX)

    async def _submit(self, request: RequestFrame, *, stream: bool) -> tuple[Ticket, str]:
        agent_method = request.method == "agent"
        model = AgentParams if agent_method else ChatSendParams
        params = model.model_validate(request.params)
        timeout_s = None if params.timeoutMs is None else params.timeoutMs / 1000
        if isinstance(params, AgentParams) and params.timeout is not None:
            timeout_s = float(params.timeout)
        ask = Ask(
            str(client_session(params.sessionKey)),
            params.message,
            LANE,
            params.idempotencyKey,
            params.queueMode,
            timeout_s,
            params.agentId,
            stream,
        )
        ticket = await admit(self.engine, self.config, ask)
        self.targets.register(ticket.session_key, self.deliver_lane_outcome)
        return ticket, parse_session_key(ticket.session_key).agent_id

    async def _chat_send(self, request: RequestFrame) -> None:
        ticket, _ = await self._submit(request, stream=True)
        status = _ack_status(ticket)
        relay = self._runs.claim(ticket.turn_id)
        self.peer.send(response(request.id, {"runId": ticket.turn_id, "status": status}))
        if relay:
            await self._relay_run(ticket)

    async def _relay_run(self, ticket: Ticket) -> None:
        """The run's deltas, then its one terminal ``chat`` event on this connection."""
        relay = _Relay()
        try:
            payload = await self._run_events(ticket, relay)
        except ConnectionClosed:
            raise
        except Exception:
            log.exception(
                "%s: relaying run %s failed unexpectedly", self.peer.conn_id, ticket.turn_id
            )
            payload = pending_chat(
                ticket.turn_id,
                ticket.session_key,
                ErrorCode.INTERNAL,
                f"internal error while relaying this run (connection {self.peer.conn_id}"
                f" logged it); GET /turns/{ticket.turn_id} shows how it ends",
            )
        finally:
            self._runs.delivered(ticket.turn_id)
        payload["seq"] = relay.seq + 1
        self.peer.event("chat", payload)

    async def _run_events(self, ticket: Ticket, relay: _Relay) -> dict[str, Any]:
        """Send the run's deltas; return its terminal ``chat`` payload (without ``seq``)."""
        try:
            if ticket.deltas is not None:
                async with asyncio.timeout_at(ticket.wait_deadline):
                    await self._stream_deltas(ticket, ticket.deltas, relay)
            outcome = await outcome_of(self.engine, ticket)
        except TimeoutError:
            exc = no_outcome(self.engine, ticket)
            return pending_chat(ticket.turn_id, ticket.session_key, exc.code, exc.message)
        except UnavailableError as exc:
            return pending_chat(ticket.turn_id, ticket.session_key, exc.code, exc.message)
        return terminal_chat(outcome, ticket.session_key, now_ms())

    def deliver_lane_outcome(self, session_key: str, outcome: Outcome) -> bool:
        """A heartbeat's or cron job's reply for a session this client last used."""
        if self.peer.closed:
            return False
        try:
            payload = terminal_chat(outcome, session_key, now_ms())
            payload["seq"] = 1
            self.peer.event("chat", payload)
        except ConnectionClosed:
            return False
        return True

    async def _stream_deltas(self, ticket: Ticket, deltas: DeltaStream, relay: _Relay) -> None:
        """Send each text delta as a ``chat`` event, counting them in ``relay``, and each tool
        call beginning or returning as an ``agent`` event (``stream: "tool"``)."""
        async for _, delta in deltas:
            if not isinstance(delta, str):
                self.peer.event(
                    "agent", tool_event(ticket.turn_id, ticket.session_key, delta, now_ms())
                )
                continue
            relay.seq += 1
            relay.text += delta
            self.peer.event(
                "chat",
                {
                    "runId": ticket.turn_id,
                    "sessionKey": ticket.session_key,
                    "seq": relay.seq,
                    "state": "delta",
                    "deltaText": delta,
                    "message": assistant_message(relay.text, now_ms()),
                },
            )

    async def _agent(self, request: RequestFrame) -> None:
        ticket, agent_id = await self._submit(request, stream=False)
        self.peer.send(
            response(
                request.id,
                {
                    "runId": ticket.turn_id,
                    "sessionKey": ticket.session_key,
                    "agentId": agent_id,
                    "status": "accepted",
                    "acceptedAt": now_ms(),
                },
            )
        )
        outcome = await outcome_of(self.engine, ticket)
        if outcome.reply is None:
            code = outcome.code or ErrorCode.INTERNAL
            self.peer.send(error_response(request.id, code, outcome.message))
            return
        self.peer.send(
            response(
                request.id,
                {
                    "runId": ticket.turn_id,
                    "status": "ok",
                    "summary": "completed",
                    "result": {
                        "payloads": [{"text": outcome.reply}],
                        "meta": {
                            "agentId": agent_id,
                            "sessionKey": ticket.session_key,
                            "runId": outcome.run_id,
                        },
                    },
                },
            )
        )

    async def _chat_history(self, request: RequestFrame) -> None:
        self.peer.send(response(request.id, await self._history(request)))

    async def _chat_startup(self, request: RequestFrame) -> None:
        """What a chat page opens with: the history, and the model defaults of its agent."""
        payload = await self._history(request)
        agent_id = parse_session_key(payload["sessionKey"]).agent_id
        payload["defaults"] = model_defaults(self.config.model_refs(agent_id)[0])
        self.peer.send(response(request.id, payload))

    async def _history(self, request: RequestFrame) -> dict[str, Any]:
        params = SessionParams.model_validate(request.params)
        key = client_session(params.sessionKey)
        limit = params.limit or 100
        entries = await self.engine.store.transcript(str(key), limit + 1)
        more = len(entries) > limit
        messages = [history_message(entry) for entry in entries[-limit:]]
        return {"sessionKey": str(key), "messages": messages, "hasMore": more}

    async def _chat_abort(self, request: RequestFrame) -> None:
        params = SessionParams.model_validate(request.params)
        aborted = await self.engine.abort(client_session(params.sessionKey), params.runId)
        self.peer.send(
            response(request.id, {"ok": True, "aborted": bool(aborted), "runIds": aborted})
        )

    async def _health(self, request: RequestFrame) -> None:
        self.peer.send(response(request.id, health_snapshot(self.engine)))


HANDLERS: dict[str, MethodHandler[Methods]] = {
    "chat.send": Methods._chat_send,
    "agent": Methods._agent,
    "chat.history": Methods._chat_history,
    "chat.startup": Methods._chat_startup,
    "chat.abort": Methods._chat_abort,
    "health": Methods._health,
}
"""The dispatch table of :class:`Methods`: each method's handler, by method name."""


def health_snapshot(engine: Engine) -> dict[str, Any]:
    """The engine's state as ``health`` and ``hello-ok`` report it."""
    snapshot = engine.snapshot()
    return {
        "ok": True,
        "status": "live",
        "activeSessions": snapshot.active_sessions,
        "runningTurns": snapshot.running_turns,
        "queuedTurns": snapshot.queued_turns,
        "oldestLeaseAgeS": round(snapshot.oldest_lease_age_s, 3),
    }


def _ack_status(ticket: Ticket) -> str:
    """``chat.send``'s acknowledgement: ``started``, ``in_flight`` (a retry of a run under
    way), or a retried run's final status."""
    if not ticket.duplicate:
        return "started"
    if not ticket.outcome.done():
        return "in_flight"
    return WIRE_STATUS[ticket.outcome.result().state]
