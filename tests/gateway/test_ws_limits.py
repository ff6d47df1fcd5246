"""What the WebSocket limits cost a client, spoken to a real gateway on loopback.

The request rate limit (``ws_frames_per_s_max``) charges only requests sent while earlier ones
on the connection are unanswered: a client that waits for each answer is paced by the gateway
and never refused, however fast its turns are, while one that pipelines is refused
``rate_limited``. Compression (permessage-deflate) is negotiated only when ``ws_compression``
says so.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.gateway.test_ws_protocol import FRAME_TIMEOUT_S, connect_frame, recv, session
from tests.support import GatedEchoProvider, running_gateway

SEQUENTIAL_TURNS = 400
"""With the old rule (every frame charged), about 120 back-to-back turns of 1 ms emptied the
default bucket (100 frames, then 50/s); these must all pass."""
PIPELINED_FRAMES = 12
SLOW_RATE_PER_S = 2.0
"""A limit whose burst (4 frames) a test's pipelined frames overrun at once."""
READ_BYTES_MAX = 65_536


def is_rate_limited(answer: dict[str, Any]) -> bool:
    return not answer["ok"] and answer["error"]["details"]["code"] == "rate_limited"


@pytest.mark.asyncio
async def test_a_client_that_waits_for_each_reply_sends_400_turns_back_to_back_unrefused(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as client:
            for index in range(SEQUENTIAL_TURNS):
                key = f"seq-{index}"
                request_id = await client.send_message("agent:main:fast", f"turn {index}", key)
                [ack] = await client.response(request_id)
                assert ack["ok"], (index, ack)
                # Waiting for the ack alone would be pipelining: the turn is answered by its
                # terminal chat event.
                await client.until_terminal([key])
    texts = [
        client.terminal(f"seq-{index}")[0]["message"]["content"][0]["text"]
        for index in range(SEQUENTIAL_TURNS)
    ]
    assert texts == [f"echo: turn {index}" for index in range(SEQUENTIAL_TURNS)]


@pytest.mark.asyncio
async def test_a_client_that_waits_only_for_each_ack_is_charged_and_refused(
    tmp_path: Path,
) -> None:
    provider = GatedEchoProvider()  # every turn stays unanswered until the test opens the gate
    with running_gateway(tmp_path, provider=provider, ws_frames_per_s_max=SLOW_RATE_PER_S) as url:
        async with session(url) as client:
            acks = []
            for index in range(PIPELINED_FRAMES):
                request_id = await client.send_message(
                    f"agent:main:ack-{index}", "hi", f"ack-{index}"
                )
                acks.extend(await client.response(request_id))
            provider.open()
            accepted = [a["payload"]["runId"] for a in acks if a["ok"]]
            await client.until_terminal(accepted)
    # The first turn is free (nothing was unanswered), the next four take the burst.
    assert [a["ok"] for a in acks[:5]] == [True] * 5
    refused = [a for a in acks if not a["ok"]]
    assert refused
    assert all(is_rate_limited(a) and a["error"]["retryAfterMs"] > 0 for a in refused)


class OneWriteClient:
    """A gateway client that can put several frames on the wire in one write, so that the
    gateway reads them in one go (websockets' sans-I/O protocol over a plain stream)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
        self.response: Response | None = None
        self._frames: deque[dict[str, Any]] = deque()

    def send_all(self, frames: list[dict[str, Any]]) -> None:
        """Queue ``frames`` and write them with one call."""
        for frame in frames:
            self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    async def recv(self) -> dict[str, Any]:
        """The next text frame from the gateway."""
        async with asyncio.timeout(FRAME_TIMEOUT_S):
            while not self._frames:
                await self._read()
        return self._frames.popleft()

    async def handshake(self) -> None:
        """The HTTP upgrade, then ``connect`` up to ``hello-ok``."""
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        async with asyncio.timeout(FRAME_TIMEOUT_S):
            while self.response is None:
                await self._read()
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        assert (await self.recv())["event"] == "connect.challenge"
        self.send_all([connect_frame()])
        assert (await self.recv())["ok"]

    async def _read(self) -> None:
        data = await self.reader.read(READ_BYTES_MAX)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.response = event
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._frames.append(json.loads(bytes(event.data)))
        self._flush()  # pongs, and the answer to a close
        assert data, "the gateway closed the connection"

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))


@asynccontextmanager
async def one_write_client(url: str) -> AsyncIterator[OneWriteClient]:
    """A :class:`OneWriteClient` past the handshake."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with asyncio.timeout(FRAME_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, int(port))
    client = OneWriteClient(reader, writer)
    try:
        await client.handshake()
        yield client
    finally:
        writer.close()
        async with asyncio.timeout(FRAME_TIMEOUT_S):
            await writer.wait_closed()


@pytest.mark.asyncio
async def test_frames_that_arrive_together_are_charged_from_the_second_one(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, ws_frames_per_s_max=SLOW_RATE_PER_S) as url:
        async with one_write_client(url) as client:
            client.send_all(
                [
                    {"type": "req", "id": f"h{index}", "method": "health", "params": {}}
                    for index in range(PIPELINED_FRAMES)
                ]
            )
            answers: dict[str, dict[str, Any]] = {}
            while len(answers) < PIPELINED_FRAMES:
                frame = await client.recv()
                if frame["type"] == "res":
                    answers[frame["id"]] = frame
    ordered = [answers[f"h{index}"] for index in range(PIPELINED_FRAMES)]
    # The first is free; the next four take the burst, and the gateway dispatches the whole
    # read before any handler runs, so the rest find requests unanswered and the bucket empty.
    assert [a["ok"] for a in ordered] == [True] * 5 + [False] * (PIPELINED_FRAMES - 5)
    assert all(is_rate_limited(a) and a["error"]["retryAfterMs"] > 0 for a in ordered[5:])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("ws_compression", "extensions"),
    [(False, None), (True, "permessage-deflate")],
)
async def test_permessage_deflate_is_accepted_only_when_ws_compression_is_on(
    tmp_path: Path, ws_compression: bool, extensions: str | None
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0, ws_compression=ws_compression) as url:
        # websockets offers permessage-deflate by default (compression="deflate").
        async with websockets.connect(url.replace("http://", "ws://") + "/ws") as ws:
            assert ws.response is not None
            accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (await recv(ws))["event"] == "connect.challenge"
            await ws.send(json.dumps(connect_frame()))
            assert (await recv(ws))["ok"]
            await ws.send(
                json.dumps(
                    {
                        "type": "req",
                        "id": "z1",
                        "method": "chat.send",
                        "params": {
                            "sessionKey": "agent:main:zip",
                            "message": "squeeze me",
                            "idempotencyKey": "zip-1",
                        },
                    }
                )
            )
            final: dict[str, Any] | None = None
            while final is None:
                frame = await recv(ws)
                if frame.get("event") == "chat" and frame["payload"]["state"] != "delta":
                    final = frame["payload"]
    if extensions is None:
        assert accepted is None
    else:
        assert accepted is not None
        assert accepted.split(";")[0].strip() == extensions
    assert final["state"] == "final"
    assert final["message"]["content"][0]["text"] == "echo: squeeze me"
