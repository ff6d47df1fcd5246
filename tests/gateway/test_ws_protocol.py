"""The gateway WebSocket protocol, spoken by a real client (the websockets library).

Every runId a client sends gets exactly one terminal chat event, and it is the true outcome
of that message, whatever the timing: the OpenClaw field failures (empty finals, silence,
"Previous run is still shutting down") cannot happen here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import (
    TOOL_EXCHANGE,
    EventWaiter,
    GatedEchoProvider,
    running_gateway,
    store_exchange,
)
from turngate.runtime.events import EventBus

FRAME_TIMEOUT_S = 15.0


def connect_frame(token: str | None = None, protocol: int = 4) -> dict[str, Any]:
    auth = {"token": token} if token else {}
    return {
        "type": "req",
        "id": "connect-1",
        "method": "connect",
        "params": {
            "minProtocol": protocol,
            "maxProtocol": protocol,
            "client": {"id": "cli", "version": "test", "platform": "linux", "mode": "cli"},
            "role": "operator",
            "scopes": ["operator.read", "operator.write"],
            "auth": auth,
        },
    }


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(FRAME_TIMEOUT_S):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


@asynccontextmanager
async def session(url: str, path: str = "/ws", token: str | None = None) -> AsyncIterator[Client]:
    async with websockets.connect(url.replace("http://", "ws://") + path) as ws:
        challenge = await recv(ws)
        assert challenge["event"] == "connect.challenge"
        assert challenge["seq"] == 1
        await ws.send(json.dumps(connect_frame(token)))
        hello = await recv(ws)
        assert hello["ok"], hello
        assert hello["payload"]["type"] == "hello-ok"
        assert hello["payload"]["protocol"] == 4
        yield Client(ws)


class Client:
    """Sends requests and sorts what comes back: responses by id, chat events by runId."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.chat: dict[str, list[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._next = 0

    async def request(self, method: str, **params: Any) -> str:
        self._next += 1
        request_id = f"r{self._next}"
        await self.ws.send(
            json.dumps({"type": "req", "id": request_id, "method": method, "params": params})
        )
        return request_id

    async def pump(self) -> dict[str, Any]:
        frame = await recv(self.ws)
        if frame["type"] == "res":
            self.responses.setdefault(frame["id"], []).append(frame)
        elif frame["event"] == "chat":
            self.chat.setdefault(frame["payload"]["runId"], []).append(frame["payload"])
        else:
            self.events.append(frame)
        return frame

    async def response(self, request_id: str, count: int = 1) -> list[dict[str, Any]]:
        while len(self.responses.get(request_id, [])) < count:
            await self.pump()
        return self.responses[request_id]

    def terminal(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in self.chat.get(run_id, []) if e["state"] != "delta"]

    async def until_terminal(self, run_ids: list[str]) -> None:
        while any(not self.terminal(run_id) for run_id in run_ids):
            await self.pump()

    async def send_message(self, session_key: str, message: str, key: str, **extra: Any) -> str:
        return await self.request(
            "chat.send", sessionKey=session_key, message=message, idempotencyKey=key, **extra
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/", "/ws"])
async def test_the_seeds_probe_over_websocket_gets_ten_real_replies(
    tmp_path: Path, path: str
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=50) as url:
        async with session(url, path) as client:
            for index in range(1, 11):
                message = f"Reply containing literal: ok-{index}"
                request_id = await client.send_message("agent:test:main", message, f"run-{index}")
                [ack] = await client.response(request_id)
                assert ack["payload"] == {"runId": f"run-{index}", "status": "started"}
                await client.until_terminal([f"run-{index}"])
                [final] = client.terminal(f"run-{index}")
                assert final["state"] == "final"
                assert final["message"]["content"][0]["text"] == f"echo: {message}"
                deltas = [e for e in client.chat[f"run-{index}"] if e["state"] == "delta"]
                assert "".join(d["deltaText"] for d in deltas) == f"echo: {message}"
                assert [e["seq"] for e in client.chat[f"run-{index}"]] == list(
                    range(1, len(deltas) + 2)
                )


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["followup", "collect", "interrupt"])
async def test_a_burst_gives_every_run_id_exactly_one_true_terminal_event(
    tmp_path: Path, mode: str
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=200) as url:
        async with session(url) as client:
            run_ids = [f"{mode}-{index}" for index in range(20)]
            for run_id in run_ids:
                await client.send_message(
                    "agent:main:burst", f"message {run_id}", run_id, queueMode=mode
                )
            await client.until_terminal(run_ids)
    finals = []
    for run_id in run_ids:
        [terminal] = client.terminal(run_id)
        if terminal["state"] == "final":
            text = terminal["message"]["content"][0]["text"]
            assert f"message {run_id}" in text, (run_id, text)
            finals.append(run_id)
        else:
            assert mode == "interrupt"
            assert terminal["state"] == "aborted"
            assert terminal["stopReason"] == "superseded"
    if mode == "interrupt":
        assert finals == [run_ids[-1]]
    else:
        assert finals == run_ids
    if mode == "collect":
        merged = [client.terminal(r)[0].get("mergedInto") for r in run_ids]
        assert any(merged)


