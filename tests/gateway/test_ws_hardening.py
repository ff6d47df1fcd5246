"""The WebSocket protocol under hostile or unlucky input: the socket stays up, and says why.

A bad request (a number out of range, an integer of thousands of digits, a malformed
``idempotencyKey``) gets an error naming the field and the connection serves the next one; a
turngate bug in one request is answered ``internal`` without taking the socket down; a
refused handshake always ends with its error and a 1008 close; frames over
``ws_frame_bytes_max`` get an error event, frames over four times that a 1009 close; and a
run id gets exactly one terminal ``chat`` event per connection, however often it is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.gateway.test_ws_protocol import Client, connect_frame, recv
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import GatedEchoProvider, gateway_config, running_gateway, serve
from turngate.gateway.app import create_app
from turngate.gateway.ws_frames import encode_frame
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.store.base import SessionRecord
from turngate.store.configured import DB_FILE
from turngate.store.sqlite import SqliteStore

SESSION = "agent:main:hardening"
HUGE_INT_DIGITS = 5000
"""Past Python's int-string limit (4,300 digits), where ``json.loads`` raises ValueError."""
FRAME_BYTES_MAX = 8192
"""Small, yet room for a 5,000-digit integer to reach the JSON parser."""
HARD_FRAME_BYTES_MAX = 4 * FRAME_BYTES_MAX
"""uvicorn's ``ws_max_size``: a frame over it is not read at all."""
REFUSED_HANDSHAKES = 50
STREAMING_CLOSES = 10
CHATTY_DELTAS = 5000
DELTAS_BEFORE_CLOSE = 20


def ws_url(url: str, path: str = "/ws") -> str:
    return url.replace("http://", "ws://") + path


@asynccontextmanager
async def connected(url: str, token: str | None = None) -> AsyncIterator[tuple[Client, str]]:
    """A client past the handshake, and the ``connId`` the gateway gave it."""
    async with websockets.connect(ws_url(url)) as ws:
        challenge = await recv(ws)
        assert challenge["event"] == "connect.challenge"
        await ws.send(json.dumps(connect_frame(token)))
        hello = await recv(ws)
        assert hello["ok"], hello
        yield Client(ws), hello["payload"]["server"]["connId"]


async def still_serving(client: Client) -> None:
    """A normal request on the same socket is answered: the connection survived."""
    [health] = await client.response(await client.request("health"))
    assert health["ok"], health
    assert health["payload"]["status"] == "live"


