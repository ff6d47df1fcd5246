"""HTTP health routes: ``GET /healthz`` (the process answers) and ``GET /health`` (the
engine, storage, lanes, channels, tool servers, providers, deliveries); the parts of
``/health`` are public for the console, which shows the same."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turngate import __version__
from turngate.channels.runtime import ChannelRuntime
from turngate.config import GatewayConfig
from turngate.doctor import provider_base_url, provider_uses
from turngate.errors import (
    StoreError,
)
from turngate.gateway.app_state import config_of, engine_of
from turngate.lanes.cron import CronLane
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.runtime.engine import Engine, LeaseView
from turngate.store.base import Store
from turngate.store.postgres import PostgresStore
from turngate.store.sqlite import SqliteStore
from turngate.store.statedir import LOCK_FILE

if TYPE_CHECKING:
    from turngate.tools.mcp import McpServer

log = logging.getLogger("turngate.gateway")


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
    engine = engine_of(request)
    config = config_of(request)
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
            "process": {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "name": engine.claims.holder,
                "sessionsHeld": snapshot.sessions_held,
            },
            "storage": {
                **store_description(engine.store, config),
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
            "leasesHeld": len(snapshot.leases),
            "running": [_lease_body(lease) for lease in snapshot.leases],
            "stalled": [_lease_body(lease) for lease in snapshot.leases if lease.stalled],
            "slow": [_lease_body(lease) for lease in snapshot.leases if lease.slow],
            "lanes": lanes_body(request, now_wall),
            "channels": channels_body(request),
            "toolServers": tool_servers_body(request),
            "deliveries": await deliveries_body(engine),
            "providers": _providers_body(config),
        },
        status_code=200 if ok else 503,
    )


def store_description(store: Store, config: GatewayConfig) -> dict[str, Any]:
    """Which store: SQLite (its file and durability), PostgreSQL (its URL without the
    password), or the one a test put in its place."""
    if isinstance(store, SqliteStore):
        return {"kind": "sqlite", "path": str(store.path), "durability": config.sqlite_durability}
    if isinstance(store, PostgresStore):
        return {"kind": "postgresql", "path": store.shown, "durability": None}
    return {"kind": type(store).__name__, "path": None, "durability": None}


def lanes_body(request: Request, now_wall: float) -> dict[str, Any]:
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


def channels_body(request: Request) -> list[dict[str, Any]]:
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
                "heldHere": view.held_here,
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


def tool_servers_body(request: Request) -> list[dict[str, Any]]:
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


async def deliveries_body(engine: Engine) -> dict[str, int] | None:
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
