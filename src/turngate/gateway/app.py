"""The Starlette application: its lifespan owns the engine; routes are thin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from turngate.channels.routes import ChannelRoutes
from turngate.channels.runtime import ChannelRuntime
from turngate.config import GatewayConfig
from turngate.errors import ErrorCode, TurngateError
from turngate.gateway import chat_http, chat_ws, control_ui, health_http, openai_api
from turngate.gateway.agent_tools import build_agent_tools
from turngate.gateway.assembly import (
    build_agents,
    build_channels,
    build_lanes,
    close_providers,
    engine_settings,
)
from turngate.gateway.auth import TokenMiddleware
from turngate.gateway.console.feed import ConsoleFeeds
from turngate.gateway.console.routes import console_routes
from turngate.gateway.frames import ERROR_HTTP_STATUS, error_body
from turngate.gateway.http_limits import EdgeCounts
from turngate.gateway.metrics import GatewayMetrics
from turngate.lanes.delivery import DeliveryTargets
from turngate.logs import startup_lines
from turngate.providers.base import Provider
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine
from turngate.runtime.events import EventBus
from turngate.store.base import Store
from turngate.store.configured import describe_store, open_store
from turngate.store.statedir import StateDirLock

log = logging.getLogger("turngate.gateway")


@dataclass(frozen=True, slots=True)
class AppParts:
    """What a gateway app is built from: its config, and parts tests put in its place."""

    config: GatewayConfig
    provider: Provider | None = None
    store: Store | None = None
    events: EventBus | None = None
    lock: StateDirLock | None = None


def create_app(
    config: GatewayConfig,
    *,
    provider: Provider | None = None,
    store: Store | None = None,
    events: EventBus | None = None,
    lock: StateDirLock | None = None,
) -> Starlette:
    """A gateway app. ``provider``, ``store`` and ``events`` replace the configured ones (tests).

    The app holds its state directory (:class:`StateDirLock`) from start-up to shutdown;
    ``lock`` is one the caller already holds (the command takes it before binding its port).
    """
    parts = AppParts(config, provider, store, events, lock)
    routes, middleware = list(ROUTES), [Middleware(TokenMiddleware, token=config.token)]
    if config.control_ui_dir is not None:
        # The UI's public files go out before the token check; its config document after.
        directory = control_ui.check_control_ui_dir(config.control_ui_dir)
        routes = [*control_ui.config_routes("main"), *routes]
        middleware.insert(
            0, Middleware(control_ui.ControlUiFiles, directory=directory, routes=routes)
        )
    app = Starlette(
        routes=routes,
        lifespan=partial(_lifespan, parts=parts),
        middleware=middleware,
        exception_handlers={
            TurngateError: _on_turngate_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
    )
    app.state.config = config
    app.state.targets = DeliveryTargets()
    app.state.connections = chat_ws.Connections()
    app.state.edge_counts = EdgeCounts()
    app.state.channels = []
    return app


@asynccontextmanager
async def _lifespan(app: Starlette, parts: AppParts) -> AsyncIterator[None]:
    """Hold the state directory, then run the gateway (see :func:`_running`)."""
    lock = parts.lock or StateDirLock(parts.config.state_path)
    lock.acquire()
    try:
        async with _running(app, parts):
            yield
    finally:
        lock.release()


@asynccontextmanager
async def _running(app: Starlette, parts: AppParts) -> AsyncIterator[None]:
    """The engine and the lanes, from start-up to shutdown.

    Once they are ready it logs what it started with, one INFO line each (see
    :func:`~turngate.logs.startup_lines`); ``app.state.config_file``, when the command sets
    it, names the configuration file there.
    """
    config = parts.config
    tools = build_agent_tools(config, LoopClock(), os.environ)
    app.state.tool_servers = tools.servers
    agents = build_agents(config, parts.provider, toolboxes=tools.toolboxes)
    store = parts.store or open_store(config, checkpoints="background")
    engine = Engine(
        store,
        agents.default.provider,
        settings=engine_settings(config),
        events=parts.events,
        agents=agents,
        outbound=ChannelRoutes(config.channels),
    )
    tools.attach(engine)
    app.state.channels = build_channels(config, engine)
    serve_engine(app, engine)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(close_providers, agents)
        await stack.enter_async_context(engine)
        heartbeats, cron = build_lanes(config, engine, app.state.targets)
        app.state.heartbeats = heartbeats
        app.state.cron = cron
        # Loaded here (the lane loads again, idempotently, when it runs) to log next fires.
        await cron.load()
        store_kind = describe_store(config) if parts.store is None else type(store).__name__
        for line in startup_lines(
            config,
            config_file=getattr(app.state, "config_file", None),
            store=store_kind,
            model_override=None if parts.provider is None else parts.provider.name,
            cron_next_wall={job: state.next_fire_wall for job, state in cron.states.items()},
        ):
            log.info("%s", line)
        async with asyncio.TaskGroup() as lanes:
            tasks = [lanes.create_task(lane.run()) for lane in heartbeats]
            tasks.append(lanes.create_task(cron.run()))
            tasks += [lanes.create_task(channel.run()) for channel in app.state.channels]
            tasks.append(lanes.create_task(tools.run(), name="tool servers"))
            try:
                yield
            finally:
                # Lanes, channels and tool servers stop before the engine, so none submits into
                # (or answers a run of) a closing engine.
                for task in tasks:
                    task.cancel()


def serve_engine(app: Starlette, engine: Engine) -> None:
    """Make ``app``'s routes serve ``engine``: its metrics, its clients' waits (the console's live
    feeds too), its drain.

    The lifespan calls this with the engine it runs; the simulator (``sim/edges.py``) calls it
    with an engine it runs itself, and never starts the app's lifespan (no lanes, no lock).
    """
    config: GatewayConfig = app.state.config
    runtimes: list[ChannelRuntime] = app.state.channels
    metrics = GatewayMetrics(
        engine, app.state.edge_counts, lambda: [runtime.view() for runtime in runtimes]
    )
    engine.events.subscribe(metrics.observe)
    app.state.engine = engine
    app.state.started_wall = engine.clock.wall()
    app.state.metrics = metrics
    connections: chat_ws.Connections = app.state.connections
    console_feeds = app.state.console_feeds = ConsoleFeeds(engine)

    async def drain() -> None:
        await engine.drain(config.shutdown_drain_s)
        console_feeds.close_all()
        await connections.close_all()

    app.state.drain = drain


async def _on_turngate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TurngateError)
    return JSONResponse(error_body(exc.code, exc.message), status_code=ERROR_HTTP_STATUS[exc.code])


HTTP_ERROR_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
"""Starlette's own refusals (no such route, wrong method), in the error vocabulary."""


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    if exc.status_code == 405:
        message = f"{request.method} {request.url.path}: method not allowed"
    elif exc.status_code == 404:
        message = f"{request.url.path}: no such route; see the API reference"
    else:
        message = str(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        error_body(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}"), status_code=500
    )


async def _metrics(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/chat.send", chat_http.chat_send, methods=["POST"]),
    Route("/chat.abort", chat_http.chat_abort, methods=["POST"]),
    Route("/turns/{run_id:str}", chat_http.get_turn, methods=["GET"]),
    Route("/sessions/unstick", chat_http.sessions_unstick, methods=["POST"]),
    Route("/cron", chat_http.cron_list, methods=["GET"]),
    Route("/cron/run", chat_http.cron_run, methods=["POST"]),
    Route("/health", health_http.health, methods=["GET"]),
    Route("/healthz", health_http.liveness, methods=["GET"]),
    Route("/metrics", _metrics, methods=["GET"]),
    *openai_api.routes(),
    *console_routes(),
    WebSocketRoute("/", chat_ws.websocket_endpoint),
    WebSocketRoute("/ws", chat_ws.websocket_endpoint),
]
"""Every route of the gateway."""
