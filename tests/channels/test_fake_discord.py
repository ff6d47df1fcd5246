"""The fake Discord (``fake_discord.py``) behaves as Discord does, driven by a raw WebSocket
client and ``httpx2``: what the Discord channel's tests rely on. Every wait is for a frame or
a condition, under a deadline; nothing sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.channels.fake_discord import (
    BOT_ID,
    BUCKET_HASH,
    TOKEN,
    Failure,
    FakeDiscord,
    Intent,
    fake_discord,
)

WAIT_S = 5.0
ALL = Intent.GUILDS | Intent.GUILD_MESSAGES | Intent.DIRECT_MESSAGES | Intent.MESSAGE_CONTENT
QUERY = "?v=10&encoding=json"


def identify(token: str = TOKEN, intents: int = ALL) -> str:
    properties = {"os": "linux", "browser": "turngate", "device": "turngate"}
    return json.dumps(
        {"op": 2, "d": {"token": token, "intents": intents, "properties": properties}}
    )


def resume(session_id: str, seq: int | None) -> str:
    return json.dumps({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": seq}})


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def closed_with(ws: ClientConnection) -> int | None:
    """The code of the close frame the server sent (None: the connection just ended)."""
    async with asyncio.timeout(WAIT_S):
        await ws.wait_closed()
    # The sans-I/O protocol's: ``ws.close_code`` itself came with websockets 13.1.
    code = ws.protocol.close_code
    return code if code != 1006 else None


@asynccontextmanager
async def ready(
    fake: FakeDiscord, url: str = "", intents: int = ALL
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """A client connection that got HELLO and READY: yields (ws, READY's frame)."""
    async with connect((url or fake.gateway_url) + QUERY, open_timeout=WAIT_S) as ws:
        assert (await recv(ws))["op"] == 10
        await ws.send(identify(intents=intents))
        yield ws, await recv(ws)


@pytest.mark.asyncio
async def test_identify_is_answered_with_hello_then_ready() -> None:
    async with fake_discord(heartbeat_interval_ms=50) as fake:
        async with connect(fake.gateway_url + QUERY, open_timeout=WAIT_S) as ws:
            hello = await recv(ws)
            await ws.send(identify())
            ready_frame = await recv(ws)
        conn = fake.connections[0]
        await fake.signal.wait_until(lambda: not conn.open, WAIT_S)
    assert hello == {"op": 10, "d": {"heartbeat_interval": 50}, "s": None, "t": None}
    assert (ready_frame["op"], ready_frame["s"], ready_frame["t"]) == (0, 1, "READY")
    data = ready_frame["d"]
    assert data["session_id"] == "sess-1"
    assert data["resume_gateway_url"] == fake.resume_url
    assert data["user"]["id"] == BOT_ID
    assert data["user"]["bot"] is True
    assert (conn.path, conn.query, conn.endpoint) == ("/gateway", "v=10&encoding=json", "/gateway")
    assert conn.identifies[0]["intents"] == ALL
    assert conn.client_close_code == 1000  # the client's `async with` closed normally


@pytest.mark.asyncio
async def test_heartbeats_are_acked_until_acks_are_switched_off() -> None:
    async with fake_discord() as fake, ready(fake) as (ws, _):
        await ws.send(json.dumps({"op": 1, "d": 1}))
        assert (await recv(ws))["op"] == 11
        fake.ack_heartbeats = False
        await ws.send(json.dumps({"op": 1, "d": 1}))
        conn = fake.connections[0]
        await fake.signal.wait_until(lambda: len(conn.heartbeats) == 2, WAIT_S)
        fake.request_heartbeat()
        # The frame after the unacked heartbeat is the fake's own request: no ack came between.
        assert await recv(ws) == {"op": 1, "d": None, "s": None, "t": None}
    assert [(h.connection, h.seq) for h in fake.heartbeats] == [(1, 1), (1, 1)]
    assert conn.heartbeats[0].at <= conn.heartbeats[1].at <= conn.heartbeat_requests[0]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([identify(token="not-the-token")], 4004, id="wrong-token"),
        pytest.param([identify(intents=Intent.GUILD_PRESENCES)], 4014, id="disallowed-intent"),
        pytest.param([identify(), identify()], 4005, id="identify-twice"),
        pytest.param(['{"op": 3, "d": {}}'], 4003, id="presence-before-identify"),
        pytest.param(["{not json"], 4002, id="not-json"),
        pytest.param(['{"op": 99, "d": null}'], 4001, id="unknown-op"),
    ],
)
@pytest.mark.asyncio
async def test_protocol_violations_close_with_discords_codes(frames: list[str], code: int) -> None:
    async with fake_discord() as fake:
        fake.disallowed_intents = Intent.GUILD_PRESENCES | Intent.GUILD_MEMBERS
        async with connect(fake.gateway_url, open_timeout=WAIT_S) as ws:
            await recv(ws)
            for frame in frames:
                await ws.send(frame)
            assert await closed_with(ws) == code
        conn = fake.connections[0]
        await fake.signal.wait_until(lambda: not conn.open, WAIT_S)
    assert (conn.server_close_code, conn.client_close_code) == (code, None)
    assert len(conn.frames) == len(frames)
    assert fake.errors == []


