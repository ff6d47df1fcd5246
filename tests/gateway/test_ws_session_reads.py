"""How a connection's session subscription turns what runs write into ``session.message``
events, against a store and an event bus of the test's own: each entry once, and a run's
reply named as its last only when the run has ended, whatever order the reads and the run's
end come in."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.gateway.ws_session_events import SessionEvents
from turngate.runtime.events import Event, EventBus, EventKind
from turngate.store.base import TranscriptEntry
from turngate.types import Epoch, MonotonicS, RunId

KEY = "agent:main:read"
RUN = RunId("run-1")


class FakePeer:
    """A connection that records its events and runs what it is given to run."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.conn_id = "conn-test"

    def send(self, frame: dict[str, Any]) -> None:
        raise AssertionError(f"no response expected: {frame}")

    def event(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    async def settled(self) -> None:
        while self.tasks:
            await self.tasks.pop()

    def roles(self) -> list[str]:
        return [p["message"]["role"] for name, p in self.events if name == "session.message"]

    def messages(self) -> list[tuple[str, str | None]]:
        return [
            (p["message"]["content"][0].get("text", ""), p.get("runId"))
            for name, p in self.events
            if name == "session.message"
        ]


class FakeStore:
    """The session's transcript so far."""

    def __init__(self) -> None:
        self.entries: list[TranscriptEntry] = []

    def write(self, item: TranscriptItem) -> None:
        seq = len(self.entries) + 1
        self.entries.append(TranscriptEntry(seq, KEY, item, RUN, Epoch(1), 1_800_000_000.0))

    async def transcript(self, session_key: str, limit: int) -> list[TranscriptEntry]:
        return self.entries[-limit:]


class FakeEngine:
    def __init__(self) -> None:
        self.events = EventBus()
        self.store = FakeStore()

    def emit(self, kind: EventKind) -> None:
        self.events.emit(Event(kind, MonotonicS(0.0), KEY, run_id=RUN, state="replied"))


async def watching() -> tuple[FakeEngine, FakePeer]:
    engine, peer = FakeEngine(), FakePeer()

    async def no_page(params: Any) -> dict[str, Any]:
        return {}

    events = SessionEvents(peer, engine, no_page)  # type: ignore[arg-type]
    events._sessions.add(KEY)
    events._listen()
    return engine, peer


@pytest.mark.asyncio
async def test_a_reply_read_before_its_run_ended_goes_out_with_the_end_naming_the_run() -> None:
    engine, peer = await watching()
    engine.store.write(TranscriptItem.user("hello", turn_id=RUN))
    engine.store.write(TranscriptItem.assistant("echo: hello"))
    # The run's last model step is told before its end; by then its reply is stored.
    engine.emit(EventKind.MODEL_ANSWERED)
    await peer.settled()
    assert peer.messages() == [("hello", None)]
    engine.emit(EventKind.ENDED)
    await peer.settled()
    assert peer.messages() == [("hello", None), ("echo: hello", "run-1")]


@pytest.mark.asyncio
async def test_a_run_that_ends_twice_for_two_turns_sends_each_entry_once() -> None:
    engine, peer = await watching()
    engine.store.write(TranscriptItem.user("one", turn_id="t-1"))
    engine.store.write(TranscriptItem.user("two", turn_id="t-2"))
    engine.store.write(TranscriptItem.assistant("echo: one two"))
    engine.emit(EventKind.ENDED)  # one outcome per turn of the run
    engine.emit(EventKind.ENDED)
    await peer.settled()
    assert peer.messages() == [("one", None), ("two", None), ("echo: one two", "run-1")]


@pytest.mark.asyncio
async def test_text_before_a_tool_call_goes_out_once_the_run_writes_after_it() -> None:
    engine, peer = await watching()
    engine.store.write(TranscriptItem.user("look it up", turn_id=RUN))
    engine.store.write(TranscriptItem.assistant("let me check"))
    engine.emit(EventKind.MODEL_ANSWERED)
    await peer.settled()
    assert peer.roles() == ["user"]
    engine.store.write(TranscriptItem.calls([ToolCall("c1", "lookup", "{}")]))
    engine.store.write(TranscriptItem.tool_result("c1", "lookup", "found it"))
    engine.emit(EventKind.TOOL_CALLED)
    await peer.settled()
    assert peer.roles() == ["user", "assistant", "assistant", "toolResult"]
    engine.store.write(TranscriptItem.assistant("it is there"))
    engine.emit(EventKind.ENDED)
    await peer.settled()
    assert peer.roles()[-1] == "assistant"
    assert peer.messages()[-1] == ("it is there", "run-1")
