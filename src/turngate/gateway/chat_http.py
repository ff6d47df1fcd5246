"""HTTP routes: ``POST /chat.send``, ``POST /chat.abort``, ``GET /turns/{runId}``,
``POST /sessions/unstick``, ``GET /cron`` and ``POST /cron/run`` (health is
:mod:`~turngate.gateway.health_http`'s).

``/chat.send`` answers when the turn ends (or at once with ``"wait": false``, as soon as the
turn is stored). It never answers with a canned reply: the body is the turn's true outcome.
A client that goes away does not cancel its turn; the turn is accepted and runs to its end.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from turngate.errors import (
    ErrorCode,
    NotFoundError,
    PayloadTooLargeError,
    SlowClientError,
    UnavailableError,
)
from turngate.gateway.admission import Ask, admit, outcome_of
from turngate.gateway.app_state import config_of, engine_of
from turngate.gateway.frames import (
    TERMINAL_HTTP_STATUS,
    WIRE_STATUS,
    ChatAbortBody,
    ChatSendBody,
    CronRunBody,
    SessionBody,
    error_body,
    outcome_body,
    parse_json,
    parse_session,
    validate,
)
from turngate.lanes.cron import CronJob, CronLane
from turngate.store.base import CronJobState

if TYPE_CHECKING:
    pass

log = logging.getLogger("turngate.gateway")

_DIGITS = re.compile(r"[0-9]{1,18}")
"""A Content-Length worth reading as a number (longer ones are refused by httptools)."""


async def read_body(request: Request, bytes_max: int) -> bytes:
    """The request body, refused with ``body_too_large`` as soon as it passes ``bytes_max``.

    A client that goes away mid-body (or is cut off by the body deadline, which has already
    answered it ``408``) ends the request with :class:`SlowClientError`: nothing to log.
    """
    declared = request.headers.get("content-length", "")
    if _DIGITS.fullmatch(declared) and int(declared) > bytes_max:
        raise PayloadTooLargeError(f"body: {declared} bytes, over the limit of {bytes_max}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > bytes_max:
                raise PayloadTooLargeError(f"body: over the limit of {bytes_max} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise SlowClientError("body: the client went away before sending all of it") from None
    return b"".join(chunks)


async def chat_send(request: Request) -> Response:
    """Accept one message as a turn; answer with its outcome."""
    config = config_of(request)
    engine = engine_of(request)
    body = validate(ChatSendBody, parse_json(await read_body(request, config.body_bytes_max)))
    ask = Ask(
        body.sessionKey,
        body.message,
        lane="direct",
        idempotency_key=body.idempotencyKey,
        queue_mode=body.queueMode,
        timeout_s=None if body.timeoutMs is None else body.timeoutMs / 1000,
    )
    ticket = await admit(engine, config, ask)
    pending: dict[str, Any] = {"runId": ticket.turn_id, "sessionKey": ticket.session_key}
    if not body.wait and not ticket.outcome.done():
        status = "in_flight" if ticket.duplicate else "accepted"
        return JSONResponse({**pending, "status": status}, status_code=202)
    try:
        outcome = await outcome_of(engine, ticket)
    except UnavailableError as exc:
        if exc.code is ErrorCode.TURN_EXPIRED:
            # No outcome in time, but the turn is kept: the client asks GET /turns/{runId}.
            return JSONResponse({**pending, "status": "pending"}, status_code=202)
        return JSONResponse(
            {**pending, "status": "pending", **error_body(exc.code, exc.message)}, status_code=503
        )
    return JSONResponse(
        outcome_body(outcome, ticket.session_key),
        status_code=TERMINAL_HTTP_STATUS[outcome.state],
    )


async def chat_abort(request: Request) -> Response:
    """Abort a session's running turn, or one queued turn by ``runId``."""
    body = validate(ChatAbortBody, parse_json(await read_body(request, 16_384)))
    key = parse_session(body.sessionKey)
    aborted = await engine_of(request).abort(key, body.runId)
    return JSONResponse({"ok": True, "aborted": bool(aborted), "runIds": aborted})


async def get_turn(request: Request) -> Response:
    """One turn's state, and its outcome once it has ended."""
    run_id = request.path_params["run_id"]
    record = await engine_of(request).store.get_turn(run_id)
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


async def sessions_unstick(request: Request) -> Response:
    """Force a session free (operator action, audited in the log)."""
    body = validate(SessionBody, parse_json(await read_body(request, 16_384)))
    key = parse_session(body.sessionKey)
    ended = await engine_of(request).unstick(key)
    return JSONResponse(
        {"ok": True, "sessionKey": str(key), "unstuck": bool(ended), "runIds": ended}
    )


def cron_job_body(job: CronJob, state: CronJobState | None) -> dict[str, Any]:
    """A cron job with its next and last fire, as ``GET /cron`` and the console show it."""
    return {
        "id": job.job_id,
        "agentId": job.agent_id,
        "schedule": job.schedule,
        "sessionKey": str(job.session_key),
        "message": job.message,
        "nextFireAt": state.next_fire_wall if state else None,
        "lastFireAt": state.last_fire_wall if state else None,
    }


async def cron_list(request: Request) -> Response:
    """The configured cron jobs with their next and last fire times."""
    cron: CronLane = request.app.state.cron
    return JSONResponse(
        {"jobs": [cron_job_body(job, cron.states.get(job.job_id)) for job in cron.jobs.values()]}
    )


async def cron_run(request: Request) -> Response:
    """Fire one cron job now; answers once its turn is stored."""
    body = validate(CronRunBody, parse_json(await read_body(request, 16_384)))
    cron: CronLane = request.app.state.cron
    ticket = await cron.run_now(body.job)
    return JSONResponse(
        {"runId": ticket.turn_id, "sessionKey": ticket.session_key, "status": "accepted"},
        status_code=202,
    )
