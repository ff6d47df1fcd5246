"""HTTP routes: ``POST /chat.send``, ``POST /chat.abort``, ``GET /turns/{runId}``, health.

``/chat.send`` answers when the turn ends (or at once with ``"wait": false``, as soon as the
turn is stored). It never answers with a canned reply: the body is the turn's true outcome.
A client that goes away does not cancel its turn; the turn is accepted and runs to its end.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from turngate import __version__
from turngate.channels.runtime import ChannelRuntime
from turngate.config import GatewayConfig
from turngate.doctor import provider_base_url, provider_uses
from turngate.errors import (
    ErrorCode,
    NotFoundError,
    PayloadTooLargeError,
    SlowClientError,
    StoreError,
    UnavailableError,
)
from turngate.gateway.admission import Ask, admit, outcome_of
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
from turngate.lanes.cron import CronLane
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.runtime.engine import Engine, LeaseView
from turngate.store.statedir import LOCK_FILE

if TYPE_CHECKING:
    from turngate.tools.mcp import McpServer

log = logging.getLogger("turngate.gateway")

_DIGITS = re.compile(r"[0-9]{1,18}")
"""A Content-Length worth reading as a number (longer ones are refused by httptools)."""


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _config(request: Request) -> GatewayConfig:
    config: GatewayConfig = request.app.state.config
    return config


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
    config = _config(request)
    engine = _engine(request)
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


async def liveness(request: Request) -> Response:
    """``/healthz``: the process answers (open without a token; reveals nothing)."""
    del request
    return JSONResponse({"ok": True, "status": "live"})


async def health(request: Request) -> Response:
    """Liveness plus the figures an operator looks at first (``turngate status`` prints
    them): storage, sessions, running turns (their model step and the tools under way),
    stalled and slow runs, lanes with their next fires, providers,
    uptime, and who holds the state directory. ``503`` with ``"status": "degraded"`` while
    storage refuses writes."""
    engine = _engine(request)
    config = _config(request)
    snapshot = engine.snapshot()
    storage = snapshot.storage
    ok = not snapshot.degraded
    try:
        sessions: int | None = await engine.store.count_sessions()
    except StoreError:
        sessions = None
    now_wall = engine.clock.wall()
    started_wall: float | None = getattr(request.app.state, "started_wall", None)
    uptime_s = None if started_wall is None else round(max(0.0, now_wall - started_wall), 3)
    lock = _lock_holder(config)
    return JSONResponse(
        {
            "ok": ok,
            "status": "live" if ok else "degraded",
            "version": __version__,
            "startedAt": started_wall,
            "uptimeS": uptime_s,
            "address": (lock or {}).get("address") or _served_address(request),
            "stateDir": str(config.state_path),
            "lock": lock,
            "storage": {
                "writable": storage.writable,
                "reason": storage.reason or None,
                "writeFailures": storage.write_failures,
                "waitingSessions": list(snapshot.storage_blocked),
            },
            "sessions": sessions,
            "activeSessions": snapshot.active_sessions,
            "runningTurns": snapshot.running_turns,
            "queuedTurns": snapshot.queued_turns,
            "oldestLeaseAgeS": round(snapshot.oldest_lease_age_s, 3),
            "running": [_lease_body(lease) for lease in snapshot.leases],
            "stalled": [_lease_body(lease) for lease in snapshot.leases if lease.stalled],
            "slow": [_lease_body(lease) for lease in snapshot.leases if lease.slow],
            "lanes": _lanes_body(request, now_wall),
            "channels": _channels_body(request),
            "toolServers": _tool_servers_body(request),
            "deliveries": await _deliveries_body(engine),
            "providers": _providers_body(config),
        },
        status_code=200 if ok else 503,
    )


def _lanes_body(request: Request, now_wall: float) -> dict[str, Any]:
    heartbeats: list[HeartbeatLane] = getattr(request.app.state, "heartbeats", [])
    cron: CronLane | None = getattr(request.app.state, "cron", None)
    jobs = list(cron.jobs.values()) if cron else []
    states = cron.states if cron else {}
    return {
        "heartbeat": [
            {
                "agentId": lane.agent_id,
                "sessionKey": str(lane.session_key),
                "everyS": lane.config.every,
                "fired": lane.fired,
                "skipped": lane.skipped,
                # The lane ticks at wall-clock multiples of its period (see lanes/heartbeat).
                "nextTickAt": (math.floor(now_wall / lane.config.every) + 1) * lane.config.every,
            }
            for lane in heartbeats
        ],
        "cron": {
            "jobs": len(cron.jobs) if cron else 0,
            "fired": cron.fired if cron else 0,
            "next": [
                {
                    "id": job.job_id,
                    "agentId": job.agent_id,
                    "schedule": job.schedule,
                    "nextFireAt": state.next_fire_wall if state else None,
                }
                for job in jobs
                for state in [states.get(job.job_id)]
            ],
        },
    }


def _channels_body(request: Request) -> list[dict[str, Any]]:
    """Each channel's connection and what its outbox did since the start."""
    runtimes: list[ChannelRuntime] = getattr(request.app.state, "channels", [])
    body = []
    for view in (runtime.view() for runtime in runtimes):
        connection = view.connection
        body.append(
            {
                "id": view.channel_id,
                "type": view.kind,
                "agentId": view.agent,
                "state": connection.state.value,
                "generation": connection.generation,
                "reconnects": connection.reconnects,
                "zombies": connection.zombies,
                "staleCallbacksIgnored": connection.stale_callbacks_ignored,
                "heartbeatRttS": connection.heartbeat_rtt_s,
                "lastFrameAgoS": connection.last_frame_ago_s,
                "sessionId": connection.session_id,
                "lastSequence": connection.last_sequence,
                "resumes": connection.resumes,
                "identifies": connection.identifies,
                "lastError": connection.last_error,
                "nextAttemptInS": connection.next_attempt_in_s,
                "stopped": connection.fatal,
                "sent": view.outbox.sent,
                "failed": view.outbox.failed,
                "retries": view.outbox.retries,
            }
        )
    return body


