"""SIGTERM with clients waiting (issue 9, fault 4): every waiting HTTP client gets the
documented ``503 {"status": "pending"}``, every WebSocket client a pending frame and a 1012
close, before the process exits; the turns resume on the next start.

The turns outlast the shutdown drain on purpose (echo latency 60 s, drain 0.5 s): this is the
case where uvicorn used to cancel the handlers and answer a bare ``500`` in text/plain.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets

from tests.gateway.process import EXIT_TIMEOUT_S, GatewayProcess, gateway_process
from tests.gateway.test_ws_protocol import Client, session

HTTP_CLIENTS = 30
WS_CLIENTS = 3
CALL_TIMEOUT_S = 30.0
LONG_TURN_MS = 60_000
SHUTDOWN = {"TURNGATE_SHUTDOWN_DRAIN_S": "0.5"}


def http_key(index: int) -> str:
    return f"http-{index}"


def ws_key(index: int) -> str:
    return f"ws-{index}"


async def all_running(http: httpx2.AsyncClient, count: int) -> None:
    """Until the gateway runs ``count`` turns (each poll is a real request; bounded)."""
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await http.get("/health")).json()["runningTurns"] >= count:
            return
    pytest.fail(f"the gateway did not run {count} turns within {CALL_TIMEOUT_S}s")


async def send_and_wait(http: httpx2.AsyncClient, index: int) -> httpx2.Response:
    return await http.post(
        "/chat.send",
        json={
            "sessionKey": f"agent:test:http{index}",
            "message": f"message {index}",
            "idempotencyKey": http_key(index),
        },
    )


async def ws_send(client: Client, index: int) -> None:
    request_id = await client.send_message(f"agent:test:ws{index}", f"ws {index}", ws_key(index))
    [ack] = await client.response(request_id)
    assert ack["ok"], ack


async def pump_all(client: Client) -> None:
    while True:
        await client.pump()


async def ws_until_closed(client: Client) -> int:
    """Pump frames until the server closes; return the close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await pump_all(client)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def sigterm_while_clients_wait(url: str, process: GatewayProcess) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as http:
        waiting = [asyncio.create_task(send_and_wait(http, i)) for i in range(HTTP_CLIENTS)]
        async with (
            session(url) as ws0,
            session(url) as ws1,
            session(url) as ws2,
        ):
            clients = [ws0, ws1, ws2]
            for index, client in enumerate(clients):
                await ws_send(client, index)
            await all_running(http, HTTP_CLIENTS + WS_CLIENTS)
            process.terminate()
            answers = await asyncio.gather(*waiting)
            codes = [await ws_until_closed(client) for client in clients]
            return {"http": answers, "ws": clients, "codes": codes}


def test_sigterm_answers_every_waiting_client_pending_and_the_turns_resume(
    tmp_path: Path,
) -> None:
    with gateway_process(tmp_path, echo_latency_ms=LONG_TURN_MS, env=SHUTDOWN) as (url, first):
        seen = asyncio.run(sigterm_while_clients_wait(url, first))
        first.proc.wait(EXIT_TIMEOUT_S)
        assert not [line for line in first.stderr_lines if "Traceback" in line]

    for response in seen["http"]:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["status"] == "pending"
        assert body["error"]["code"] == "shutdown"
    assert seen["codes"] == [1012] * WS_CLIENTS
    for index, client in enumerate(seen["ws"]):
        [terminal] = client.terminal(ws_key(index))
        assert terminal["state"] == "error"
        assert terminal["errorDetail"] == {"code": "shutdown", "status": "pending"}

    # The next process runs every one of those turns: a retry gets its real reply.
    with (
        gateway_process(tmp_path, echo_latency_ms=0) as (url, _),
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http,
    ):
        for index in range(HTTP_CLIENTS):
            again = http.post(
                "/chat.send",
                json={
                    "sessionKey": f"agent:test:http{index}",
                    "message": f"message {index}",
                    "idempotencyKey": http_key(index),
                },
            )
            assert again.status_code == 200, again.text
            assert again.json()["reply"] == f"echo: message {index}"
        for index in range(WS_CLIENTS):
            turn = http.get(f"/turns/{ws_key(index)}").json()
            assert turn["status"] == "ok", turn


def test_an_idle_websocket_client_is_closed_with_1012_at_sigterm(tmp_path: Path) -> None:
    """1012 (service restart) tells a client to reconnect, to the next process."""

    async def idle_client(url: str, process: GatewayProcess) -> int:
        async with session(url) as client:
            process.terminate()
            return await ws_until_closed(client)

    with gateway_process(tmp_path, env=SHUTDOWN) as (url, process):
        assert asyncio.run(idle_client(url, process)) == 1012
        process.proc.wait(EXIT_TIMEOUT_S)