@pytest.mark.asyncio
async def test_resume_replays_what_the_client_missed_then_resumed() -> None:
    async with fake_discord() as fake:
        async with ready(fake) as (ws, _):
            fake.message("42", "7", "live")
            live = await recv(ws)
            await ws.close(4000)  # not 1000: the session stays resumable
        first = fake.connections[0]
        await fake.signal.wait_until(lambda: not first.open, WAIT_S)
        missed = [fake.message("42", "7", "one"), fake.message("42", "7", "two")]
        # As the channel dials it: a slash before the query.
        async with connect(fake.resume_url + "/" + QUERY, open_timeout=WAIT_S) as ws:
            await recv(ws)
            await ws.send(resume("sess-1", live["s"]))
            replayed = [await recv(ws) for _ in range(3)]
            fake.message("42", "7", "after")
            after = await recv(ws)
        second = fake.connections[1]
    assert (live["s"], live["t"], live["d"]["content"]) == (2, "MESSAGE_CREATE", "live")
    assert first.client_close_code == 4000
    assert [(f["s"], f["t"]) for f in replayed] == [
        (3, "MESSAGE_CREATE"),
        (4, "MESSAGE_CREATE"),
        (5, "RESUMED"),
    ]
    assert [f["d"]["id"] for f in replayed[:2]] == missed
    assert (after["s"], after["d"]["content"]) == (6, "after")
    assert (second.path, second.endpoint, second.resumes[0]["seq"]) == ("/resume/", "/resume", 2)
    assert len(fake.sessions) == 1


@pytest.mark.asyncio
async def test_a_session_the_client_closed_with_1000_cannot_be_resumed() -> None:
    async with fake_discord() as fake:
        async with ready(fake) as (ws, _):
            pass  # closes with 1000
        await fake.signal.wait_until(lambda: not fake.connections[0].open, WAIT_S)
        async with connect(fake.resume_url, open_timeout=WAIT_S) as ws:
            await recv(ws)
            await ws.send(resume("sess-1", 1))
            invalid = await recv(ws)
            # Left open, as Discord does: the client is the one to close.
            await ws.send(json.dumps({"op": 1, "d": 1}))
            ack = await recv(ws)
            await ws.send(resume("sess-unknown", 1))
            unknown = await recv(ws)
    assert invalid == {"op": 9, "d": False, "s": None, "t": None}
    assert ack["op"] == 11
    assert unknown["d"] is False


@pytest.mark.asyncio
async def test_messages_look_like_discords() -> None:
    async with fake_discord() as fake, ready(fake) as (ws, _):
        guild_id = fake.message("42", "7", "hi", guild_id="9", mention_bot=True, reply_to_bot=True)
        guild = (await recv(ws))["d"]
        dm_id = fake.message("43", "7", "psst", username="grace", author_bot=True)
        dm = (await recv(ws))["d"]
    assert guild["id"] == guild_id
    assert int(guild_id) < int(dm_id)
    assert (guild["channel_id"], guild["guild_id"], guild["type"]) == ("42", "9", 19)
    assert guild["content"] == f"<@{BOT_ID}> hi"
    assert [m["id"] for m in guild["mentions"]] == [BOT_ID]
    assert guild["referenced_message"]["author"]["id"] == BOT_ID
    assert guild["message_reference"]["message_id"] == guild["referenced_message"]["id"]
    assert guild["author"] == {
        "id": "7",
        "username": "ada",
        "discriminator": "0",
        "global_name": "Ada",
        "avatar": None,
    }
    assert "guild_id" not in dm
    assert dm["type"] == 0
    assert dm["mentions"] == []
    assert dm["author"]["bot"] is True
    assert dm["author"]["username"] == "grace"
    assert dm["timestamp"].startswith("2026-01-01T00:00:00")


