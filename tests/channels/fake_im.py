"""A scriptable fake WebSocket IM server, on 127.0.0.1, speaking the bot protocol of
:mod:`turngate.channels.websocket_im_link`.

It keeps one bot's message stream (``seq`` from 1), what the bot acked, and what it sent; a
:class:`Script` per connection (by number, from 1; the last one repeats) says how it misbehaves
on that connection. Tests wait on :class:`Signal` (bumped at every change here and in the fake
inbox) with a deadline, never on a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

WAIT_MAX_S = 10.0
"""No test waits longer than this for what it expects."""


class Signal:
    """Something changed: every waiter wakes and checks its own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """Set at the next :meth:`bump`."""
        return self._event

    def bump(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(
        self, condition: Callable[[], bool], what: str, timeout_s: float = WAIT_MAX_S
    ) -> None:
        """Return once ``condition()`` holds; fail naming ``what`` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not condition():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"not within {timeout_s:g}s: {what}") from None


@dataclass(frozen=True)
class Script:
    """How the fake server treats one bot connection."""

    heartbeat_ms: int = 30_000
    """What the hello asks for."""
    close_on_identify: bool = False
    """Accepts the handshake and sends hello, then closes when identify arrives."""
    heartbeat_acks_max: int | None = None
    """Answers this many heartbeats, then goes silent: no frame at all, socket left open."""
    abort_at_heartbeat: int | None = None
    """Drops the TCP connection (no closing handshake) when this heartbeat (from 1) arrives."""
    close_after_messages: int | None = None
    """Closes the connection after sending this many messages on it."""


@dataclass
class Connection:
    """One bot connection, as the server saw it."""

    number: int
    ws: ServerConnection
    script: Script
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: int = 0
    """Index in the stream of the next message to send on this connection."""
    sent: int = 0
    heartbeats: int = 0
    silent: bool = False
    acks: list[int] = field(default_factory=list)
    open: bool = True


class FakeIMServer:
    """The fake (see the module docstring); use ``async with FakeIMServer(...) as server``."""

    def __init__(
        self,
        token: str,
        *scripts: Script,
        signal: Signal | None = None,
        http_status: int | None = None,
    ) -> None:
        self.token = token
        self.http_status = http_status
        """When set, every handshake is answered with this HTTP status instead."""
        self.scripts = scripts or (Script(),)
        self.signal = signal or Signal()
        self.stream: list[dict[str, Any]] = []
        """Every message frame the bot is owed, in seq order (seq = index + 1)."""
        self.acked_seq = 0
        self.connections: list[Connection] = []
        self.identifies: list[dict[str, Any] | None] = []
        """The resume field of each identify."""
        self.sends: list[dict[str, Any]] = []
        """Every ``send`` frame received, duplicates included."""
        self.shown: dict[str, tuple[str, str]] = {}
        """What people see: (chat, text) by send id, once per id."""
        self.send_results: list[dict[str, Any]] = []
        """The next sends' answers instead of ``sent``: ``send_failed`` fields, in order."""
        self.typing: list[str] = []
        self.sessions = 0
        self.refused_handshakes = 0
        self._ids = itertools.count(1)
        self._server: Server | None = None

    async def __aenter__(self) -> FakeIMServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        async with asyncio.timeout(WAIT_MAX_S):
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/bot"

    def script(self, number: int) -> Script:
        return self.scripts[min(number, len(self.scripts)) - 1]

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.http_status is None:
            return None
        self.refused_handshakes += 1
        return ws.respond(HTTPStatus(self.http_status), "refused\n")

    # What tests do.

    def inject(
        self,
        peer: str,
        text: str,
        *,
        chat: str | None = None,
        group: bool = False,
        mentioned: bool = False,
    ) -> str:
        """A person sends ``text``; the bot is owed it. Returns its message id."""
        message_id = f"m-{next(self._ids)}"
        fields = {"id": message_id, "chat": chat or peer, "from": peer, "text": text}
        self._append({**fields, "group": group, "mentioned": mentioned})
        return message_id

    def duplicate(self, message_id: str) -> None:
        """Deliver ``message_id`` once more, with a new seq (a platform's redelivery)."""
        original = next(m for m in self.stream if m["id"] == message_id)
        self._append({k: v for k, v in original.items() if k not in ("op", "seq")})

    def acks_of(self, number: int) -> list[int]:
        return self.connections[number - 1].acks

    def ready_on(self, number: int) -> bool:
        return len(self.connections) >= number and self.connections[number - 1].ready.is_set()

    def _append(self, fields: dict[str, Any]) -> None:
        self.stream.append({"op": "message", "seq": len(self.stream) + 1, **fields})
        self.signal.bump()

    # The protocol.

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(len(self.connections) + 1, ws, self.script(len(self.connections) + 1))
        self.connections.append(conn)
        self.signal.bump()
        pump = asyncio.get_running_loop().create_task(self._pump(conn))
        try:
            await ws.send(json.dumps({"op": "hello", "heartbeat_ms": conn.script.heartbeat_ms}))
            async for raw in ws:
                if not await self._on_frame(conn, json.loads(raw)):
                    break
        except ConnectionClosed:
            pass
        finally:
            conn.open = False
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self.signal.bump()

    async def _on_frame(self, conn: Connection, frame: dict[str, Any]) -> bool:
        """Handle one frame from the bot; False to end the connection."""
        op, ws = frame["op"], conn.ws
        if conn.silent:
            return True
        if op == "identify":
            self.identifies.append(frame["resume"])
            self.signal.bump()
            if conn.script.close_on_identify:
                await ws.close()
                return False
            if frame["token"] != self.token:
                # A careless server that echoes what it got: the channel must not log it.
                reason = f"unknown token {frame['token']}"
                await ws.send(json.dumps({"op": "invalid", "fatal": True, "reason": reason}))
                await ws.close()
                return False
            resume = frame["resume"]
            resumed = resume is not None and resume["session"] == f"s{self.sessions}"
            if not resumed:
                self.sessions += 1
            await ws.send(
                json.dumps({"op": "ready", "session": f"s{self.sessions}", "resumed": resumed})
            )
            conn.cursor = self.acked_seq
            conn.ready.set()
        elif op == "heartbeat":
            conn.heartbeats += 1
            if conn.heartbeats == conn.script.abort_at_heartbeat:
                ws.transport.abort()
                return False
            limit = conn.script.heartbeat_acks_max
            if limit is not None and conn.heartbeats > limit:
                conn.silent = True
            else:
                await ws.send(json.dumps({"op": "heartbeat_ack"}))
        elif op == "ack":
            conn.acks.append(frame["seq"])
            self.acked_seq = max(self.acked_seq, frame["seq"])
        elif op == "send":
            self.sends.append(frame)
            if self.send_results:
                answer = {"op": "send_failed", "id": frame["id"], **self.send_results.pop(0)}
            else:
                self.shown.setdefault(frame["id"], (frame["chat"], frame["text"]))
                answer = {"op": "sent", "id": frame["id"]}
            await ws.send(json.dumps(answer))
        elif op == "typing":
            self.typing.append(frame["chat"])
        self.signal.bump()
        return True

    async def _pump(self, conn: Connection) -> None:
        """Send the stream from the connection's cursor, as it grows, once ready."""
        await conn.ready.wait()
        while True:
            changed = self.signal.next_change()  # taken first: a change while sending counts
            while conn.cursor < len(self.stream) and not conn.silent:
                await conn.ws.send(json.dumps(self.stream[conn.cursor]))
                conn.cursor += 1
                conn.sent += 1
                if conn.sent == conn.script.close_after_messages:
                    await conn.ws.close()
                    return
            await changed.wait()
