"""One gateway WebSocket connection's life, from challenge to close, and the registry of the
open ones.

One :class:`Connection` per socket is one *generation*: its writer and its request handlers
live in its task group, and its tick timer is a loop timer it cancels as it ends, so nothing
scheduled for a closed connection can ever run (the field report of seed 004). Closing a
connection never touches its turns: they are in the engine, and a client that reconnects and
resends its ``idempotencyKey`` gets the same run.

Frames go out through the connection's :class:`~turngate.gateway.ws_outbox.Outbox`, and
requests are answered by its :class:`~turngate.gateway.ws_methods.Methods` and the like,
each made by the first request it answers: :data:`ROUTES`, the dispatch table, is the
process's, so an idle connection holds no handler. A request that fails in a way turngate
did not foresee is answered ``internal`` (and logged with its traceback); it never takes the
connection down.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import cached_property
from typing import Any, NoReturn

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from turngate.errors import ErrorCode, RequestError, TurngateError
from turngate.gateway import ws_agents, ws_cron, ws_directory, ws_methods, ws_session_events
from turngate.gateway.ws_agents import AgentCatalog
from turngate.gateway.ws_cron import CronMethods
from turngate.gateway.ws_directory import Directory
from turngate.gateway.ws_frames import (
    PRE_HANDSHAKE_BYTES_MAX,
    RequestFrame,
    error_response,
    error_shape,
    response,
)
from turngate.gateway.ws_handshake import (
    HANDSHAKE_TIMEOUT_S,
    REFUSED_CLOSE_CODE,
    Refusal,
    check_connect,
    hello,
)
from turngate.gateway.ws_methods import Methods, health_snapshot
from turngate.gateway.ws_outbox import ConnectionClosed, Outbox, now_ms
from turngate.gateway.ws_peer import H, MethodHandler, Services
from turngate.gateway.ws_receive import field_message, receive_frame
from turngate.gateway.ws_session_events import SessionEvents

log = logging.getLogger("turngate.gateway")

CLOSE_FLUSH_TIMEOUT_S = 5.0
"""How long a connection being closed gives the client to take the frames queued before the
close; past it the socket is dropped without a close frame."""
SERVICE_RESTART_CLOSE_CODE = 1012
"""The gateway is stopping; the client may reconnect (to the next process) and resend."""
INFLIGHT_REQUESTS_MAX = 256
"""Requests of one connection being handled at once (a ``chat.send`` counts until its
terminal ``chat`` event is sent); past it, a request is refused ``rate_limited``."""

_generations = itertools.count(1)


class TokenBucket:
    """Request frames allowed per second, with a burst of twice that.

    Only frames that arrive while earlier requests of the connection are still being handled
    are charged to it (see :meth:`Connection._dispatch`)."""

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


class Connections:
    """The open connections of one gateway, so that shutdown can close each one cleanly."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)

    async def close_all(self) -> None:
        """Let every connection send what its requests still have to say (the engine has
        answered them by now), then close it with 1012 (service restart)."""
        connections = list(self._open)
        if connections:
            await asyncio.gather(*(c.close_for_restart() for c in connections))