@pytest.mark.asyncio
async def test_history_abort_sessions_and_health_answer_over_websocket(tmp_path: Path) -> None:
    with running_gateway(tmp_path, echo_latency_ms=20) as url:
        async with session(url) as client:
            sent = await client.send_message("agent:main:x", "remember me", "h-1")
            await client.until_terminal(["h-1"])
            [history] = await client.response(
                await client.request("chat.history", sessionKey="agent:main:x")
            )
            texts = [m["content"][0]["text"] for m in history["payload"]["messages"]]
            assert texts == ["remember me", "echo: remember me"]
            [listed] = await client.response(await client.request("sessions.list"))
            assert [s["key"] for s in listed["payload"]["sessions"]] == ["agent:main:x"]
            [abort] = await client.response(
                await client.request("chat.abort", sessionKey="agent:main:x")
            )
            assert abort["payload"] == {"ok": True, "aborted": False, "runIds": []}
            [health] = await client.response(await client.request("health"))
            assert health["payload"]["status"] == "live"
            assert sent


@pytest.mark.asyncio
async def test_history_shows_tool_calls_and_results_in_the_shapes_the_control_ui_reads(
    tmp_path: Path,
) -> None:
    await store_exchange(tmp_path, "agent:main:x", TOOL_EXCHANGE, at=1_800_000_000.0)
    with running_gateway(tmp_path, echo_latency_ms=20) as url:
        async with session(url) as client:
            await client.send_message("agent:main:x", "thanks", "h-2")
            await client.until_terminal(["h-2"])
            [history] = await client.response(
                await client.request("chat.history", sessionKey="agent:main:x")
            )
    messages = history["payload"]["messages"]
    # Each message carries the ids OpenClaw's clients key it by: its place in the transcript,
    # its run, and, for a user message, the turn's idempotency key.
    stamps = [m.pop("__openclaw") for m in messages]
    assert [(s["id"], s["seq"]) for s in stamps] == [(str(n), n) for n in range(1, 9)]
    assert [s["runId"] for s in stamps] == ["tools-1"] * 6 + ["h-2"] * 2
    assert [s.get("idempotencyKey") for s in stamps if "idempotencyKey" in s] == [
        "tools-1",
        "h-2",
    ]
    at = {"timestamp": 1_800_000_000_000, "runId": "tools-1"}
    assert messages[:6] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Lisbon?"}], **at},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}], **at},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "toolCall",
                    "id": "c1",
                    "name": "weather",
                    "arguments": {"city": "Lisbon"},
                },
                # Arguments that are not a JSON object are shown as the model sent them.
                {"type": "toolCall", "id": "c2", "name": "forecast", "arguments": "{not json"},
            ],
            **at,
        },
        {
            "role": "toolResult",
            "toolCallId": "c1",
            "toolName": "weather",
            "content": [{"type": "text", "text": "sunny, 24°C"}],
            "isError": False,
            **at,
        },
        {
            "role": "toolResult",
            "toolCallId": "c2",
            "toolName": "forecast",
            "content": [{"type": "text", "text": "arguments are not JSON"}],
            "isError": True,
            **at,
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny, 24°C."}], **at},
    ]
    # The turn after the tool calls: its text entries have the shape they always had.
    assert [(m["role"], m["content"], m["runId"]) for m in messages[6:]] == [
        ("user", [{"type": "text", "text": "thanks"}], "h-2"),
        ("assistant", [{"type": "text", "text": "echo: thanks"}], "h-2"),
    ]
    assert all(set(m) == {"role", "content", "timestamp", "runId"} for m in messages[6:])


