"""The simulated network (``sim/asgi.py``) treats the gateway's app as uvicorn does: a client
that leaves is seen as a disconnect and not answered, a handler is not cancelled for it, and
a crash (the cut) loses every connection of that life at once."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from turngate.sim.asgi import ClientLeft, ConnectionLost, Wire
from turngate.sim.loop import run_virtual


class Slow:
    """An app whose ``/slow`` answers after ``delay_s`` and notes what its handler saw."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.finished = asyncio.Event()
        self.saw_disconnect = False
        self.socket_ended: str | None = None
        self.app = Starlette(
            routes=[
                Route("/slow", self.slow, methods=["POST"]),
                WebSocketRoute("/ws", self.echo),
            ]
        )

    async def slow(self, request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(self.delay_s)
        self.saw_disconnect = await request.is_disconnected()
        self.finished.set()
        return JSONResponse({"echo": body})

    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_json(await websocket.receive_json())
        except WebSocketDisconnect:
            self.socket_ended = "disconnect"


def test_a_request_answered_in_time_gets_its_whole_answer() -> None:
    async def main() -> None:
        wire = Wire(Slow(1.0).app)
        answer = await wire.request("POST", "/slow", {"n": 1}, leave_at=5.0)
        assert (answer.status, answer.json()) == (200, {"echo": {"n": 1}})

    run_virtual(main())


def test_a_client_that_leaves_is_seen_as_gone_and_its_handler_still_finishes() -> None:
    async def main() -> None:
        slow = Slow(3.0)
        wire = Wire(slow.app)
        with pytest.raises(ClientLeft):
            await wire.request("POST", "/slow", {"n": 1}, leave_at=1.0)
        async with asyncio.timeout(10.0):
            await slow.finished.wait()
        assert slow.saw_disconnect
        assert wire.errors == []

    run_virtual(main())


def test_a_cut_loses_every_connection_at_once() -> None:
    async def main() -> None:
        wire = Wire(Slow(3.0).app)
        loop = asyncio.get_running_loop()
        waiting = loop.create_task(wire.request("POST", "/slow", {}, leave_at=10.0))
        socket = await wire.connect("/ws", give_up_at=1.0)
        await asyncio.sleep(1.0)
        wire.cut()
        with pytest.raises(ConnectionLost):
            await waiting
        with pytest.raises(ConnectionLost):
            await socket.next_frame(5.0)
        with pytest.raises(ConnectionLost):
            await wire.request("POST", "/slow", {}, leave_at=10.0)
        await wire.wait_closed()
        assert loop.time() == 1.0

    run_virtual(main())


def test_a_websocket_carries_frames_both_ways_and_the_app_sees_the_client_leave() -> None:
    async def main() -> None:
        slow = Slow(0.0)
        wire = Wire(slow.app)
        socket = await wire.connect("/ws", give_up_at=1.0)
        socket.send({"hello": 1})
        assert await socket.next_frame(1.0) == {"hello": 1}
        socket.leave()
        await wire.wait_closed()
        assert slow.socket_ended == "disconnect"

    run_virtual(main())


def test_a_handler_that_raises_is_recorded_for_the_run_to_report() -> None:
    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("bug in a handler")

    async def main() -> None:
        wire = Wire(Starlette(routes=[Route("/boom", boom)]))
        answer = await wire.request("GET", "/boom", leave_at=1.0)
        assert answer.status == 500
        await wire.wait_closed()
        assert "bug in a handler" in wire.errors[0]

    run_virtual(main())
