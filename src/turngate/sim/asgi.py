"""The simulated network between clients and one life of the gateway: ASGI, in process.

A :class:`Wire` carries HTTP requests and WebSocket connections straight into the gateway's
Starlette app on the simulator's virtual-time loop, so the gateway's own waiting,
answering and disconnect code runs inside the simulated world. It behaves as uvicorn does
towards the app: a request's body arrives whole; once the client has gone, ``receive()``
says ``http.disconnect`` and whatever the app sends is dropped (a WebSocket send fails, as
it does on a closed socket); a handler is never cancelled because its client left.

A crash of the gateway is :meth:`Wire.cut`: every client of that life sees its connection
lost at once (nothing more reaches it, as when a process dies), and the app's tasks are
cancelled. Every wait of a client has a deadline, given by the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

SERVER = ("127.0.0.1", 18789)
ASGI = {"version": "3.0", "spec_version": "2.4"}


class ConnectionLost(Exception):
    """The connection ended without the answer: the gateway died, or closed the socket."""


class ClientLeft(Exception):
    """The client stopped waiting (its own deadline) and went away."""


@dataclass(slots=True)
class HttpAnswer:
    """A whole HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(slots=True)
class _Exchange:
    """One HTTP request in flight: what the client waits on."""

    finished: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False


class Wire:
    """The network of one gateway life: every exchange it carries dies with it."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.alive = True
        # Insertion-ordered, not sets: a cut wakes and cancels in the order things began, so
        # that a seed replays the same in every process (a set's order follows addresses).
        self._tasks: dict[asyncio.Task[None], None] = {}
        self._wakers: dict[asyncio.Event, None] = {}
        self._ports = itertools.count(40_000)
        self.errors: list[str] = []
        """Tracebacks of handlers that raised."""

    def cut(self) -> None:
        """The gateway died: no client hears from it again, and its handlers stop."""
        self.alive = False
        for waker in list(self._wakers):
            waker.set()
        for task in list(self._tasks):
            task.cancel()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def wait_closed(self) -> None:
        """Let the handlers of a cut wire unwind (they are cancelled; bounded by that)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(
        self, scope: MutableMapping[str, Any], receive: Any, send: Any
    ) -> asyncio.Task[None]:
        async def serve() -> None:
            await self.app(scope, receive, send)

        task = asyncio.get_running_loop().create_task(serve())
        self._tasks[task] = None
        task.add_done_callback(self._forget)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A handler the cut cancelled is expected; one that raised is a gateway bug, which
        # the run reports (uvicorn would log it and drop the connection).
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.errors.append("".join(traceback.format_exception(exc)))

    def _scope(self, kind: str, method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
        return {
            "type": kind,
            "asgi": ASGI,
            "http_version": "1.1",
            "method": method,
            "scheme": "http" if kind == "http" else "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", next(self._ports)),
            "server": SERVER,
            "subprotocols": [],
            "state": {},
        }

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        leave_at: float,
    ) -> HttpAnswer:
        """Send one request and wait for its whole response until ``leave_at`` (loop time).

        Raises :class:`ClientLeft` at ``leave_at`` (the app then sees the disconnect) and
        :class:`ConnectionLost` if the gateway dies first or ends without answering.
        """
        if not self.alive:
            raise ConnectionLost("the gateway is down")
        payload = b"" if body is None else json.dumps(body).encode()
        sent = {"content-type": "application/json", **(headers or {})}
        sent["content-length"] = str(len(payload))
        exchange = _Exchange()
        body_taken = False

        async def receive() -> Message:
            nonlocal body_taken
            if not body_taken:
                body_taken = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await exchange.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if exchange.gone.is_set() or not self.alive:
                return  # uvicorn drops what is sent to a client that left
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
                exchange.headers = {
                    k.decode().lower(): v.decode() for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                exchange.chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    exchange.complete = True
                    exchange.finished.set()

        task = self._spawn(self._scope("http", method, path, sent), receive, send)
        task.add_done_callback(lambda _: exchange.finished.set())
        try:
            await self._wait(exchange.finished, leave_at)
        except ClientLeft:
            exchange.gone.set()
            raise
        if not exchange.complete or exchange.status is None:
            raise ConnectionLost(f"{method} {path}: the connection ended without an answer")
        return HttpAnswer(exchange.status, exchange.headers, b"".join(exchange.chunks))

    async def _wait(self, event: asyncio.Event, until: float | None) -> None:
        """Wait for ``event`` (or the cut) until ``until`` (None: for as long as it takes)."""
        self._wakers[event] = None
        try:
            async with asyncio.timeout_at(until):
                await event.wait()
        except TimeoutError:
            raise ClientLeft from None
        finally:
            self._wakers.pop(event, None)
        if not self.alive:
            raise ConnectionLost("the gateway died")

    async def connect(self, path: str, *, give_up_at: float) -> Socket:
        """Open a WebSocket; :class:`ConnectionLost` if the app does not accept it."""
        if not self.alive:
            raise ConnectionLost("the gateway is down")
        socket = Socket(self)
        self._spawn(
            self._scope("websocket", "GET", path, {"host": "gateway"}),
            socket._receive,
            socket._send,
        )
        await socket._accepted(give_up_at)
        return socket


class Socket:
    """The client's end of one WebSocket to the gateway."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.open = True
        self.closed_by_server = False
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._accept = asyncio.Event()

    async def _accepted(self, give_up_at: float) -> None:
        try:
            await self.wire._wait(self._accept, give_up_at)
        except ClientLeft:
            self.leave()
            raise ConnectionLost("the gateway did not accept the WebSocket in time") from None
        if not self.open:
            raise ConnectionLost("the gateway refused the WebSocket")

    # -- the app's side -----------------------------------------------------------------

    async def _receive(self) -> Message:
        return await self._to_app.get()

    async def _send(self, message: Message) -> None:
        if not self.open or not self.wire.alive:
            raise OSError("the client's socket is closed")
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept.set()
        elif kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                self._frames.append(json.loads(text))
                self._arrived.set()
        elif kind == "websocket.close":
            self.open = False
            self.closed_by_server = True
            self._accept.set()
            self._arrived.set()

    # -- the client's side --------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """Send one frame to the gateway."""
        if not self.open or not self.wire.alive:
            raise ConnectionLost("the socket is closed")
        self._to_app.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})

    async def next_frame(self, until: float | None) -> dict[str, Any]:
        """The next frame from the gateway; :class:`ConnectionLost` when the socket ends,
        :class:`ClientLeft` at ``until``."""
        while not self._frames:
            if not self.open or not self.wire.alive:
                raise ConnectionLost("the socket closed")
            self._arrived.clear()
            await self.wire._wait(self._arrived, until)
        return self._frames.pop(0)

    def leave(self) -> None:
        """The client goes away: the app reads a disconnect, its sends fail from now on."""
        if self.open:
            self.open = False
            self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1001})
            self._arrived.set()