@pytest.mark.asyncio
async def test_the_agent_method_answers_twice_on_one_request_id(tmp_path: Path) -> None:
    with running_gateway(tmp_path, echo_latency_ms=20) as url:
        async with session(url) as client:
            request_id = await client.request(
                "agent", sessionKey="agent:main:main", message="do it", idempotencyKey="ag-1"
            )
            accepted, done = await client.response(request_id, count=2)
    assert accepted["payload"]["status"] == "accepted"
    assert accepted["payload"]["runId"] == "ag-1"
    assert done["payload"]["status"] == "ok"
    assert done["payload"]["result"]["payloads"] == [{"text": "echo: do it"}]


@pytest.mark.asyncio
async def test_bad_requests_get_error_responses_naming_the_field_and_the_socket_survives(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, ws_frame_bytes_max=4096) as url:
        async with session(url) as client:
            unknown = await client.request(
                "chat.send",
                sessionKey="agent:main:main",
                message="x",
                idempotencyKey="k",
                colour="red",
            )
            missing = await client.request("chat.send", sessionKey="agent:main:main", message="x")
            bad_key = await client.request(
                "chat.send", sessionKey="mine", message="x", idempotencyKey="k2"
            )
            nope = await client.request("chat.teleport")
            errors = {
                rid: (await client.response(rid))[0]["error"]
                for rid in (unknown, missing, bad_key, nope)
            }
            await client.ws.send(json.dumps({"pad": "x" * 5000}))
            while not client.events:
                await client.pump()
            ok = await client.send_message("agent:main:main", "still here", "k3")
            await client.until_terminal(["k3"])
    assert errors[unknown]["message"] == "colour: unknown field"
    assert errors[missing]["message"] == "idempotencyKey: required"
    assert errors[bad_key]["details"]["code"] == "invalid_session_key"
    assert "unknown method 'chat.teleport'" in errors[nope]["message"]
    assert all(e["code"] == "INVALID_REQUEST" for e in errors.values())
    [too_large] = client.events
    assert too_large["payload"]["details"]["code"] == "frame_too_large"
    assert client.terminal("k3")[0]["state"] == "final"
    assert ok


@pytest.mark.asyncio
async def test_a_connection_over_its_request_rate_is_told_to_slow_down(tmp_path: Path) -> None:
    provider = GatedEchoProvider()
    with running_gateway(tmp_path, provider=provider, ws_frames_per_s_max=2.0) as url:
        async with session(url) as client:
            # A turn held at the model's gate keeps a request unanswered, so every request
            # sent meanwhile is pipelined and charged, however the gateway reads them.
            [ack] = await client.response(await client.send_message("agent:main:rl", "hi", "rl-1"))
            ids = [await client.request("health") for _ in range(12)]
            answers = [(await client.response(rid))[0] for rid in ids]
            provider.open()
            await client.until_terminal(["rl-1"])
    assert ack["ok"]
    limited = [a for a in answers if not a["ok"]]
    assert limited
    assert all(a["error"]["details"]["code"] == "rate_limited" for a in limited)
    assert all(a["error"]["retryAfterMs"] > 0 for a in limited)
    assert answers[0]["ok"]