class Connection:
    """One client socket, from challenge to close."""

    def __init__(self, websocket: WebSocket, services: Services) -> None:
        self.ws = websocket
        self.services = services
        self.config = config = services.config
        self.closed = False
        self._requests: set[asyncio.Task[None]] = set()
        self._writer_task: asyncio.Task[None] | None = None
        self._tick: asyncio.TimerHandle | None = None
        self.generation = next(_generations)
        self.conn_id = f"conn-{self.generation}-{uuid.uuid4().hex[:8]}"
        self._outbox = Outbox(websocket, self.conn_id)
        self._bucket = TokenBucket(config.ws_frames_per_s_max)
        self._clock = services.engine.clock  # the rate limiter's time: the injected clock
        self._inflight = 0  # requests accepted by _dispatch whose handlers have not ended
        self._tasks: set[asyncio.Task[None]] = set()

    # The method holders, each made by the first request it answers (most connections use
    # a few of them, and an idle one none).

    @cached_property
    def methods(self) -> Methods:
        """The turns' methods on this connection."""
        return Methods(self, self.services.engine, self.config, self.services.targets)

    @cached_property
    def directory(self) -> Directory:
        """The sessions' and the absent features' methods on this connection."""
        return Directory(self, self.services.engine, self.config)

    @cached_property
    def session_events(self) -> SessionEvents:
        """This connection's session subscriptions."""
        return SessionEvents(self, self.services.engine, self.directory.page)

    @cached_property
    def agents(self) -> AgentCatalog:
        """The agents', models' and configuration's methods on this connection."""
        return AgentCatalog(self, self.services)

    @cached_property
    def cron(self) -> CronMethods:
        """The cron jobs' methods on this connection."""
        return CronMethods(self, self.services)

    async def serve(self, registry: Connections) -> None:
        """Run the connection until the client leaves, the handshake fails, or the gateway
        stops (see :meth:`close_for_restart`)."""
        await self.ws.accept()
        registry.add(self)
        try:
            await self._serve()
        finally:
            registry.discard(self)

    async def close_for_restart(self) -> None:
        """The gateway is stopping: wait (bounded) for the requests in hand to send their
        last frames, then close with 1012 behind them. Called from outside the connection."""
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=CLOSE_FLUSH_TIMEOUT_S)
        writer = self._writer_task
        if self.closed or writer is None or writer.done():
            return
        self.closed = True
        try:
            self._outbox.close(SERVICE_RESTART_CLOSE_CODE)
        except ConnectionClosed:
            return  # too far behind: uvicorn drops it
        await asyncio.wait({writer}, timeout=CLOSE_FLUSH_TIMEOUT_S)

    async def _serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._writer_task = self._spawn(self._outbox.write())
                self.event("connect.challenge", {"nonce": str(uuid.uuid4()), "ts": now_ms()})
                try:
                    await self._handshake()
                    self._arm_tick()
                    await self._read()
                finally:
                    self.closed = True  # this generation is over: nothing may act through it
                    if self._tick is not None:
                        self._tick.cancel()
                    if "session_events" in vars(self):  # made: it may hold subscriptions
                        self.session_events.close()
                    for task in list(self._tasks):
                        task.cancel()
        except* (ConnectionClosed, WebSocketDisconnect):
            pass

    # -- frames out ---------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a client too far behind is disconnected."""
        self._outbox.send(frame)

    def event(self, name: str, payload: dict[str, Any]) -> None:
        """Queue an event frame with this connection's next ``seq``."""
        self._outbox.event(name, payload)

    async def _close(self, code: int) -> NoReturn:
        """Close the socket once the frames queued so far are sent, then end the connection."""
        self.closed = True
        self._outbox.close(code)
        assert self._writer_task is not None  # the writer starts before any frame is read
        try:
            async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
                await self._writer_task
        except TimeoutError:
            log.warning(
                "%s: the client did not take its last frames in %gs; dropping it",
                self.conn_id,
                CLOSE_FLUSH_TIMEOUT_S,
            )
        raise ConnectionClosed

    def _arm_tick(self) -> None:
        # A loop timer rather than a task that sleeps: an idle connection is then no more
        # than its reader and writer. _serve cancels the timer as the generation ends.
        loop = asyncio.get_running_loop()
        self._tick = loop.call_later(self.config.ws_tick_interval_ms / 1000, self._send_tick)

    def _send_tick(self) -> None:
        if self.closed:
            return
        try:
            self.event("tick", {"ts": now_ms()})
        except ConnectionClosed:
            # Too far behind: end the generation as a handler that met a full outbox does.
            self.spawn(_connection_closed())
            return
        self._arm_tick()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the connection's task group: it ends with the connection, and
        one asked for once the connection is ending never runs."""
        if self.closed:
            coro.close()
            return
        try:
            self._spawn(coro)
        except RuntimeError:
            coro.close()  # the task group is shutting down: this generation is over

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- handshake ----------------------------------------------------------------------

    async def _handshake(self) -> None:
        """Read and check the ``connect`` request: answer ``hello-ok``, or refuse and close."""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                frame = await receive_frame(self.ws, PRE_HANDSHAKE_BYTES_MAX)
        except TimeoutError:
            await self._refuse(
                Refusal(None, ErrorCode.INVALID_FIELD, "connect: no connect frame in time")
            )
        except RequestError as exc:
            await self._refuse(
                Refusal(None, exc.code, f"connect: first frame unusable ({exc.message})")
            )
        verdict = check_connect(frame, self.config.token)
        if isinstance(verdict, Refusal):
            await self._refuse(verdict)
        snapshot = health_snapshot(self.services.engine)
        payload = hello(verdict.params, self.conn_id, self.config, snapshot, list(ROUTES))
        self.send(response(verdict.request_id, payload))

    async def _refuse(self, refusal: Refusal) -> NoReturn:
        """Answer the handshake with an error, then close the socket (1008)."""
        log.warning("%s: handshake refused: %s", self.conn_id, refusal.message)
        if refusal.request_id is None:
            self.event("error", error_shape(refusal.code, refusal.message))
        else:
            frame = error_response(refusal.request_id, refusal.code, refusal.message)
            if refusal.details is not None:
                # OpenClaw's handshake refusals: its clients read these details.
                frame["error"].update(code="INVALID_REQUEST", details=refusal.details)
            self.send(frame)
        await self._close(REFUSED_CLOSE_CODE)

    # -- frames in ----------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                frame = await receive_frame(self.ws, self.config.ws_frame_bytes_max)
            except RequestError as exc:
                self.event("error", error_shape(exc.code, exc.message))
                continue
            try:
                self._dispatch(frame)
            except ConnectionClosed:
                raise
            except Exception:
                # A turngate bug: the traceback is for the log, the frame is dropped, and
                # the connection (with its other requests) goes on.
                log.exception("%s: a request frame could not be dispatched", self.conn_id)
                self.event("error", error_shape(ErrorCode.INTERNAL, "frame: internal error"))

    def _dispatch(self, frame: dict[str, Any]) -> None:
        """Start the request's handler, or answer it at once (invalid, limited, unknown)."""
        try:
            request = RequestFrame.model_validate(frame)
        except ValidationError as exc:
            self.event("error", error_shape(ErrorCode.INVALID_FIELD, field_message(exc)))
            return
        # A client that waited for every answer before asking again is paced by the gateway
        # itself (back-pressure), however fast its turns are: only frames sent while earlier
        # ones are still unanswered are charged.
        wait_s = self._bucket.take(self._clock.now()) if self._inflight else 0.0
        if wait_s > 0 or self._inflight >= INFLIGHT_REQUESTS_MAX:
            refused = error_response(
                request.id,
                ErrorCode.RATE_LIMITED,
                f"rate limited: at most {self.config.ws_frames_per_s_max:g} requests/s"
                " per connection while earlier requests are unanswered",
            )
            refused["error"]["retryAfterMs"] = max(1, int(wait_s * 1000))
            self.send(refused)
            return
        log.debug("%s: request %s %s %s", self.conn_id, request.id, request.method, request.params)
        route = ROUTES.get(request.method)
        if route is None:
            self.send(
                error_response(
                    request.id,
                    ErrorCode.INVALID_FIELD,
                    f"method: unknown method {request.method!r};"
                    f" this gateway serves {', '.join(ROUTES)}",
                )
            )
            return
        task = self._spawn(self._handle(route, request))
        # In flight from now, not from when the task first runs: frames read in one go are
        # dispatched before any of their handlers starts, and must count as pipelined.
        self._inflight += 1
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _handle(self, route: Route, request: RequestFrame) -> None:
        """Run one request; whatever it raises, answer it here and keep the connection."""
        try:
            await route(self, request)
        except TurngateError as exc:
            self.send(error_response(request.id, exc.code, exc.message))
        except ValidationError as exc:
            self.send(error_response(request.id, ErrorCode.INVALID_FIELD, field_message(exc)))
        except ConnectionClosed:
            raise
        except Exception:
            self._internal_error(request)
        finally:
            # Here, not in a done callback: the handler's last frame is queued by now, and the
            # client may answer it at once. (A task cancelled before it starts never gets here,
            # but only a closing connection cancels them, and its count no longer matters.)
            self._inflight -= 1

    def _internal_error(self, request: RequestFrame) -> None:
        # Not the client's fault but a turngate bug, so the traceback belongs in the log
        # (once, here); the client gets a stable code and nothing of the traceback.
        log.exception(
            "%s: %s request %s failed unexpectedly", self.conn_id, request.method, request.id
        )
        self.send(
            error_response(
                request.id,
                ErrorCode.INTERNAL,
                f"{request.method}: internal error; the request did not complete"
                f" (connection {self.conn_id} logged it)",
            )
        )


