"""No credential reaches a log line (issue 9, fault 7), even at debug level, where uvicorn
logs every WebSocket's path with its query string.

The suite as a whole is checked too: ``tests/conftest.py`` fails the session if any log line
of any test, or of any gateway child process, carries one of the suite's credentials.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import websockets

from tests.gateway.process import EXIT_TIMEOUT_S, gateway_process
from tests.gateway.test_ws_protocol import connect_frame, recv
from tests.secrets import LOG_TEST_TOKEN

CALL_TIMEOUT_S = 10.0


async def websocket_with_token_in_url(url: str) -> None:
    ws_url = url.replace("http://", "ws://") + f"/ws?token={LOG_TEST_TOKEN}"
    async with websockets.connect(ws_url) as ws:
        assert (await recv(ws))["event"] == "connect.challenge"
        await ws.send(json.dumps(connect_frame(LOG_TEST_TOKEN)))
        assert (await recv(ws))["ok"]
        await ws.send(
            json.dumps(
                {
                    "type": "req",
                    "id": "h",
                    "method": "health",
                    "params": {"auth": {"token": LOG_TEST_TOKEN}},
                }
            )
        )
        assert (await recv(ws))["id"] == "h"


def test_the_token_never_reaches_the_log_on_any_path_even_at_debug(tmp_path: Path) -> None:
    with gateway_process(tmp_path, log_level="debug", env={"TURNGATE_TOKEN": LOG_TEST_TOKEN}) as (
        url,
        process,
    ):
        with httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http:
            bearer = {"Authorization": f"Bearer {LOG_TEST_TOKEN}"}
            assert http.get("/health", headers=bearer).status_code == 200
            assert http.get(f"/health?token={LOG_TEST_TOKEN}").status_code == 401
            sent = http.post(
                "/chat.send",
                headers=bearer,
                json={"sessionKey": "agent:main:logs", "message": f"my token is {LOG_TEST_TOKEN}"},
            )
            assert sent.status_code == 200
        asyncio.run(websocket_with_token_in_url(url))
        process.terminate()
        process.proc.wait(EXIT_TIMEOUT_S)
    logged = "\n".join(process.stderr_lines)
    assert "WebSocket /ws?token=[redacted]" in logged  # the path was logged, and blanked
    assert LOG_TEST_TOKEN not in logged