@pytest.mark.asyncio
async def test_ticks_arrive_at_the_announced_interval(tmp_path: Path) -> None:
    with running_gateway(tmp_path, ws_tick_interval_ms=50) as url:
        async with session(url) as client:
            while len([e for e in client.events if e["event"] == "tick"]) < 2:
                await client.pump()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("frame", "expect"),
    [
        (connect_frame(None), "gateway token missing"),
        (connect_frame("wrong-token-of-enough-length"), "gateway token mismatch"),
        (connect_frame(TOKEN, protocol=3), "protocol 4"),
        ({"type": "req", "id": "x", "method": "health", "params": {}}, "must be a connect"),
    ],
)
async def test_a_bad_handshake_is_refused_and_the_socket_closed(
    tmp_path: Path, frame: dict[str, Any], expect: str
) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url:
        async with websockets.connect(url.replace("http://", "ws://") + "/") as ws:
            await recv(ws)
            await ws.send(json.dumps(frame))
            refusal = await recv(ws)
            with pytest.raises(websockets.ConnectionClosed):
                await recv(ws)
    assert refusal["ok"] is False
    assert expect in refusal["error"]["message"]
    assert ws.close_code == 1008


@pytest.mark.asyncio
async def test_the_right_token_opens_the_protocol(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url:
        async with session(url, token=TOKEN) as client:
            [health] = await client.response(await client.request("health"))
    assert health["ok"]


def test_a_client_whose_pongs_stop_is_dropped_and_its_turn_still_replies(tmp_path: Path) -> None:
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with running_gateway(
        tmp_path, events=bus, echo_latency_ms=800, ws_ping_interval_s=0.2, ws_ping_timeout_s=0.2
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=FRAME_TIMEOUT_S) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            upgraded = b""
            while b"\r\n\r\n" not in upgraded and len(upgraded) < 65_536:
                upgraded += sock.recv(4096)
            assert upgraded.startswith(b"HTTP/1.1 101")
            sock.sendall(masked_text(json.dumps(connect_frame())))
            sock.sendall(
                masked_text(
                    json.dumps(
                        {
                            "type": "req",
                            "id": "s1",
                            "method": "chat.send",
                            "params": {
                                "sessionKey": "agent:main:silent",
                                "message": "are you there?",
                                "idempotencyKey": "silent-1",
                            },
                        }
                    )
                )
            )
            waiter.wait_for("accepted")
            # From here the client reads nothing and answers no ping: the server must drop it.
            closed = read_until_closed(sock)
        waiter.wait_for("delivered")
        turn = httpx2.get(f"{url}/turns/silent-1", timeout=FRAME_TIMEOUT_S).json()
    assert closed
    assert turn["status"] == "ok"
    assert turn["reply"] == "echo: are you there?"


def masked_text(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytearray([0x81])
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    else:
        header.append(0x80 | 126)
        header += len(payload).to_bytes(2, "big")
    return bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_until_closed(sock: socket.socket) -> bool:
    """Read (without ever answering) until the server closes; True if it did in time."""
    sock.settimeout(FRAME_TIMEOUT_S)
    for _ in range(10_000):
        try:
            chunk = sock.recv(65_536)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        if not chunk:
            return True
    return False


@pytest.mark.asyncio
async def test_main_names_the_default_agents_main_session_as_openclaws_clients_name_it(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as client:
            await client.send_message("main", "hi", "mm-1")
            await client.until_terminal(["mm-1"])
            [answer] = await client.response(
                await client.request("chat.history", sessionKey="main")
            )
    [final] = client.terminal("mm-1")
    assert final["sessionKey"] == "agent:main:main"
    assert answer["payload"]["sessionKey"] == "agent:main:main"
    assert [m["role"] for m in answer["payload"]["messages"]] == ["user", "assistant"]
