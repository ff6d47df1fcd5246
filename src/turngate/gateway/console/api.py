"""The console's ``GET`` endpoints: JSON read from the engine, the store and the lanes.

- ``/console/api/gateway``: version, uptime, configuration, store, limits, agents, metrics;
- ``/console/api/sessions``: every session's state, queue and running run;
- ``/console/api/sessions/{key}``: one session, its turns and its transcript;
- ``/console/api/lanes``: heartbeats and cron jobs;
- ``/console/api/connections``: chat channels and tool servers.

Each answer carries ``at``, the gateway's wall time when it was read: ages in it are as of
then, and a page adds the time since.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turngate import __version__
from turngate.config import GatewayConfig
from turngate.errors import ErrorCode, InvalidFieldError, StoreError, TurngateError
from turngate.gateway.app_state import engine_of
from turngate.gateway.chat_http import cron_job_body
from turngate.gateway.console.figures import metrics_summary
from turngate.gateway.console.views import (
    OpenTurns,
    entry_body,
    open_turns,
    session_body,
    turn_body,
)
from turngate.gateway.frames import parse_session
from turngate.gateway.health_http import (
    channels_body,
    deliveries_body,
    lanes_body,
    store_description,
    tool_servers_body,
)
from turngate.gateway.metrics import GatewayMetrics
from turngate.lanes.cron import CronLane
from turngate.runtime.engine import Engine, LeaseView
from turngate.store.base import SessionRecord, Store

SESSIONS_DEFAULT = 200
SESSIONS_MAX = 1000
TURNS_DEFAULT = 100
ENTRIES_DEFAULT = 300
ROWS_MAX = 1000
OPEN_SCAN_SLACK = 50
"""Turns read past a session's open ones to find which of them runs: its open turns are its
newest but for turns that ended before them (refused or expired while they waited)."""


def _wall(request: Request) -> float:
    return engine_of(request).clock.wall()


def query_int(request: Request, name: str, default: int, most: int) -> int:
    """The query parameter ``name``: a whole number from 1 to ``most`` (else 422)."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and 1 <= int(text) <= most):
        raise InvalidFieldError(name, f"a whole number from 1 to {most}, got {text[:20]!r}")
    return int(text)


async def gateway(request: Request) -> Response:
    """``GET /console/api/gateway``: the gateway and its figures."""
    engine = engine_of(request)
    config: GatewayConfig = request.app.state.config
    metrics: GatewayMetrics = request.app.state.metrics
    snapshot = engine.snapshot()
    now = engine.clock.wall()
    started: float | None = getattr(request.app.state, "started_wall", None)
    config_file = getattr(request.app.state, "config_file", None)
    storage = snapshot.storage
    store = engine.store
    settings = engine.settings
    return JSONResponse(
        {
            "at": now,
            "version": __version__,
            "status": "degraded" if snapshot.degraded else "live",
            "startedAt": started,
            "uptimeS": None if started is None else round(max(0.0, now - started), 3),
            "configFile": None if config_file is None else str(config_file),
            "stateDir": str(config.state_path),
            "auth": "open" if config.token is None else "token",
            "store": {
                **store_description(store, config),
                "writable": storage.writable,
                "reason": storage.reason or None,
                "writeFailures": storage.write_failures,
                "waitingSessions": list(snapshot.storage_blocked),
            },
            "sessions": await _count_sessions(store),
            "activeSessions": snapshot.active_sessions,
            "runningTurns": snapshot.running_turns,
            "queuedTurns": snapshot.queued_turns,
            "oldestLeaseAgeS": round(snapshot.oldest_lease_age_s, 3),
            "limits": {
                "stallTimeoutS": settings.stall_timeout_s,
                "runTimeoutS": settings.run_timeout_s,
                "abortGraceS": settings.abort_grace_s,
                "turnTimeoutS": settings.turn_timeout_s,
                "queueTurnsMax": settings.queue_turns_max,
                "messageCharsMax": config.message_chars_max,
            },
            "agents": _agents_body(engine),
            "metrics": metrics_summary(metrics.registry),
            "deliveries": await deliveries_body(engine),
        }
    )


async def _count_sessions(store: Store) -> int | None:
    try:
        return await store.count_sessions()
    except StoreError:
        return None


def _agents_body(engine: Engine) -> dict[str, Any]:
    """The agents served: each one's model, default queue mode and tools; ``open`` when any
    agent id is served with the defaults."""
    registry = engine.agents
    specs = [registry.get(agent_id) for agent_id in registry.ids] or [registry.default]
    return {
        "open": not registry.strict,
        "agents": [
            {
                "id": spec.agent_id,
                "model": spec.provider.name,
                "queueMode": spec.queue_mode.value,
                "tools": 0 if spec.toolbox is None else len(spec.toolbox.specs()),
                "maxSteps": spec.max_steps,
            }
            for spec in specs
        ],
    }


