"""Send one fuzzed WebSocket frame to the gateway, and check what comes back.

A frame gets its answer within :data:`FRAME_DEADLINE_S`: the ``res`` with its id when it is
a request with a string id, else an ``error`` event; then the socket is still open, and a
``health`` request on it gets its ``res``. The one close that is an answer is 1009 for a frame
over the announced ``maxBufferedBytes``. A connection's first frame is answered too:
``hello-ok``, or a refusal and then a close with 1008.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, NoReturn

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.fuzz.faults import TALLY, FaultKind, ServerErrors, error_problem, preview
from tests.fuzz.strategies import TOKEN, WS_FRAME_BYTES_MAX
from tests.fuzz.ws_strategies import WsFrame

FRAME_DEADLINE_S = 10.0
CLOSE_DEADLINE_S = 5.0
MAX_BUFFERED_BYTES = 4 * WS_FRAME_BYTES_MAX
"""The gateway's ``policy.maxBufferedBytes``: a bigger frame is closed with 1009."""
CLIENT_FRAME_BYTES_MAX = 64 * 1024 * 1024
"""The fuzz's own limit on an answer frame (chat.history can be long)."""
CONNECT: dict[str, Any] = {
    "type": "req",
    "id": "connect",
    "method": "connect",
    "params": {
        "minProtocol": 4,
        "maxProtocol": 4,
        "client": {"id": "cli", "version": "fuzz", "platform": "linux", "mode": "cli"},
        "role": "operator",
        "scopes": ["operator.read", "operator.write"],
        "auth": {"token": TOKEN},
    },
}


