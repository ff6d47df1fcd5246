"""The Starlette application: its lifespan owns the engine; routes are thin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from turngate.config import GatewayConfig
from turngate.errors import ErrorCode, TurngateError
from turngate.gateway import chat_http, chat_ws, openai_api
from turngate.gateway.assembly import (
    build_agents,
    build_lanes,
    close_providers,
    engine_settings,
)
from turngate.gateway.auth import TokenMiddleware
from turngate.gateway.frames import ERROR_HTTP_STATUS, error_body
from turngate.gateway.metrics import GatewayMetrics
from turngate.lanes.delivery import DeliveryTargets
from turngate.providers.base import Provider
from turngate.runtime.engine import Engine
from turngate.runtime.events import EventBus
from turngate.store.base import Store
from turngate.store.sqlite import SqliteStore

log = logging.getLogger("turngate.gateway")

DB_FILE = "turngate.db"


def create_app(
    config: GatewayConfig,
    *,
    provider: Provider | None = None,
    store: Store | None = None,
    events: EventBus | None = None,
) -> Starlette:
    """A gateway app. ``provider``, ``store`` and ``events`` replace the configured ones (tests)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        agents = build_agents(config, provider)
        engine = Engine(
            store or SqliteStore(config.state_path / DB_FILE, durability=config.sqlite_durability),
            agents.default.provider,
            settings=engine_settings(config),
            events=events,
            agents=agents,
        )
        metrics = GatewayMetrics(engine)
        engine.events.subscribe(metrics.observe)
        app.state.config = config
        app.state.engine = engine
        app.state.metrics = metrics
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(close_providers, agents)
            await stack.enter_async_context(engine)
            heartbeats, cron = build_lanes(config, engine, app.state.targets)
            app.state.heartbeats = heartbeats
            app.state.cron = cron
            async with asyncio.TaskGroup() as lanes:
                tasks = [lanes.create_task(lane.run()) for lane in heartbeats]
                tasks.append(lanes.create_task(cron.run()))
                try:
                    yield
                finally:
                    # Lanes stop before the engine, so none submits into a closing engine.
                    for task in tasks:
                        task.cancel()

    async def on_turngate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TurngateError)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=ERROR_HTTP_STATUS[exc.code]
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}"), status_code=500
        )

    async def metrics_endpoint(request: Request) -> Response:
        metrics: GatewayMetrics = request.app.state.metrics
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/chat.send", chat_http.chat_send, methods=["POST"]),
        Route("/chat.abort", chat_http.chat_abort, methods=["POST"]),
        Route("/turns/{run_id:str}", chat_http.get_turn, methods=["GET"]),
        Route("/sessions/unstick", chat_http.sessions_unstick, methods=["POST"]),
        Route("/cron", chat_http.cron_list, methods=["GET"]),
        Route("/cron/run", chat_http.cron_run, methods=["POST"]),
        Route("/health", chat_http.health, methods=["GET"]),
        Route("/healthz", chat_http.liveness, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *openai_api.routes(),
        WebSocketRoute("/", chat_ws.websocket_endpoint),
        WebSocketRoute("/ws", chat_ws.websocket_endpoint),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(TokenMiddleware, token=config.token)],
        exception_handlers={TurngateError: on_turngate_error, Exception: on_unexpected},
    )
    app.state.config = config
    app.state.targets = DeliveryTargets()
    return app
