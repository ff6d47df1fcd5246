"""The directory methods over WebSocket, as OpenClaw's interactive clients call them: session
subscriptions with change events, a session's description, the agents, and the features
turngate does not have answered with the empty results the clients expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.gateway.test_ws_protocol import Client, session
from tests.support import running_gateway
from turngate.config import GatewayConfig

KEY = "agent:main:dir"


async def call(client: Client, method: str, **params: Any) -> dict[str, Any]:
    [answer] = await client.response(await client.request(method, **params))
    assert answer["ok"], answer
    payload: dict[str, Any] = answer["payload"]
    return payload


def changes(client: Client, session_key: str) -> list[tuple[str, str | None]]:
    return [
        (e["payload"]["reason"], e["payload"].get("state"))
        for e in client.events
        if e.get("event") == "sessions.changed" and e["payload"]["sessionKey"] == session_key
    ]


@pytest.mark.asyncio
async def test_a_subscribed_client_hears_each_turn_queued_started_and_ended(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=20) as url:
        async with session(url) as watcher, session(url) as sender:
            assert await call(watcher, "sessions.subscribe") == {"subscribed": True}
            await sender.send_message(KEY, "hello", "d-1")
            await sender.until_terminal(["d-1"])
            while ("agent.run.ended", "replied") not in changes(watcher, KEY):
                await watcher.pump()
            assert changes(watcher, KEY) == [
                ("send", None),
                ("agent.run.started", None),
                ("agent.run.ended", "replied"),
            ]
            # Unsubscribed, it hears nothing more (its next frame is its own answer).
            assert await call(watcher, "sessions.unsubscribe") == {"subscribed": False}
            await sender.send_message(KEY, "again", "d-2")
            await sender.until_terminal(["d-2"])
            health = await call(watcher, "health")
            assert health["status"] == "live"
            assert len(changes(watcher, KEY)) == 3


@pytest.mark.asyncio
async def test_subscribing_with_list_parameters_returns_the_first_page_too(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as client:
            await client.send_message(KEY, "hello", "l-1")
            await client.until_terminal(["l-1"])
            answer = await call(client, "sessions.subscribe", limit=10000, ownerFirst=True)
            assert answer["subscribed"] is True
            [row] = answer["list"]["sessions"]
            assert (row["key"], row["agentId"], row["turns"], row["hasActiveRun"]) == (
                KEY,
                "main",
                1,
                False,
            )


@pytest.mark.asyncio
async def test_a_session_is_described_from_the_store_and_an_unknown_one_is_null(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as client:
            await client.send_message(KEY, "hello", "s-1")
            await client.until_terminal(["s-1"])
            described = await call(client, "sessions.describe", key=KEY)
            assert described["session"]["key"] == KEY
            assert described["session"]["turns"] == 1
            assert described["session"]["updatedAt"] >= described["session"]["createdAt"]
            assert await call(client, "sessions.describe", key="agent:main:nobody") == {
                "session": None
            }
            [bad] = await client.response(
                await client.request("sessions.describe", key="not a key")
            )
            assert bad["ok"] is False
            assert bad["error"]["details"]["code"] == "invalid_session_key"
            assert bad["error"]["message"].startswith("key ")


@pytest.mark.asyncio
async def test_the_agents_and_the_features_turngate_lacks_are_answered(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate({"agents": [{"id": "main"}, {"id": "ops"}]})
    with running_gateway(tmp_path, agents=config.agents) as url:
        async with session(url) as client:
            agents = await call(client, "agents.list")
            assert agents["defaultId"] == "main"
            assert [agent["id"] for agent in agents["agents"]] == ["main", "ops"]
            assert await call(client, "question.list") == {"questions": []}
            assert await call(client, "commands.list", agentId="main") == {"commands": []}
            for method in ("plugin.approval.list", "exec.approval.list", "openclaw.approval.list"):
                [answer] = await client.response(await client.request(method))
                assert answer["payload"] == [], method


@pytest.mark.asyncio
async def test_lists_and_chat_start_carry_the_model_defaults_the_control_ui_reads(
    tmp_path: Path,
) -> None:
    config = GatewayConfig.model_validate(
        {"agents": [{"id": "main"}, {"id": "ops", "model": "echo/fast"}]}
    )
    with running_gateway(tmp_path, agents=config.agents, echo_latency_ms=0) as url:
        async with session(url) as client:
            for key, run in (("agent:main:main", "m-1"), ("agent:ops:main", "o-1")):
                await client.send_message(key, "hello", run)
                await client.until_terminal([run])
            listed = await call(client, "sessions.list", limit=1)
            assert (listed["count"], listed["hasMore"]) == (1, True)
            assert listed["defaults"] == {
                "modelProvider": "echo",
                "model": "echo",
                "contextTokens": None,
                "modelSelectionTarget": "session",
            }
            ops = await call(client, "sessions.list", agentId="ops")
            assert [row["key"] for row in ops["sessions"]] == ["agent:ops:main"]
            assert ops["defaults"]["model"] == "fast"
            # turngate's sessions spawn no child sessions.
            assert (await call(client, "sessions.list", spawnedBy="agent:main:main"))[
                "sessions"
            ] == []
            agents = await call(client, "agents.list")
            assert [a["model"]["primary"] for a in agents["agents"]] == ["echo/echo", "echo/fast"]
            start = await call(client, "chat.startup", sessionKey="agent:ops:main", limit=80)
            assert [m["role"] for m in start["messages"]] == ["user", "assistant"]
            assert start["defaults"]["model"] == "fast"
            main = await call(client, "sessions.describe", key="main")
            assert main["session"]["key"] == "agent:main:main"


@pytest.mark.asyncio
async def test_a_filtered_list_pages_through_the_sessions_that_pass_the_filter(
    tmp_path: Path,
) -> None:
    config = GatewayConfig.model_validate({"agents": [{"id": "main"}, {"id": "ops"}]})
    with running_gateway(tmp_path, agents=config.agents, echo_latency_ms=0) as url:
        async with session(url) as client:
            # Interleaved, so that a page of all sessions holds both agents'.
            for i in range(3):
                for agent in ("ops", "main"):
                    run = f"{agent}-{i}"
                    await client.send_message(f"agent:{agent}:s{i}", "hi", run)
                    await client.until_terminal([run])
            first = await call(client, "sessions.list", agentId="ops", limit=2)
            rest = await call(client, "sessions.list", agentId="ops", limit=2, offset=2)
    assert [row["key"] for row in first["sessions"]] == ["agent:ops:s2", "agent:ops:s1"]
    assert first["hasMore"] is True
    assert [row["key"] for row in rest["sessions"]] == ["agent:ops:s0"]
    assert rest["hasMore"] is False


@pytest.mark.asyncio
async def test_a_subscription_with_bad_list_parameters_is_refused_and_subscribes_nothing(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as watcher, session(url) as sender:
            [bad] = await watcher.response(await watcher.request("sessions.subscribe", limit=0))
            assert bad["ok"] is False
            await sender.send_message(KEY, "hello", "b-1")
            await sender.until_terminal(["b-1"])
            await call(watcher, "health")
            assert changes(watcher, KEY) == []
