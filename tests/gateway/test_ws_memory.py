"""What an idle WebSocket connection costs the gateway (issue 17: 1,000 idle clients in at
most 40 MB).

Most of an idle connection is uvicorn's and Starlette's (the protocol object, the parsed
upgrade request, the ASGI call chain). What turngate adds is measured here with
tracemalloc: the memory allocated by turngate's own code for each handshaken, idle client.
A per-connection dispatch table of bound handlers, an :class:`asyncio.Queue` for the outbox,
a task per tick timer or a sent frame kept alive by the writer would each break the budget.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.gateway.test_ws_protocol import connect_frame, recv
from tests.support import running_gateway

IDLE_CLIENTS = 50
WARMUP_CLIENTS = 5
TRACEBACK_FRAMES = 30
OWN_BYTES_PER_CONNECTION_MAX = 8 * 1024
"""turngate's share of an idle connection (some 5 kB: the connection, its writer task, the
coroutine frames of the endpoint and of the reader); it was 17 kB before issue 17."""
OWN_CODE = ("/turngate/",)
THIRD_PARTY = ("/site-packages/", "/tests/")


async def idle_client(url: str) -> ClientConnection:
    """A client past the handshake, which then says nothing.

    Before it falls silent it sends a frame that is no request and waits for the ``error``
    event that answers it: the gateway is then done with the handshake and back to reading,
    its writer waiting, as an idle connection is (no pause of any length needed, and no
    method holder made, as a real request would)."""
    ws = await websockets.connect(url.replace("http://", "ws://") + "/ws", compression=None)
    assert (await recv(ws))["event"] == "connect.challenge"
    await ws.send(json.dumps(connect_frame()))
    assert (await recv(ws))["ok"]
    await ws.send(json.dumps({"type": "req"}))
    assert (await recv(ws))["event"] == "error"
    return ws


@contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start(TRACEBACK_FRAMES)
    try:
        yield
    finally:
        tracemalloc.stop()


def owner_is_turngate(trace: tracemalloc.StatisticDiff) -> bool:
    """Whether the innermost frame of the allocation outside the standard library is
    turngate's (an asyncio task or queue made by turngate's code counts as turngate's)."""
    for frame in reversed(trace.traceback):  # innermost last
        if any(part in frame.filename for part in OWN_CODE):
            return True
        if any(part in frame.filename for part in THIRD_PARTY):
            return False
    return False


@pytest.mark.asyncio
async def test_an_idle_connection_costs_turngate_little(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url, traced():
        # Warm-up clients stay open: what a first connection builds once (imports, caches)
        # is in both snapshots, and nothing is being torn down between them.
        clients = [await idle_client(url) for _ in range(WARMUP_CLIENTS)]
        before = tracemalloc.take_snapshot()
        clients += [await idle_client(url) for _ in range(IDLE_CLIENTS)]
        during = tracemalloc.take_snapshot()
        for ws in clients:
            await ws.close()
    grown = [d for d in during.compare_to(before, "traceback") if owner_is_turngate(d)]
    per_connection = sum(d.size_diff for d in grown) / IDLE_CLIENTS
    assert per_connection <= OWN_BYTES_PER_CONNECTION_MAX, (
        f"{per_connection:.0f} bytes per idle connection",
        [(str(d.traceback[-1]), d.size_diff // IDLE_CLIENTS) for d in grown[:10]],
    )