async def barrier(client: Client) -> None:
    """Wait until every frame the gateway queued before this point has arrived.

    The gateway's writer sends frames in the order they were queued, and the answer to a
    request sent now is queued after anything already due: past the barrier, a frame that
    has not arrived was never sent.
    """
    await still_serving(client)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway with a small frame limit for the bad-request cases of this module."""
    with running_gateway(
        tmp_path_factory.mktemp("ws-hardening"), ws_frame_bytes_max=FRAME_BYTES_MAX
    ) as url:
        yield url


# -- numbers without bounds, and other bad requests ---------------------------------------

SEND = {"sessionKey": SESSION, "message": "hello"}
BAD_REQUESTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sessions.list-offset-1e30": ("sessions.list", {"offset": 10**30}, "offset"),
    "sessions.list-offset-negative": ("sessions.list", {"offset": -1}, "offset"),
    "sessions.list-offset-2**63": ("sessions.list", {"offset": 2**63}, "offset"),
    "sessions.list-limit-0": ("sessions.list", {"limit": 0}, "limit"),
    "chat.history-limit-negative": ("chat.history", {"sessionKey": SESSION, "limit": -5}, "limit"),
    "chat.send-timeoutMs-negative": (
        "chat.send",
        {**SEND, "idempotencyKey": "t-neg", "timeoutMs": -1},
        "timeoutMs",
    ),
    "chat.send-timeoutMs-1e30": (
        "chat.send",
        {**SEND, "idempotencyKey": "t-huge", "timeoutMs": 10**30},
        "timeoutMs",
    ),
    "agent-timeout-0": ("agent", {**SEND, "idempotencyKey": "a-zero", "timeout": 0}, "timeout"),
    "agent-timeout-1e30": (
        "agent",
        {**SEND, "idempotencyKey": "a-huge", "timeout": 10**30},
        "timeout",
    ),
    "chat.send-idempotencyKey-path": (
        "chat.send",
        {**SEND, "idempotencyKey": "../../x y\0"},
        "idempotencyKey",
    ),
    "agent-idempotencyKey-path": (
        "agent",
        {**SEND, "idempotencyKey": "../../x y\0"},
        "idempotencyKey",
    ),
    "chat.send-idempotencyKey-129-chars": (
        "chat.send",
        {**SEND, "idempotencyKey": "k" * 129},
        "idempotencyKey",
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("sessions.list", {"limit": 10_000}),
        ("sessions.list", {"limit": 10**30}),
        ("chat.history", {"sessionKey": SESSION, "limit": 10**30}),
    ],
)
async def test_a_list_limit_past_the_page_size_is_clamped_not_refused(
    gateway: str, method: str, params: dict[str, Any]
) -> None:
    # Clients ask for "everything" with a large limit (the Control UI sends 10000).
    async with connected(gateway) as (client, _):
        [answer] = await client.response(await client.request(method, **params))
    assert answer["ok"] is True, answer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "params", "field"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
async def test_a_request_with_a_field_out_of_range_is_refused_naming_it_and_the_socket_stays_open(
    gateway: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    params: dict[str, Any],
    field: str,
) -> None:
    async with connected(gateway) as (client, _):
        [answer] = await client.response(await client.request(method, **params))
        await still_serving(client)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert answer["error"]["details"]["code"] == "invalid_field"
    assert answer["error"]["message"].startswith(f"{field}:"), answer["error"]["message"]
    assert errors_logged(caplog) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("sign", ["", "-"], ids=["positive", "negative"])
async def test_an_integer_of_5000_digits_gets_an_invalid_json_event_and_the_socket_stays_open(
    gateway: str, caplog: pytest.LogCaptureFixture, sign: str
) -> None:
    huge = sign + "9" * HUGE_INT_DIGITS
    frame = '{"type":"req","id":"huge","method":"sessions.list","params":{"offset":' + huge + "}}"
    async with connected(gateway) as (client, _):
        await client.ws.send(frame)
        while not client.events:
            await client.pump()
        await still_serving(client)
    [error] = client.events
    assert error["event"] == "error"
    assert error["payload"]["details"]["code"] == "invalid_json"
    assert error["payload"]["message"].startswith("frame:")
    assert "huge" not in client.responses
    assert errors_logged(caplog) == []


# -- a turngate bug in one request --------------------------------------------------------


class OverflowingStore(SqliteStore):
    """A store whose session listing fails as the unbounded offset once made SQLite fail."""

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")


@pytest.mark.asyncio
async def test_a_handler_that_raises_unexpectedly_answers_internal_and_the_socket_stays_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(gateway_config(tmp_path), store=OverflowingStore(tmp_path / DB_FILE))
    with serve(app) as url:
        async with connected(url) as (client, conn_id):
            [answer] = await client.response(await client.request("sessions.list"))
            await still_serving(client)
            run = await client.send_message(SESSION, "still here", "after-the-bug")
            await client.until_terminal(["after-the-bug"])
    assert answer["ok"] is False
    assert answer["error"]["details"]["code"] == "internal"
    assert answer["error"]["code"] == "UNAVAILABLE"
    assert "Traceback" not in answer["error"]["message"]
    assert "OverflowError" not in answer["error"]["message"]
    assert run
    assert client.terminal("after-the-bug")[0]["state"] == "final"
    [logged] = errors_logged(caplog)
    assert conn_id in logged.getMessage()
    assert "sessions.list" in logged.getMessage()
    assert logged.exc_info is not None
    assert logged.exc_info[0] is OverflowError


# -- refused handshakes -------------------------------------------------------------------


async def refused_handshake(url: str, frame: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Send ``frame`` as the connect request, before even reading the challenge (the
    tightest timing); return the refusal and the close code."""
    async with websockets.connect(ws_url(url, "/")) as ws:
        await ws.send(json.dumps(frame))
        challenge = await recv(ws)
        refusal = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)
    assert challenge["event"] == "connect.challenge"
    return refusal, close_code(ws)


def close_code(ws: ClientConnection) -> int | None:
    return ws.close_code


async def pump_until_closed(client: Client, frames_max: int = 100) -> None:
    """Read whatever comes until the gateway closes the socket (each read has a deadline)."""
    for _ in range(frames_max):
        try:
            await client.pump()
        except websockets.ConnectionClosed:
            return
    raise AssertionError(f"the socket was still open after {frames_max} frames")