class WsProbe:
    """Sends :class:`WsFrame` s to one gateway and checks each answer.

    Request frames go over one connected socket, opened again after it was dropped; each
    first frame gets a connection of its own.
    """

    def __init__(self, base_url: str, errors: ServerErrors) -> None:
        self.url = base_url.replace("http://", "ws://", 1)
        self.errors = errors
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)

    async def check(self, label: str, frame: WsFrame) -> None:
        """Send ``frame`` on the connected socket; raise a :class:`Fault` if it is not
        answered, or if the socket does not live on."""
        __tracebackhide__ = True
        ws = self.ws or await self._open()
        fresh_id = f"fuzz-{next(self._ids)}"
        payload = frame.payload(fresh_id)
        report = describe_frame(frame, payload)
        self.errors.take()
        TALLY.ws_frames += 1
        try:
            async with asyncio.timeout(FRAME_DEADLINE_S):
                await ws.send(payload)
                await self._answer(ws, label, report, frame.answer_id(fresh_id))
        except TimeoutError:
            await self._discard()
            self._fault(FaultKind.HANG, f"{label}: no answer in {FRAME_DEADLINE_S:g} s", report)
        except ConnectionClosed as exc:
            self.ws = None
            if too_big(payload) and close_code(exc) == 1009:
                return  # the protocol's own answer to a frame over maxBufferedBytes
            self._fault(FaultKind.DROPPED, f"{label}: {closed(exc)} before answering", report)
        await self._health(ws, label, report)

    async def check_first(self, path: str, frame: WsFrame) -> None:
        """Open a socket at ``path`` and send ``frame`` first: it must be answered, and then
        the socket must live on (``hello-ok``) or be closed with 1008 (a refusal)."""
        __tracebackhide__ = True
        label = "first frame"
        fresh_id = f"fuzz-{next(self._ids)}"
        payload = frame.payload(fresh_id)
        report = f"at {path}: {describe_frame(frame, payload)}"
        self.errors.take()
        TALLY.ws_frames += 1
        try:
            async with asyncio.timeout(FRAME_DEADLINE_S):
                ws = await self._connect(path, label, report)
                try:
                    await ws.send(payload)
                    answer = await self._answer(ws, label, report, frame.answer_id(fresh_id))
                    if answer.get("ok") and answer["payload"].get("type") == "hello-ok":
                        await self._health(ws, label, report)
                        return
                    code = await self._close_code(ws)
                finally:
                    await ws.close()
        except TimeoutError:
            self._fault(FaultKind.HANG, f"{label}: no answer or no close", report)
        except ConnectionClosed as exc:
            if too_big(payload) and close_code(exc) == 1009:
                return
            self._fault(FaultKind.DROPPED, f"{label}: {closed(exc)} before answering", report)
        if code != 1008:
            self._fault(
                FaultKind.DROPPED, f"{label}: refused, then closed {code}, not 1008", report
            )

    async def aclose(self) -> None:
        await self._discard()

    def _fault(self, kind: FaultKind, what: str, report: str) -> NoReturn:
        __tracebackhide__ = True
        cause, server = self.errors.cause()
        raise TALLY.fault(kind, f"{what}: {cause}" if cause else what, f"{report}\n{server}")

    async def _connect(self, path: str, label: str, report: str) -> ClientConnection:
        # No pings of our own: every check's health request says whether the socket lives.
        ws = await websockets.connect(
            self.url + path, max_size=CLIENT_FRAME_BYTES_MAX, open_timeout=None, ping_interval=None
        )
        challenge = await self._recv(ws, label, report)
        if challenge.get("event") != "connect.challenge":
            await ws.close()
            self._fault(FaultKind.MALFORMED, f"{label}: no connect.challenge first", report)
        return ws

    async def _open(self) -> ClientConnection:
        """A socket past a valid handshake, for request frames."""
        label, report = "connect", f"the valid connect frame {CONNECT}"
        try:
            async with asyncio.timeout(FRAME_DEADLINE_S):
                ws = await self._connect("/ws", label, report)
                await ws.send(json.dumps(CONNECT))
                hello = await self._answer(ws, label, report, "connect", errors_too=False)
                if not hello.get("ok"):
                    await ws.close()
                    report += f"\nanswer: {preview(json.dumps(hello))}"
                    self._fault(FaultKind.MALFORMED, "connect: refused", report)
        except (TimeoutError, ConnectionClosed, OSError) as exc:
            self._fault(FaultKind.DROPPED, f"connect: {type(exc).__name__}", report)
        self.ws = ws
        return ws

    async def _health(self, ws: ClientConnection, label: str, report: str) -> None:
        """A ``health`` request on ``ws`` gets its ``res``: the socket lives on."""
        __tracebackhide__ = True
        report += "\nthen a health request"
        health_id = f"health-{next(self._ids)}"
        try:
            async with asyncio.timeout(FRAME_DEADLINE_S):
                await ws.send(json.dumps({"type": "req", "id": health_id, "method": "health"}))
                await self._answer(ws, label, report, health_id, errors_too=False)
        except TimeoutError:
            await self._discard()
            self._fault(FaultKind.HANG, f"{label}: no answer to health after it", report)
        except ConnectionClosed as exc:
            self.ws = None
            self._fault(FaultKind.DROPPED, f"{label}: {closed(exc)} after answering", report)

    async def _answer(
        self,
        ws: ClientConnection,
        label: str,
        report: str,
        expected_id: str | None,
        *,
        errors_too: bool = True,
    ) -> dict[str, Any]:
        """The next ``res`` with ``expected_id`` (or ``error`` event); other frames skipped."""
        while True:
            frame = await self._recv(ws, label, report)
            kind = frame.get("type")
            if kind == "res" and expected_id is not None and frame.get("id") == expected_id:
                problem = response_problem(frame)
            elif errors_too and kind == "event" and frame.get("event") == "error":
                problem = error_problem(frame.get("payload"))
            else:
                continue
            if problem is not None:
                report += f"\nanswer: {preview(json.dumps(frame))}"
                self._fault(FaultKind.MALFORMED, f"{label}: {problem}", report)
            return frame

    async def _recv(self, ws: ClientConnection, label: str, report: str) -> dict[str, Any]:
        message = await ws.recv()
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError):
            frame = None
        if not isinstance(frame, dict):
            report += f"\nanswer: {preview(message)}"
            self._fault(FaultKind.MALFORMED, f"{label}: a frame that is no JSON object", report)
        return frame

    async def _close_code(self, ws: ClientConnection) -> int | None:
        """Read until the server closes ``ws``; its close code."""
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return close_code(exc)

    async def _discard(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                async with asyncio.timeout(CLOSE_DEADLINE_S):
                    await ws.close()
            except TimeoutError:
                ws.transport.abort()


def response_problem(frame: dict[str, Any]) -> str | None:
    """What is wrong with a ``res`` frame, if anything."""
    if frame.get("ok") is True:
        return None if isinstance(frame.get("payload"), dict) else "res without a payload object"
    if frame.get("ok") is False:
        problem = error_problem(frame.get("error"))
        return None if problem is None else f"error res: {problem}"
    return "res without a boolean ok"


def too_big(payload: str | bytes) -> bool:
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return len(data) > MAX_BUFFERED_BYTES


def close_code(exc: ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None


def closed(exc: ConnectionClosed) -> str:
    """How the server closed: ``closed 1011`` or ``closed without a close frame``."""
    code = close_code(exc)
    return "closed without a close frame" if code is None else f"closed {code}"


def describe_frame(frame: WsFrame, payload: str | bytes) -> str:
    kind = "binary" if isinstance(payload, bytes) else "text"
    size = len(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)
    return f"{kind} frame ({size} bytes): {preview(payload)}"
