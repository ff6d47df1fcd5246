"""The gateway WebSocket protocol at ``/`` and ``/ws`` (OpenClaw's protocol 4).

One :class:`Connection` per socket is one *generation*: its writer, its tick timer and its
request handlers live in its task group and die with it, so nothing scheduled for a closed
connection can ever run (the field report of seed 004). Closing a connection never touches
its turns: they are in the engine, and a client that reconnects and resends its
``idempotencyKey`` gets the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from turngate import __version__
from turngate.config import GatewayConfig
from turngate.core.keys import parse_session_key
from turngate.core.turn import Outcome
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    TurngateError,
    UnauthorizedError,
    UnavailableError,
)
from turngate.gateway.auth import token_matches
from turngate.gateway.frames import WIRE_STATUS, check_message, parse_queue_mode
from turngate.gateway.ws_frames import (
    PRE_HANDSHAKE_BYTES_MAX,
    PROTOCOL_VERSION,
    AgentParams,
    ChatSendParams,
    ConnectParams,
    ListParams,
    RequestFrame,
    SessionParams,
    assistant_message,
    error_response,
    error_shape,
    response,
    terminal_chat,
)
from turngate.lanes.delivery import DeliveryTargets
from turngate.runtime.deltas import DeltaStream
from turngate.runtime.engine import Engine, SubmitRequest, Ticket

log = logging.getLogger("turngate.gateway")

HANDSHAKE_TIMEOUT_S = 10.0
OUTBOX_FRAMES_MAX = 1000
"""A client that falls this far behind is disconnected (its turns go on)."""
INFLIGHT_REQUESTS_MAX = 256
WAIT_MARGIN_S = 5.0
LANE = "ws"
METHODS = ("connect", "chat.send", "agent", "chat.history", "chat.abort", "sessions.list", "health")
EVENTS = ("connect.challenge", "chat", "tick", "error")

_generations = itertools.count(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Closed(Exception):
    """The connection is over; unwind its task group."""


class TokenBucket:
    """Request frames allowed per second, with a burst of twice that."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.capacity = 2 * rate_per_s
        self.tokens = self.capacity
        self.updated = 0.0

    def take(self, now: float) -> float:
        """0.0 if a frame may pass now, else seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Connection:
    """One client socket, from challenge to close."""

    def __init__(
        self,
        websocket: WebSocket,
        engine: Engine,
        config: GatewayConfig,
        targets: DeliveryTargets,
    ) -> None:
        self.ws = websocket
        self.engine = engine
        self.config = config
        self.targets = targets
        self.closed = False
        self.generation = next(_generations)
        self.conn_id = f"conn-{self.generation}-{uuid.uuid4().hex[:8]}"
        self._outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_FRAMES_MAX)
        self._seq = 0
        self._bucket = TokenBucket(config.ws_frames_per_s_max)
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[RequestFrame], Awaitable[None]]] = {
            "chat.send": self._chat_send,
            "agent": self._agent,
            "chat.history": self._chat_history,
            "chat.abort": self._chat_abort,
            "sessions.list": self._sessions_list,
            "health": self._health,
        }

    async def serve(self) -> None:
        """Run the connection until the client leaves or the handshake fails."""
        await self.ws.accept()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._spawn(self._writer())
                self.event("connect.challenge", {"nonce": str(uuid.uuid4()), "ts": _now_ms()})
                try:
                    if await self._handshake():
                        self._spawn(self._ticker())
                        await self._read()
                finally:
                    self.closed = True  # this generation is over: nothing may act through it
                    for task in list(self._tasks):
                        task.cancel()
        except* (_Closed, WebSocketDisconnect):
            pass

    # -- frames out ---------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a client too far behind is disconnected."""
        try:
            self._outbox.put_nowait(json.dumps(frame, ensure_ascii=False))
        except asyncio.QueueFull:
            log.warning("%s: client is %d frames behind; closing", self.conn_id, OUTBOX_FRAMES_MAX)
            raise _Closed from None

    def event(self, name: str, payload: dict[str, Any]) -> None:
        """Queue an event frame with this connection's next ``seq``."""
        self._seq += 1
        self.send({"type": "event", "event": name, "payload": payload, "seq": self._seq})

    async def _writer(self) -> None:
        while True:
            text = await self._outbox.get()
            await self.ws.send_text(text)

    async def _ticker(self) -> None:
        interval_s = self.config.ws_tick_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            self.event("tick", {"ts": _now_ms()})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- frames in ----------------------------------------------------------------------

    async def _receive(self, bytes_max: int) -> dict[str, Any] | None:
        """The next frame as a JSON object; None (after an error frame) when unusable."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _Closed
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            text = data.decode("utf-8", errors="replace")
        if len(text.encode()) > bytes_max:
            self.event(
                "error",
                error_shape(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame: over the limit of {bytes_max} bytes; frame ignored",
                ),
            )
            return None
        try:
            frame = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            self.event("error", error_shape(ErrorCode.INVALID_JSON, "frame: not valid JSON"))
            return None
        if not isinstance(frame, dict):
            self.event("error", error_shape(ErrorCode.INVALID_JSON, "frame: not a JSON object"))
            return None
        return frame

    async def _handshake(self) -> bool:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                frame = await self._receive(PRE_HANDSHAKE_BYTES_MAX)
        except TimeoutError:
            await self._refuse(None, ErrorCode.INVALID_FIELD, "connect: no connect frame in time")
            return False
        if frame is None:
            await self._refuse(None, ErrorCode.INVALID_FIELD, "connect: first frame unusable")
            return False
        request_id = frame.get("id") if isinstance(frame.get("id"), str) else None
        if frame.get("type") != "req" or frame.get("method") != "connect":
            await self._refuse(
                request_id, ErrorCode.INVALID_FIELD, "the first frame must be a connect request"
            )
            return False
        try:
            request = RequestFrame.model_validate(frame)
            params = ConnectParams.model_validate(request.params)
        except ValidationError as exc:
            await self._refuse(request_id, ErrorCode.INVALID_FIELD, _field_message(exc))
            return False
        if not params.minProtocol <= PROTOCOL_VERSION <= params.maxProtocol:
            await self._refuse(
                request.id,
                ErrorCode.INVALID_FIELD,
                f"minProtocol/maxProtocol: this gateway speaks protocol {PROTOCOL_VERSION}",
            )
            return False
        presented = params.auth.get("token") or params.auth.get("password")
        if not token_matches(self.config.token, presented if isinstance(presented, str) else None):
            error = UnauthorizedError("auth.token: missing or not this gateway's token")
            await self._refuse(request.id, error.code, error.message)
            return False
        self.send(response(request.id, self._hello(params)))
        return True

    async def _refuse(self, request_id: str | None, code: ErrorCode, message: str) -> None:
        log.warning("%s: handshake refused: %s", self.conn_id, message)
        if request_id is not None:
            self.send(error_response(request_id, code, message))
        else:
            self.event("error", error_shape(code, message))
        await self._drain()
        await self.ws.close(code=1008)
        raise _Closed

    async def _drain(self) -> None:
        async with asyncio.timeout(5.0):
            while not self._outbox.empty():
                await self.ws.send_text(self._outbox.get_nowait())

    def _hello(self, params: ConnectParams) -> dict[str, Any]:
        return {
            "type": "hello-ok",
            "protocol": PROTOCOL_VERSION,
            "server": {"version": __version__, "connId": self.conn_id, "name": "turngate"},
            "features": {"methods": list(METHODS), "events": list(EVENTS)},
            "snapshot": self._snapshot(),
            "auth": {
                "method": "token" if self.config.token else "none",
                "role": params.role,
                "scopes": params.scopes,
            },
            "policy": {
                "maxPayload": self.config.ws_frame_bytes_max,
                "maxBufferedBytes": self.config.ws_frame_bytes_max * 4,
                "tickIntervalMs": self.config.ws_tick_interval_ms,
            },
        }

    async def _read(self) -> None:
        while True:
            frame = await self._receive(self.config.ws_frame_bytes_max)
            if frame is None:
                continue
            try:
                request = RequestFrame.model_validate(frame)
            except ValidationError as exc:
                self.event("error", error_shape(ErrorCode.INVALID_FIELD, _field_message(exc)))
                continue
            wait_s = self._bucket.take(asyncio.get_running_loop().time())
            if wait_s > 0 or self._inflight >= INFLIGHT_REQUESTS_MAX:
                refused = error_response(
                    request.id,
                    ErrorCode.RATE_LIMITED,
                    f"rate limited: at most {self.config.ws_frames_per_s_max:g} requests/s"
                    " per connection",
                )
                refused["error"]["retryAfterMs"] = max(1, int(wait_s * 1000))
                self.send(refused)
                continue
            log.debug(
                "%s: request %s %s %s", self.conn_id, request.id, request.method, request.params
            )
            handler = self._handlers.get(request.method)
            if handler is None:
                self.send(
                    error_response(
                        request.id,
                        ErrorCode.INVALID_FIELD,
                        f"method: unknown method {request.method!r};"
                        f" this gateway serves {', '.join(METHODS[1:])}",
                    )
                )
                continue
            self._spawn(self._handle(handler, request))

    async def _handle(
        self, handler: Callable[[RequestFrame], Awaitable[None]], request: RequestFrame
    ) -> None:
        self._inflight += 1
        try:
            await handler(request)
        except TurngateError as exc:
            self.send(error_response(request.id, exc.code, exc.message))
        except ValidationError as exc:
            self.send(error_response(request.id, ErrorCode.INVALID_FIELD, _field_message(exc)))
        finally:
            self._inflight -= 1

    # -- methods ------------------------------------------------------------------------

    async def _submit(self, request: RequestFrame, *, stream: bool) -> tuple[Ticket, str]:
        agent_method = request.method == "agent"
        model = AgentParams if agent_method else ChatSendParams
        params = model.model_validate(request.params)
        key = parse_session_key(params.sessionKey)
        if params.agentId is not None and params.agentId != key.agent_id:
            raise InvalidFieldError(
                "agentId", f"{params.agentId!r} is not the agent of sessionKey {key}"
            )
        agent = self.engine.agents.get(key.agent_id)
        mode = parse_queue_mode(params.queueMode, agent.queue_mode)
        check_message(params.message, self.config.message_chars_max)
        timeout_s = None if params.timeoutMs is None else params.timeoutMs / 1000
        if isinstance(params, AgentParams) and params.timeout is not None:
            timeout_s = float(params.timeout)
        submitted = SubmitRequest(
            key, params.message, params.idempotencyKey, mode, timeout_s, LANE, stream=stream
        )
        ticket = await self.engine.submit(submitted)
        self.targets.register(str(key), self.deliver_lane_outcome)
        return ticket, key.agent_id

    async def _outcome(self, ticket: Ticket) -> Outcome:
        async with asyncio.timeout_at(ticket.deadline + WAIT_MARGIN_S):
            return await asyncio.shield(ticket.outcome)

    async def _chat_send(self, request: RequestFrame) -> None:
        ticket, _ = await self._submit(request, stream=True)
        done = ticket.outcome.done()
        status = "in_flight" if ticket.duplicate and not done else "started"
        if ticket.duplicate and done:
            status = WIRE_STATUS[ticket.outcome.result().state]
        self.send(response(request.id, {"runId": ticket.turn_id, "status": status}))
        seq = 0
        if ticket.deltas is not None:
            async with asyncio.timeout_at(ticket.deadline + WAIT_MARGIN_S):
                seq = await self._stream_deltas(ticket, ticket.deltas)
        try:
            outcome = await self._outcome(ticket)
        except (TimeoutError, UnavailableError) as exc:
            code = exc.code if isinstance(exc, TurngateError) else ErrorCode.TURN_EXPIRED
            message = exc.message if isinstance(exc, TurngateError) else "no outcome in time"
            payload: dict[str, Any] = {
                "runId": ticket.turn_id,
                "sessionKey": ticket.session_key,
                "state": "error",
                "errorMessage": message,
                "errorKind": "unknown",
                "errorDetail": {"code": code.value, "status": "pending"},
            }
        else:
            payload = terminal_chat(outcome, ticket.session_key, _now_ms())
        payload["seq"] = seq + 1
        self.event("chat", payload)

    def deliver_lane_outcome(self, session_key: str, outcome: Outcome) -> bool:
        """A heartbeat's or cron job's reply for a session this client last used."""
        if self.closed:
            return False
        try:
            payload = terminal_chat(outcome, session_key, _now_ms())
            payload["seq"] = 1
            self.event("chat", payload)
        except _Closed:
            return False
        return True

    async def _stream_deltas(self, ticket: Ticket, deltas: DeltaStream) -> int:
        """Send each delta as a ``chat`` event; return how many were sent."""
        seq = 0
        text = ""
        async for _, delta in deltas:
            seq += 1
            text += delta
            self.event(
                "chat",
                {
                    "runId": ticket.turn_id,
                    "sessionKey": ticket.session_key,
                    "seq": seq,
                    "state": "delta",
                    "deltaText": delta,
                    "message": assistant_message(text, _now_ms()),
                },
            )
        return seq

    async def _agent(self, request: RequestFrame) -> None:
        ticket, agent_id = await self._submit(request, stream=False)
        self.send(
            response(
                request.id,
                {
                    "runId": ticket.turn_id,
                    "sessionKey": ticket.session_key,
                    "agentId": agent_id,
                    "status": "accepted",
                    "acceptedAt": _now_ms(),
                },
            )
        )
        outcome = await self._outcome(ticket)
        if outcome.reply is None:
            code = outcome.code or ErrorCode.INTERNAL
            self.send(error_response(request.id, code, outcome.message))
            return
        self.send(
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
        params = SessionParams.model_validate(request.params)
        key = parse_session_key(params.sessionKey)
        limit = params.limit or 100
        entries = await self.engine.store.transcript(str(key), limit + 1)
        more = len(entries) > limit
        messages = [
            {
                "role": entry.role,
                "content": [{"type": "text", "text": entry.text}],
                "timestamp": int(entry.at_wall * 1000),
                "runId": entry.run_id,
            }
            for entry in entries[-limit:]
        ]
        payload = {"sessionKey": str(key), "messages": messages, "hasMore": more}
        self.send(response(request.id, payload))

    async def _chat_abort(self, request: RequestFrame) -> None:
        params = SessionParams.model_validate(request.params)
        aborted = await self.engine.abort(parse_session_key(params.sessionKey), params.runId)
        self.send(response(request.id, {"ok": True, "aborted": bool(aborted), "runIds": aborted}))

    async def _sessions_list(self, request: RequestFrame) -> None:
        params = ListParams.model_validate(request.params)
        rows = await self.engine.store.sessions(params.limit, params.offset)
        sessions = [
            {
                "key": row.key,
                "agentId": row.agent_id,
                "updatedAt": int(row.updated_wall * 1000),
                "hasActiveRun": row.lease_run_id is not None,
                "activeRunIds": [row.lease_run_id] if row.lease_run_id else [],
                "turns": row.turns_total,
                "openTurns": row.turns_open,
            }
            for row in rows
            if row.lease_run_id is not None or not params.activeOnly
        ]
        self.send(response(request.id, {"sessions": sessions, "count": len(sessions)}))

    async def _health(self, request: RequestFrame) -> None:
        self.send(response(request.id, self._snapshot()))

    def _snapshot(self) -> dict[str, Any]:
        snapshot = self.engine.snapshot()
        return {
            "ok": True,
            "status": "live",
            "activeSessions": snapshot.active_sessions,
            "runningTurns": snapshot.running_turns,
            "queuedTurns": snapshot.queued_turns,
            "oldestLeaseAgeS": round(snapshot.oldest_lease_age_s, 3),
        }


def _field_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "params"
    if error["type"] == "missing":
        return f"{field}: required"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {error['msg']}"


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/`` and ``/ws``."""
    engine: Engine = websocket.app.state.engine
    config: GatewayConfig = websocket.app.state.config
    targets: DeliveryTargets = websocket.app.state.targets
    await Connection(websocket, engine, config, targets).serve()
