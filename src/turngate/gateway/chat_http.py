"""HTTP routes: ``POST /chat.send``, ``POST /chat.abort``, ``GET /turns/{runId}``, health.

``/chat.send`` answers when the turn ends (or at once with ``"wait": false``, as soon as the
turn is stored). It never answers with a canned reply: the body is the turn's true outcome.
A client that goes away does not cancel its turn; the turn is accepted and runs to its end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turngate import __version__
from turngate.config import GatewayConfig
from turngate.errors import NotFoundError, PayloadTooLargeError, UnavailableError
from turngate.gateway.frames import (
    TERMINAL_HTTP_STATUS,
    WIRE_STATUS,
    ChatAbortBody,
    ChatSendBody,
    check_message,
    error_body,
    outcome_body,
    parse_json,
    parse_queue_mode,
    parse_session,
    validate,
)
from turngate.runtime.engine import Engine, SubmitRequest

log = logging.getLogger("turngate.gateway")

# How long past a turn's own deadline a waiting request holds on before it gives up; the
# engine ends every turn by its deadline plus the abort grace, so this is only a backstop.
WAIT_MARGIN_S = 5.0


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _config(request: Request) -> GatewayConfig:
    config: GatewayConfig = request.app.state.config
    return config


async def read_body(request: Request, bytes_max: int) -> bytes:
    """The request body, refused with ``body_too_large`` as soon as it passes ``bytes_max``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > bytes_max:
        raise PayloadTooLargeError(f"body: {declared} bytes, over the limit of {bytes_max}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise PayloadTooLargeError(f"body: over the limit of {bytes_max} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def chat_send(request: Request) -> Response:
    """Accept one message as a turn; answer with its outcome."""
    config = _config(request)
    engine = _engine(request)
    body = validate(ChatSendBody, parse_json(await read_body(request, config.body_bytes_max)))
    key = parse_session(body.sessionKey)
    mode = parse_queue_mode(body.queueMode, config.queue_mode)
    check_message(body.message, config.message_chars_max)
    timeout_s = None if body.timeoutMs is None else body.timeoutMs / 1000
    ticket = await engine.submit(
        SubmitRequest(key, body.message, body.idempotencyKey, mode, timeout_s, lane="direct")
    )
    pending: dict[str, Any] = {"runId": ticket.turn_id, "sessionKey": ticket.session_key}
    if not body.wait and not ticket.outcome.done():
        status = "in_flight" if ticket.duplicate else "accepted"
        return JSONResponse({**pending, "status": status}, status_code=202)
    try:
        if ticket.outcome.done():
            outcome = ticket.outcome.result()
        else:
            async with asyncio.timeout_at(ticket.deadline + WAIT_MARGIN_S):
                outcome = await asyncio.shield(ticket.outcome)
    except UnavailableError as exc:
        return JSONResponse(
            {**pending, "status": "pending", **error_body(exc.code, exc.message)}, status_code=503
        )
    except TimeoutError:
        log.warning(
            "session %s: turn %s has no outcome past its deadline; answering pending",
            ticket.session_key,
            ticket.turn_id,
            extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
        )
        return JSONResponse({**pending, "status": "pending"}, status_code=202)
    return JSONResponse(
        outcome_body(outcome, ticket.session_key),
        status_code=TERMINAL_HTTP_STATUS[outcome.state],
    )


async def chat_abort(request: Request) -> Response:
    """Abort a session's running turn, or one queued turn by ``runId``."""
    body = validate(ChatAbortBody, parse_json(await read_body(request, 16_384)))
    key = parse_session(body.sessionKey)
    aborted = await _engine(request).abort(key, body.runId)
    return JSONResponse({"ok": True, "aborted": bool(aborted), "runIds": aborted})


async def get_turn(request: Request) -> Response:
    """One turn's state, and its outcome once it has ended."""
    run_id = request.path_params["run_id"]
    record = await _engine(request).store.get_turn(run_id)
    if record is None:
        raise NotFoundError(f"runId {run_id[:128]!r}: no such turn")
    outcome = record.outcome()
    body: dict[str, Any] = (
        outcome_body(outcome, record.session_key)
        if outcome is not None
        else {
            "runId": record.turn_id,
            "sessionKey": record.session_key,
            "status": WIRE_STATUS[record.state],
        }
    )
    body.update(
        seq=record.seq,
        queueMode=record.queue_mode,
        attempts=record.attempts,
        epoch=record.epoch,
        acceptedAt=record.accepted_wall,
        startedAt=record.started_wall,
        endedAt=record.ended_wall,
    )
    return JSONResponse(body)


async def health(request: Request) -> Response:
    """Liveness plus the figures an operator looks at first."""
    engine = _engine(request)
    snapshot = engine.snapshot()
    return JSONResponse(
        {
            "ok": True,
            "status": "live",
            "version": __version__,
            "sessions": await engine.store.count_sessions(),
            "activeSessions": snapshot.active_sessions,
            "runningTurns": snapshot.running_turns,
            "queuedTurns": snapshot.queued_turns,
            "oldestLeaseAgeS": round(snapshot.oldest_lease_age_s, 3),
        }
    )