async def sessions(request: Request) -> Response:
    """``GET /console/api/sessions?limit=``: the sessions, most recently active first, with
    every session that runs a turn now even when it is past the limit."""
    engine = engine_of(request)
    limit = query_int(request, "limit", SESSIONS_DEFAULT, SESSIONS_MAX)
    snapshot = engine.snapshot()
    leases = {lease.session_key: lease for lease in snapshot.leases}
    blocked = set(snapshot.storage_blocked)
    records = await engine.store.sessions(limit)
    listed = {record.key for record in records}
    for key in sorted(leases.keys() - listed):
        record = await engine.store.session(key)
        if record is not None:
            records.append(record)
    rows = [
        session_body(
            record.key,
            record,
            leases.get(record.key),
            await _open_turns(engine.store, record),
            waiting_for_storage=record.key in blocked,
        )
        for record in records
    ]
    return JSONResponse(
        {
            "at": engine.clock.wall(),
            "sessions": rows,
            "total": await _count_sessions(engine.store),
            "runningTurns": snapshot.running_turns,
            "queuedTurns": snapshot.queued_turns,
            "activeSessions": snapshot.active_sessions,
        }
    )


async def _open_turns(store: Store, record: SessionRecord) -> OpenTurns:
    """How many of the session's open turns wait, and how many run."""
    if record.turns_open == 0:
        return OpenTurns()
    recent = await store.session_turns(record.key, min(record.turns_open + OPEN_SCAN_SLACK, 1000))
    counted = open_turns(recent)
    # The store's count of open turns is exact; only which of them runs is read from rows.
    return OpenTurns(max(0, record.turns_open - len(counted.running)), counted.running)


async def session(request: Request) -> Response:
    """``GET /console/api/sessions/{key}?turns=&entries=``: one session, its last turns and
    its last transcript entries. A session the store does not know yet is shown empty (a
    console may open one to send its first message) if its agent is served."""
    engine = engine_of(request)
    key = str(parse_session(request.path_params["key"]))
    turns_max = query_int(request, "turns", TURNS_DEFAULT, ROWS_MAX)
    entries_max = query_int(request, "entries", ENTRIES_DEFAULT, ROWS_MAX)
    record = await engine.store.session(key)
    agent = _agent_of(engine, key, known=record is not None)
    snapshot = engine.snapshot()
    lease: LeaseView | None = next((x for x in snapshot.leases if x.session_key == key), None)
    turns = await engine.store.session_turns(key, turns_max) if record else []
    entries = await engine.store.transcript(key, entries_max) if record else []
    opened = await _open_turns(engine.store, record) if record else OpenTurns()
    return JSONResponse(
        {
            "at": engine.clock.wall(),
            "session": session_body(
                key, record, lease, opened, waiting_for_storage=key in snapshot.storage_blocked
            ),
            "agent": agent,
            "turns": [turn_body(turn) for turn in turns],
            "transcript": [entry_body(entry) for entry in entries],
        }
    )


def _agent_of(engine: Engine, key: str, *, known: bool) -> dict[str, Any] | None:
    """The session's agent as the chat pane needs it; for a session the store does not know,
    its agent must be one this gateway serves (else ``422 unknown_agent``)."""
    try:
        spec = engine.agents.get(key.split(":", 2)[1])
    except TurngateError as exc:
        if known and exc.code is ErrorCode.UNKNOWN_AGENT:
            return None  # a stored session of an agent no longer configured: shown, read-only
        raise
    return {"id": spec.agent_id, "queueMode": spec.queue_mode.value, "model": spec.provider.name}


async def lanes(request: Request) -> Response:
    """``GET /console/api/lanes``: heartbeats (period, fires, skips, next tick) and cron
    jobs (schedule, session, next and last fire)."""
    now = _wall(request)
    cron: CronLane | None = getattr(request.app.state, "cron", None)
    jobs = (
        [cron_job_body(job, cron.states.get(job.job_id)) for job in cron.jobs.values()]
        if cron is not None
        else []
    )
    return JSONResponse(
        {
            "at": now,
            "heartbeats": lanes_body(request, now)["heartbeat"],
            "cron": jobs,
            "cronFired": cron.fired if cron else 0,
        }
    )


async def connections(request: Request) -> Response:
    """``GET /console/api/connections``: chat channels and tool servers, as ``/health``
    shows them (state, generation, reconnects, last error, ...)."""
    return JSONResponse(
        {
            "at": _wall(request),
            "channels": channels_body(request),
            "toolServers": tool_servers_body(request),
        }
    )
