"""Session subscriptions over WebSocket, as OpenClaw's TUI and Control UI make them: each
message a run writes reaches a watching client once, keyed as ``chat.history`` keys it;
``sessions.changed`` says when a run starts and ends; a subscription ends with its
connection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.test_ws_directory import call
from tests.gateway.test_ws_protocol import Client, session
from tests.support import running_gateway
from turngate.gateway.ws_session_events import SessionEvents
from turngate.runtime.events import EventBus

SUBSCRIPTION_GONE_S = 10.0
"""How long a closed connection's subscription may take to end (it is at once)."""
KEY = "agent:main:watched"
OTHER = "agent:main:elsewhere"


def messages(client: Client, session_key: str | None = None) -> list[dict[str, Any]]:
    return [
        e["payload"]
        for e in client.events
        if e.get("event") == "session.message" and session_key in (None, e["payload"]["sessionKey"])
    ]


async def until_messages(client: Client, session_key: str, count: int) -> list[dict[str, Any]]:
    """Read frames until ``count`` messages of the session arrived (each read is bounded)."""
    while len(messages(client, session_key)) < count:
        await client.pump()
    return messages(client, session_key)


@pytest.mark.asyncio
async def test_a_watcher_gets_each_message_of_the_session_once_keyed_as_the_history_keys_it(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=10) as url:
        async with session(url) as watcher, session(url) as sender:
            answer = await call(watcher, "sessions.messages.subscribe", key=KEY)
            assert answer == {"subscribed": True, "key": KEY}
            for run in ("w-1", "w-2"):
                await sender.send_message(KEY, f"hello {run}", run)
                await sender.until_terminal([run])
            got = await until_messages(watcher, KEY, 4)
            history = await call(watcher, "chat.history", sessionKey=KEY)
            # A few more frames could only be duplicates: none comes before the answer.
            assert len(messages(watcher, KEY)) == 4
    assert [(m["message"]["role"], m["message"]["content"][0]["text"]) for m in got] == [
        ("user", "hello w-1"),
        ("assistant", "echo: hello w-1"),
        ("user", "hello w-2"),
        ("assistant", "echo: hello w-2"),
    ]
    assert [m["message"]["__openclaw"] for m in got] == [
        m["__openclaw"] for m in history["messages"]
    ]
    assert [m["messageSeq"] for m in got] == [m["message"]["__openclaw"]["seq"] for m in got]
    assert [m["message"]["__openclaw"]["idempotencyKey"] for m in got[::2]] == ["w-1", "w-2"]
    # The run is named on the envelope of its reply, the message that settles it.
    assert [m.get("runId") for m in got] == [None, "w-1", None, "w-2"]
    assert {m["agentId"] for m in got} == {"main"}


@pytest.mark.asyncio
async def test_a_session_watcher_hears_only_its_session_and_every_session_watcher_all(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as one, session(url) as every, session(url) as sender:
            await call(one, "sessions.messages.subscribe", key=KEY)
            assert await call(every, "sessions.subscribe") == {"subscribed": True}
            for key, run in ((OTHER, "e-1"), (KEY, "e-2")):
                await sender.send_message(key, "hi", run)
                await sender.until_terminal([run])
            await until_messages(one, KEY, 2)
            await until_messages(every, KEY, 2)
            assert len(messages(every, OTHER)) == 2
            # The last message each got was KEY's reply: nothing of OTHER came to ``one``.
            assert messages(one, OTHER) == []
            await call(one, "sessions.messages.unsubscribe", key=KEY)
            await sender.send_message(KEY, "again", "e-3")
            await sender.until_terminal(["e-3"])
            await until_messages(every, KEY, 4)
            await call(one, "health")
            assert len(messages(one, KEY)) == 2


@pytest.mark.asyncio
async def test_sessions_changed_says_when_a_run_starts_and_ends(tmp_path: Path) -> None:
    with running_gateway(tmp_path, echo_latency_ms=0) as url:
        async with session(url) as watcher, session(url) as sender:
            await call(watcher, "sessions.subscribe")
            await sender.send_message(KEY, "hello", "c-1")
            await sender.until_terminal(["c-1"])
            while not [
                e for e in watcher.events if e["payload"].get("reason") == "agent.run.ended"
            ]:
                await watcher.pump()
    changes = [e["payload"] for e in watcher.events if e["event"] == "sessions.changed"]
    started = next(c for c in changes if c["reason"] == "agent.run.started")
    ended = next(c for c in changes if c["reason"] == "agent.run.ended")
    assert (started["phase"], started["hasActiveRun"], started["activeRunIds"]) == (
        "start",
        True,
        ["c-1"],
    )
    assert (ended["phase"], ended["hasActiveRun"], ended["activeRunIds"]) == ("end", False, [])
    assert {c["agentId"] for c in changes} == {"main"}


@pytest.mark.asyncio
async def test_the_main_alias_names_the_default_agents_main_session(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url:
        async with session(url) as client:
            answer = await call(client, "sessions.messages.subscribe", key="main")
            assert answer == {"subscribed": True, "key": "agent:main:main"}
            [bad] = await client.response(
                await client.request("sessions.messages.subscribe", key="no key")
            )
            assert bad["error"]["details"]["code"] == "invalid_session_key"


@pytest.mark.asyncio
async def test_a_subscription_ends_with_its_connection(tmp_path: Path) -> None:
    events = EventBus()

    def watching() -> int:
        return sum(
            isinstance(getattr(s, "__self__", None), SessionEvents) for s in events._subscribers
        )

    with running_gateway(tmp_path, events=events) as url:
        async with session(url) as client:
            await call(client, "sessions.subscribe")
            await call(client, "sessions.messages.subscribe", key=KEY)
            assert watching() == 1  # one per connection, whatever it watches
        async with session(url) as other:
            # The server sees the close at once; one round trip per look, no sleep.
            deadline = time.monotonic() + SUBSCRIPTION_GONE_S
            while watching() and time.monotonic() < deadline:
                await call(other, "health")
            assert watching() == 0