@pytest.mark.asyncio
async def test_fifty_refused_handshakes_each_get_their_error_and_a_1008_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = connect_frame("not-the-token-but-long-enough")
    with running_gateway(tmp_path, token=TOKEN) as url:
        results = await asyncio.gather(
            *(refused_handshake(url, wrong) for _ in range(REFUSED_HANDSHAKES))
        )
        async with connected(url, token=TOKEN) as (client, _):
            await still_serving(client)
    for refusal, code in results:
        assert refusal["ok"] is False
        assert refusal["error"]["code"] == "INVALID_REQUEST"
        assert refusal["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
        assert code == 1008
    assert errors_logged(caplog) == []
    refused = [r for r in caplog.records if "handshake refused" in r.getMessage()]
    assert len(refused) == REFUSED_HANDSHAKES


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("field", "value"),
    [("minProtocol", 10**30), ("maxProtocol", 10**30), ("minProtocol", 0), ("maxProtocol", -4)],
)
async def test_a_connect_with_a_protocol_number_out_of_range_is_refused_naming_it(
    gateway: str, caplog: pytest.LogCaptureFixture, field: str, value: int
) -> None:
    frame = connect_frame()
    frame["params"][field] = value
    refusal, code = await refused_handshake(gateway, frame)
    assert refusal["error"]["message"].startswith(f"{field}:"), refusal
    assert code == 1008
    assert errors_logged(caplog) == []


@pytest.mark.asyncio
async def test_a_token_that_is_not_valid_text_is_refused_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON can spell a lone surrogate (``"\\ud800"``), which no token comparison can
    encode."""
    with running_gateway(tmp_path, token=TOKEN) as url:
        refusal, code = await refused_handshake(url, connect_frame("\ud800" * 30))
    assert refusal["error"]["message"].startswith("auth.token:"), refusal
    assert code == 1008
    assert errors_logged(caplog) == []


def test_a_frame_holding_text_utf8_cannot_carry_is_sent_ascii_escaped() -> None:
    """A model's stream can split a surrogate pair across two deltas; each half still goes
    out as valid JSON text, and comes back as the same string."""
    frame = {"deltaText": "half of \ud83d", "more": "é"}
    text = encode_frame(frame)
    text.encode()
    assert json.loads(text) == frame
    assert encode_frame({"more": "é"}) == '{"more": "é"}'


# -- frame sizes --------------------------------------------------------------------------


def padded_request(request_id: str, size_bytes: int) -> str:
    """A ``health`` request of exactly ``size_bytes`` bytes."""
    frame: dict[str, Any] = {
        "type": "req",
        "id": request_id,
        "method": "health",
        "params": {"pad": ""},
    }
    frame["params"]["pad"] = "x" * (size_bytes - len(json.dumps(frame)))
    text = json.dumps(frame)
    assert len(text.encode()) == size_bytes
    return text


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [FRAME_BYTES_MAX - 1, FRAME_BYTES_MAX])
async def test_a_frame_up_to_the_limit_is_served(gateway: str, size: int) -> None:
    async with connected(gateway) as (client, _):
        await client.ws.send(padded_request("fits", size))
        [answer] = await client.response("fits")
    assert answer["ok"], answer
    assert client.events == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "size",
    [FRAME_BYTES_MAX + 1, HARD_FRAME_BYTES_MAX],
    ids=["just-over-the-limit", "four-times-the-limit"],
)
async def test_a_frame_over_the_limit_gets_an_error_event_and_the_socket_stays_open(
    gateway: str, size: int
) -> None:
    async with connected(gateway) as (client, _):
        await client.ws.send(padded_request("too-big", size))
        while not client.events:
            await client.pump()
        await still_serving(client)
    [error] = client.events
    assert error["event"] == "error"
    assert error["payload"]["details"]["code"] == "frame_too_large"
    assert str(FRAME_BYTES_MAX) in error["payload"]["message"]
    assert "too-big" not in client.responses


@pytest.mark.asyncio
async def test_a_frame_over_four_times_the_limit_closes_the_socket_with_1009(
    gateway: str,
) -> None:
    async with connected(gateway) as (client, _):
        await client.ws.send(padded_request("far-too-big", HARD_FRAME_BYTES_MAX + 1))
        await pump_until_closed(client)
    assert close_code(client.ws) == 1009
    assert "far-too-big" not in client.responses


class ChattyProvider:
    """Streams a long reply one character at a time, so the gateway is always sending."""

    name = "chatty"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        for _ in range(CHATTY_DELTAS):
            await asyncio.sleep(0)  # a yield to the loop between deltas, not a wait
            yield TextDelta("x")
        yield Finish("stop")


@pytest.mark.asyncio
async def test_a_1009_close_while_a_reply_streams_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn sends the 1009 close itself; a frame the gateway sends after it must end the
    connection quietly, not as "websocket.send after websocket.close"."""
    with running_gateway(
        tmp_path, provider=ChattyProvider(), ws_frame_bytes_max=FRAME_BYTES_MAX
    ) as url:
        for attempt in range(STREAMING_CLOSES):
            async with connected(url) as (client, _):
                await client.send_message(
                    f"agent:main:chatty-{attempt}", "talk", f"chatty-{attempt}"
                )
                while len(client.chat.get(f"chatty-{attempt}", [])) < DELTAS_BEFORE_CLOSE:
                    await client.pump()
                await client.ws.send(padded_request("far-too-big", HARD_FRAME_BYTES_MAX + 1))
                await pump_until_closed(client, CHATTY_DELTAS)
            assert close_code(client.ws) == 1009
    assert errors_logged(caplog) == []