async def _connection_closed() -> None:
    """Ends the task group it runs in, and so the connection, like a handler whose frame
    found the outbox full."""
    raise ConnectionClosed


Route = Callable[[Connection, RequestFrame], Awaitable[None]]
"""Answers one request of its method on a connection (the method's holder made on first
use)."""


def _routes(
    holder: Callable[[Connection], H], handlers: Mapping[str, MethodHandler[H]]
) -> dict[str, Route]:
    """``handlers``, each answering through the connection's ``holder`` of its method."""
    return {method: _route(holder, handler) for method, handler in handlers.items()}


def _route(holder: Callable[[Connection], H], handler: MethodHandler[H]) -> Route:
    def route(connection: Connection, request: RequestFrame) -> Awaitable[None]:
        return handler(holder(connection), request)

    return route


ROUTES: dict[str, Route] = {
    **_routes(lambda c: c.methods, ws_methods.HANDLERS),
    **_routes(lambda c: c.directory, ws_directory.HANDLERS),
    **_routes(lambda c: c.session_events, ws_session_events.HANDLERS),
    **_routes(lambda c: c.agents, ws_agents.HANDLERS),
    **_routes(lambda c: c.cron, ws_cron.HANDLERS),
}
"""Every method a connection serves (besides ``connect``), in the order ``hello-ok`` lists
them: built once per process, and made to act on a connection by the request."""