@pytest.mark.asyncio
async def test_guild_text_is_blank_without_the_message_content_intent() -> None:
    async with fake_discord() as fake, ready(fake, intents=Intent.GUILD_MESSAGES) as (ws, _):
        fake.message("42", "7", "secret", guild_id="9")
        fake.message("43", "7", "a dm")  # no DIRECT_MESSAGES intent: never sent
        fake.message("42", "7", "to you", guild_id="9", mention_bot=True)
        blank, mentioned = (await recv(ws))["d"], (await recv(ws))["d"]
    assert blank["content"] == ""
    assert mentioned["content"] == f"<@{BOT_ID}> to you"
    assert [m["content"] for m in fake.withheld] == ["a dm"]


@pytest.mark.asyncio
async def test_server_controls_reach_the_client() -> None:
    async with fake_discord() as fake:
        async with ready(fake) as (ws, _):
            fake.reconnect()
            fake.request_heartbeat()
            fake.invalidate(True)
            frames = [await recv(ws) for _ in range(3)]
            fake.close(4009)
            assert await closed_with(ws) == 4009
        async with ready(fake) as (ws, _):
            fake.close(4009)  # ends the session it carries, as Discord's "session timed out"
            assert await closed_with(ws) == 4009
        async with ready(fake) as (ws, _):
            fake.drop()
            assert await closed_with(ws) is None  # no close frame: 1006
        await fake.signal.wait_until(lambda: fake.current is None, WAIT_S)
    assert [(f["op"], f["d"]) for f in frames] == [(7, None), (1, None), (9, True)]
    # Invalidated as resumable, then closed: still resumable. Timed out: not.
    assert [s.resumable for s in fake.sessions] == [True, False, True]
    dropped = fake.connections[2]
    assert dropped.dropped
    assert (dropped.server_close_code, dropped.client_close_code) == (
        None,
        None,
    )


@pytest.mark.asyncio
async def test_hello_waits_for_its_gate_and_an_early_identify_is_answered_after_it() -> None:
    async with fake_discord() as fake:
        gate = fake.hello_gate = asyncio.Event()
        async with connect(fake.gateway_url, open_timeout=WAIT_S) as ws:
            await ws.send(identify())  # the race: IDENTIFY before HELLO
            await fake.signal.wait_until(lambda: bool(fake.connections[0].identifies), WAIT_S)
            conn = fake.connections[0]
            assert conn.sent == []
            assert conn.hello_at is None
            gate.set()
            ops = [(await recv(ws))["op"], (await recv(ws))["t"]]
    assert ops == [10, "READY"]
    assert conn.hello_at is not None
    assert conn.frames[0].at < conn.hello_at