# -- one terminal event per run id per connection -----------------------------------------


@pytest.mark.asyncio
async def test_retrying_a_run_in_flight_on_one_connection_gets_in_flight_and_one_terminal_event(
    tmp_path: Path,
) -> None:
    provider = GatedEchoProvider(ahead=1)
    with running_gateway(tmp_path, provider=provider) as url:
        async with connected(url) as (client, _):
            [ack] = await client.response(await client.send_message(SESSION, "once", "retry-1"))
            while not client.chat.get("retry-1"):
                await client.pump()  # the first delta: the run is under way
            retries = [await client.send_message(SESSION, "once", "retry-1") for _ in range(2)]
            retry_acks = [(await client.response(r))[0] for r in retries]
            provider.open()
            await client.until_terminal(["retry-1"])
            await barrier(client)
    assert ack["payload"] == {"runId": "retry-1", "status": "started"}
    assert [a["payload"] for a in retry_acks] == [{"runId": "retry-1", "status": "in_flight"}] * 2
    events = client.chat["retry-1"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["state"] for e in events[:-1]] == ["delta"] * (len(events) - 1)
    [final] = client.terminal("retry-1")
    assert final["state"] == "final"
    assert final["message"]["content"][0]["text"] == "echo: once"


@pytest.mark.asyncio
async def test_retrying_a_finished_run_on_one_connection_gets_its_status_and_no_new_event(
    gateway: str,
) -> None:
    async with connected(gateway) as (client, _):
        await client.send_message(SESSION, "done once", "retry-after-final")
        await client.until_terminal(["retry-after-final"])
        before = list(client.chat["retry-after-final"])
        [again] = await client.response(
            await client.send_message(SESSION, "done once", "retry-after-final")
        )
        await barrier(client)
    assert again["payload"] == {"runId": "retry-after-final", "status": "ok"}
    assert client.chat["retry-after-final"] == before
    assert len(client.terminal("retry-after-final")) == 1


@pytest.mark.asyncio
async def test_a_retry_on_another_connection_gets_its_own_single_terminal_event(
    tmp_path: Path,
) -> None:
    provider = GatedEchoProvider(ahead=1)
    with running_gateway(tmp_path, provider=provider) as url:
        async with connected(url) as (first, _), connected(url) as (second, _):
            await first.send_message(SESSION, "twice", "reconnect-1")
            while not first.chat.get("reconnect-1"):
                await first.pump()
            [retry_ack] = await second.response(
                await second.send_message(SESSION, "twice", "reconnect-1")
            )
            provider.open()
            await first.until_terminal(["reconnect-1"])
            await second.until_terminal(["reconnect-1"])
            await barrier(first)
            await barrier(second)
    assert retry_ack["payload"] == {"runId": "reconnect-1", "status": "in_flight"}
    for client in (first, second):
        [final] = client.terminal("reconnect-1")
        assert final["state"] == "final"
        assert final["message"]["content"][0]["text"] == "echo: twice"