def _tool_servers_body(request: Request) -> list[dict[str, Any]]:
    """Each agent's MCP servers: their connection, and how many tools each offers now."""
    servers: list[McpServer] = getattr(request.app.state, "tool_servers", [])
    body = []
    for server in servers:
        connection = server.snapshot()
        body.append(
            {
                "name": server.label,
                "state": connection.state.value,
                "generation": connection.generation,
                "reconnects": connection.reconnects,
                "tools": len(server.specs()),
                "lastError": connection.last_error,
                "nextAttemptInS": connection.next_attempt_in_s,
                "stopped": connection.fatal,
            }
        )
    return body


async def _deliveries_body(engine: Engine) -> dict[str, int] | None:
    """Outbox deliveries by state (None when the store cannot say)."""
    try:
        counts = await engine.store.outbox.counts()
    except StoreError:
        return None
    return {state.value: count for state, count in counts.items()}


def _providers_body(config: GatewayConfig) -> list[dict[str, Any]]:
    """Each configured provider: where it is and which agents use which of its models
    (never its key)."""
    uses = provider_uses(config)
    return [
        {
            "id": provider.id,
            "kind": provider.kind,
            "baseUrl": _without_credentials(provider_base_url(provider)),
            "models": [
                {"agentId": use.agent_id, "model": use.model, "fallback": use.fallback}
                for use in uses.get(provider.id, [])
            ],
        }
        for provider in config.all_providers
    ]


def _without_credentials(url: str | None) -> str | None:
    """``url`` without a ``user:password@`` part (some servers take their key there)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _lock_holder(config: GatewayConfig) -> dict[str, Any] | None:
    """Who the state directory's lock file says holds it (this gateway, normally)."""
    try:
        text = (config.state_path / LOCK_FILE).read_text(encoding="utf-8")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict):
        return None
    return {name: holder.get(name) for name in ("pid", "address", "since")}


def _served_address(request: Request) -> str | None:
    """The address the request came in on (when the lock file does not name one: a gateway
    started by a test rather than by ``turngate gateway``)."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        return None
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    return f"http://{host}:{server[1]}"


def _lease_body(lease: LeaseView) -> dict[str, Any]:
    return {
        "sessionKey": lease.session_key,
        "runId": lease.run_id,
        "epoch": lease.epoch,
        "state": lease.state,
        "ageS": round(lease.age_s, 3),
        "sinceProgressS": round(lease.since_progress_s, 3),
        "step": lease.step,
        "tools": [{"name": name, "forS": round(for_s, 3)} for name, for_s in lease.tools],
    }


async def sessions_unstick(request: Request) -> Response:
    """Force a session free (operator action, audited in the log)."""
    body = validate(SessionBody, parse_json(await read_body(request, 16_384)))
    key = parse_session(body.sessionKey)
    ended = await _engine(request).unstick(key)
    return JSONResponse(
        {"ok": True, "sessionKey": str(key), "unstuck": bool(ended), "runIds": ended}
    )


async def cron_list(request: Request) -> Response:
    """The configured cron jobs with their next and last fire times."""
    cron: CronLane = request.app.state.cron
    return JSONResponse(
        {
            "jobs": [
                {
                    "id": job.job_id,
                    "agentId": job.agent_id,
                    "schedule": job.schedule,
                    "sessionKey": str(job.session_key),
                    "message": job.message,
                    "nextFireAt": state.next_fire_wall if state else None,
                    "lastFireAt": state.last_fire_wall if state else None,
                }
                for job in cron.jobs.values()
                for state in [cron.states.get(job.job_id)]
            ]
        }
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