@pytest.mark.asyncio
async def test_rest_answers_like_discord() -> None:
    async with fake_discord() as fake, httpx2.AsyncClient(timeout=WAIT_S) as http:
        fake.missing_channels.add("404")
        fake.forbidden_channels.add("403")
        fake.send_failures.append(Failure(502))
        auth = {"Authorization": f"Bot {TOKEN}"}
        me = await http.get(f"{fake.api_url}/users/@me", headers=auth)
        stranger = await http.get(f"{fake.api_url}/users/@me", headers={"Authorization": "Bot x"})

        async def post(channel: str, body: dict[str, Any]) -> httpx2.Response:
            url = f"{fake.api_url}/channels/{channel}/messages"
            return await http.post(url, json=body, headers=auth)

        proxy = await post("42", {"content": "hello"})
        first = await post("42", {"content": "hello", "nonce": "n1", "enforce_nonce": True})
        again = await post("42", {"content": "hello", "nonce": "n1", "enforce_nonce": True})
        too_long = await post("42", {"content": "x" * 2001})
        missing = await post("404", {"content": "hello"})
        forbidden = await post("403", {"content": "hello"})
        typing = await http.post(f"{fake.api_url}/channels/42/typing", headers=auth)
    assert me.json()["id"] == BOT_ID
    assert (stranger.status_code, stranger.json()) == (
        401,
        {"message": "401: Unauthorized", "code": 0},
    )
    assert proxy.status_code == 502
    assert proxy.headers["content-type"].startswith("text/html")
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["author"]["id"] == BOT_ID
    assert first.headers["X-RateLimit-Bucket"] == BUCKET_HASH
    assert int(first.headers["X-RateLimit-Remaining"]) > int(again.headers["X-RateLimit-Remaining"])
    assert float(first.headers["X-RateLimit-Reset-After"]) > 0
    assert "X-RateLimit-Limit" in too_long.headers
    assert (too_long.status_code, too_long.json()["code"]) == (400, 50035)
    assert (missing.status_code, missing.json()["code"]) == (404, 10003)
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, 50013)
    assert typing.status_code == 204
    assert [t.channel_id for t in fake.typing] == ["42"]
    assert [(s.channel_id, s.content, s.nonce) for s in fake.sent] == [("42", "hello", "n1")]
    assert [a.status for a in fake.attempts] == [502, 200, 200, 400, 404, 403]


@pytest.mark.asyncio
async def test_a_scripted_rate_limit_answers_429_and_counts_early_retries() -> None:
    async with fake_discord() as fake, httpx2.AsyncClient(timeout=WAIT_S) as http:

        async def post(channel: str) -> httpx2.Response:
            url = f"{fake.api_url}/channels/{channel}/messages"
            auth = {"Authorization": f"Bot {TOKEN}"}
            return await http.post(url, json={"content": "hi"}, headers=auth)

        fake.rate_limit_next("42", 30.0)
        limited = await post("42")
        early = await post("42")
        other = await post("43")  # another bucket: not limited
        fake.rate_limit_next("44", 0.0)  # over at once: a retry is not early
        await post("44")
        on_time = await post("44")
        fake.rate_limit_next("45", 30.0, global_=True)
        global_ = await post("45")
        elsewhere = await post("46")
    assert limited.status_code == 429
    assert limited.json() == {
        "message": "You are being rate limited.",
        "retry_after": 30.0,
        "global": False,
    }
    assert limited.headers["Retry-After"] == "30"
    assert limited.headers["X-RateLimit-Scope"] == "user"
    assert "X-RateLimit-Global" not in limited.headers
    assert early.status_code == 429
    assert 0 < early.json()["retry_after"] <= 30.0
    assert other.status_code == 200
    assert on_time.status_code == 200
    assert global_.headers["X-RateLimit-Global"] == "true"
    assert global_.headers["X-RateLimit-Scope"] == "global"
    assert elsewhere.status_code == 429
    assert [(a.channel_id, a.status) for a in fake.early_requests] == [("42", 429), ("46", 429)]
    assert [(r.channel_id, r.global_) for r in fake.rate_limits] == [
        ("42", False),
        ("44", False),
        ("45", True),
    ]


@pytest.mark.asyncio
async def test_leaving_the_fake_closes_every_connection() -> None:
    async with fake_discord() as fake:
        ws = await connect(fake.gateway_url, open_timeout=WAIT_S)
        await recv(ws)
        await ws.send(identify())
        await recv(ws)
    try:
        assert await closed_with(ws) == 1001
    finally:
        await ws.close()
    conn = fake.connections[0]
    assert conn.server_close_code == 1001
    assert not conn.open


@pytest.mark.asyncio
async def test_a_refused_handshake_gets_the_front_proxys_page_and_no_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with fake_discord() as fake:
        fake.handshake_failures.append(502)
        with pytest.raises(InvalidStatus) as refused:
            await connect(fake.gateway_url, open_timeout=WAIT_S)
        async with connect(fake.gateway_url, open_timeout=WAIT_S) as ws:
            assert (await recv(ws))["op"] == 10
    assert refused.value.response.status_code == 502
    assert (fake.refused_handshakes, len(fake.connections)) == (1, 1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
