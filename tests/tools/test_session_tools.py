"""The session tools: ``sessions_send`` queues a message in another session of the same agent
and never waits for it; ``sessions_history`` reads a session's transcript, bounded. Every
refusal is an error result the model can act on. Against a fake desk, then on the real engine
(virtual time)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fake_models import Call, ScriptedModel
from tests.harness import EngineHarness
from turngate.core.keys import parse_session_key
from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.core.turn import TurnState
from turngate.errors import (
    ErrorCode,
    StorageUnavailableError,
    TurngateError,
    UnavailableError,
)
from turngate.gateway.session_desk import EngineDesk
from turngate.providers.base import ProviderEvent, ProviderRequest, ToolCallDelta
from turngate.runtime.engine import Engine, SubmitRequest
from turngate.runtime.events import Event, EventKind
from turngate.tools.base import Toolbox, ToolContext, ToolResult
from turngate.tools.sessions import (
    ENTRY_CHARS_MAX,
    HISTORY_CHARS_MAX,
    HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX,
    MESSAGE_CHARS_MAX,
    SESSIONS_HISTORY,
    SESSIONS_SEND,
    TOOL_NAMES,
    SessionTools,
)

CALLER = ToolContext("agent:main:a", "run-1", 1)
"""The run whose model calls the tools: session a of agent main."""
BOTH = TOOL_NAMES


@dataclass
class FakeDesk:
    """Records what is sent; reads transcripts from ``transcripts``; raises ``fails`` when set."""

    transcripts: dict[str, list[TranscriptItem]] = field(default_factory=dict)
    sent: list[tuple[str, str]] = field(default_factory=list)
    read: list[tuple[str, int]] = field(default_factory=list)
    fails: TurngateError | None = None

    async def send(self, session_key: str, message: str) -> str:
        if self.fails is not None:
            raise self.fails
        self.sent.append((session_key, message))
        return f"turn-{len(self.sent)}"

    async def history(self, session_key: str, limit: int) -> list[TranscriptItem]:
        if self.fails is not None:
            raise self.fails
        self.read.append((session_key, limit))
        return self.transcripts.get(session_key, [])[-limit:]


def tools_with(desk: FakeDesk | None, enabled: tuple[str, ...] = BOTH) -> SessionTools:
    return SessionTools("main", enabled, desk)


async def send(tools: SessionTools, **arguments: Any) -> ToolResult:
    return await tools.call(SESSIONS_SEND, arguments, CALLER)


async def history(tools: SessionTools, **arguments: Any) -> ToolResult:
    return await tools.call(SESSIONS_HISTORY, arguments, CALLER)


# -- what is offered ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "enabled",
    [(), (SESSIONS_SEND,), (SESSIONS_HISTORY,), (SESSIONS_HISTORY, SESSIONS_SEND)],
)
def test_only_the_enabled_tools_are_offered_and_owned(enabled: tuple[str, ...]) -> None:
    tools = tools_with(FakeDesk(), enabled)
    offered = [spec.name for spec in tools.specs()]
    assert offered == [name for name in TOOL_NAMES if name in enabled]
    assert [name for name in TOOL_NAMES if tools.owns(name)] == offered
    assert not tools.owns("sessions_list")


def test_each_tool_describes_its_arguments_with_their_bounds() -> None:
    specs = {spec.name: spec for spec in tools_with(FakeDesk()).specs()}
    sending = specs[SESSIONS_SEND].input_schema
    assert sending["required"] == ["session", "message"]
    assert sending["properties"]["message"]["maxLength"] == MESSAGE_CHARS_MAX
    limit = specs[SESSIONS_HISTORY].input_schema["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 50, 20)
    assert "does not wait" in specs[SESSIONS_SEND].description


def test_enabling_a_tool_that_does_not_exist_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown session tools sessions_list"):
        SessionTools("main", ["sessions_send", "sessions_list"])


def test_the_calls_are_bounded_by_ten_seconds_unless_told_otherwise() -> None:
    assert tools_with(None).call_timeout_s == 10.0
    assert SessionTools("main", BOTH, call_timeout_s=3.0).call_timeout_s == 3.0


@pytest.mark.asyncio
async def test_a_tool_that_is_not_enabled_is_refused_if_called_anyway() -> None:
    desk = FakeDesk()
    result = await send(tools_with(desk, (SESSIONS_HISTORY,)), session="agent:main:b", message="x")
    assert result == ToolResult("sessions_send: not offered to this agent", is_error=True)
    assert desk.sent == []


# -- sessions_send -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_queues_the_message_and_answers_with_the_turn_id() -> None:
    desk = FakeDesk()
    result = await send(tools_with(desk), session="agent:main:b", message="please check the logs")
    assert desk.sent == [("agent:main:b", "please check the logs")]
    assert result == ToolResult(
        "queued as turn turn-1 in session agent:main:b. It runs after any turns ahead of it"
        " there, and its reply stays in that session; read its reply later with"
        " sessions_history.",
        is_error=False,
    )


@pytest.mark.asyncio
async def test_without_sessions_history_the_send_result_does_not_point_to_it() -> None:
    result = await send(
        tools_with(FakeDesk(), (SESSIONS_SEND,)), session="agent:main:b", message="x"
    )
    assert not result.is_error
    assert "sessions_history" not in result.content


@pytest.mark.parametrize(
    ("session", "why"),
    [
        ("main", "must look like agent:<agentId>:<rest>"),
        ("agent:main", "must look like agent:<agentId>:<rest>"),
        ("agent:Main:b", "agent id 'Main' must be"),
        ("agent:main:a b", "segment 'a b' must be"),
        ("", "must not be empty"),
        (42, "expected a string, got int"),
        (None, "expected a string, got NoneType"),
    ],
)
@pytest.mark.asyncio
async def test_an_invalid_session_key_is_refused_saying_why(session: object, why: str) -> None:
    desk = FakeDesk()
    tools = tools_with(desk)
    for result in (
        await send(tools, session=session, message="hi"),
        await history(tools, session=session),
    ):
        assert result.is_error
        assert ": invalid session key: session" in result.content
        assert why in result.content
        assert result.content.endswith("Sessions of this agent look like agent:main:<name>")
    assert (desk.sent, desk.read) == ([], [])


@pytest.mark.asyncio
async def test_a_session_of_another_agent_is_refused() -> None:
    desk = FakeDesk()
    tools = tools_with(desk)
    for tool, arguments in ((SESSIONS_SEND, {"message": "hi"}), (SESSIONS_HISTORY, {})):
        result = await tools.call(tool, {"session": "agent:ops:b", **arguments}, CALLER)
        assert result == ToolResult(
            f"{tool}: session agent:ops:b refused: these tools reach only sessions of agent"
            " main, not of agent ops",
            is_error=True,
        )
    assert desk.sent == []


@pytest.mark.asyncio
async def test_sending_to_the_calling_session_itself_is_refused() -> None:
    desk = FakeDesk()
    result = await send(tools_with(desk), session=CALLER.session_key, message="note to self")
    assert result.is_error
    assert result.content == (
        "sessions_send: session agent:main:a is the session of this very run: a message sent"
        " there would queue behind the run that is sending it; say it in your reply instead"
    )
    assert desk.sent == []


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("", "sessions_send: message: must not be empty"),
        ("  \n ", "sessions_send: message: must not be empty"),
        (7, "sessions_send: message: must be a string"),
        (None, "sessions_send: message: must be a string"),
        (
            "x" * (MESSAGE_CHARS_MAX + 1),
            f"sessions_send: message: {MESSAGE_CHARS_MAX + 1} characters, over the limit of"
            f" {MESSAGE_CHARS_MAX}; send a shorter one",
        ),
        (
            "broken \ud800 text",
            "sessions_send: message: is not valid Unicode text (it contains an unpaired surrogate)",
        ),
    ],
)
@pytest.mark.asyncio
async def test_an_empty_or_oversized_message_is_refused_naming_the_bound(
    message: object, content: str
) -> None:
    desk = FakeDesk()
    result = await send(tools_with(desk), session="agent:main:b", message=message)
    assert result == ToolResult(content, is_error=True)
    assert desk.sent == []


@pytest.mark.asyncio
async def test_a_message_of_exactly_the_bound_is_sent() -> None:
    desk = FakeDesk()
    message = "x" * MESSAGE_CHARS_MAX
    result = await send(tools_with(desk), session="agent:main:b", message=message)
    assert not result.is_error
    assert desk.sent == [("agent:main:b", message)]


@pytest.mark.asyncio
async def test_a_misspelt_or_missing_argument_is_refused_naming_what_the_tool_takes() -> None:
    tools = tools_with(FakeDesk())
    assert await tools.call(SESSIONS_SEND, {"session": "agent:main:b", "text": "hi"}, CALLER) == (
        ToolResult("sessions_send: unknown argument 'text'; it takes session, message", True)
    )
    missing = await tools.call(SESSIONS_SEND, {"session": "agent:main:b"}, CALLER)
    assert missing == ToolResult("sessions_send: message: must be a string", is_error=True)


# -- the desk ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_before_the_desk_is_attached_the_tools_say_they_are_not_available_yet() -> None:
    tools = tools_with(None)
    assert [spec.name for spec in tools.specs()] == list(TOOL_NAMES)
    waiting = "not available yet: the gateway is still starting; try again shortly"
    assert await send(tools, session="agent:main:b", message="hi") == ToolResult(
        f"sessions_send: {waiting}", is_error=True
    )
    assert await history(tools, session="agent:main:b") == ToolResult(
        f"sessions_history: {waiting}", is_error=True
    )
    desk = FakeDesk()
    tools.attach(desk)
    assert not (await send(tools, session="agent:main:b", message="hi")).is_error
    assert desk.sent == [("agent:main:b", "hi")]


@pytest.mark.parametrize(
    "error",
    [
        TurngateError("session agent:main:b: queue full (100 turns)", code=ErrorCode.QUEUE_FULL),
        StorageUnavailableError("the disk is full: nothing was written"),
        UnavailableError("the gateway is not accepting turns (starting or stopping)"),
    ],
)
@pytest.mark.asyncio
async def test_an_error_of_the_desk_is_an_error_result_with_its_message(
    error: TurngateError,
) -> None:
    tools = tools_with(FakeDesk(fails=error))
    assert await send(tools, session="agent:main:b", message="hi") == ToolResult(
        f"sessions_send: {error.message}", is_error=True
    )
    assert await history(tools, session="agent:main:b") == ToolResult(
        f"sessions_history: {error.message}", is_error=True
    )


# -- sessions_history --------------------------------------------------------------------


EXCHANGE = [
    TranscriptItem.user("weather in Lisbon?", turn_id="t1"),
    TranscriptItem.assistant("Let me look."),
    TranscriptItem.calls(
        [ToolCall("c1", "weather", '{"q": "Lisbon"}'), ToolCall("c2", "clock", "")]
    ),
    TranscriptItem.tool_result("c1", "weather", "sunny, 24 C"),
    TranscriptItem.tool_result("c2", "clock", "no such city", is_error=True),
    TranscriptItem.assistant("Sunny in Lisbon."),
]


@pytest.mark.asyncio
async def test_history_renders_each_kind_of_entry_as_a_line_oldest_first() -> None:
    desk = FakeDesk({"agent:main:b": EXCHANGE})
    result = await history(tools_with(desk), session="agent:main:b")
    assert desk.read == [("agent:main:b", HISTORY_LIMIT_DEFAULT)]
    assert result == ToolResult(
        "session agent:main:b: the last 6 entries, oldest first\n"
        "user: weather in Lisbon?\n"
        "assistant: Let me look.\n"
        'tool call weather({"q": "Lisbon"})\n'
        "tool call clock()\n"
        "tool result weather: sunny, 24 C\n"
        "tool result clock [error]: no such city\n"
        "assistant: Sunny in Lisbon.",
        is_error=False,
    )


@pytest.mark.asyncio
async def test_history_reads_the_last_limit_entries() -> None:
    desk = FakeDesk({"agent:main:b": EXCHANGE})
    result = await history(tools_with(desk), session="agent:main:b", limit=2)
    assert desk.read == [("agent:main:b", 2)]
    assert result.content.splitlines() == [
        "session agent:main:b: the last 2 entries, oldest first",
        "tool result clock [error]: no such city",
        "assistant: Sunny in Lisbon.",
    ]


@pytest.mark.parametrize(
    ("limit", "content"),
    [
        (0, f"limit: 0 is out of range; it must be from 1 to {HISTORY_LIMIT_MAX}"),
        (51, f"limit: 51 is out of range; it must be from 1 to {HISTORY_LIMIT_MAX}"),
        ("20", f"limit: must be an integer from 1 to {HISTORY_LIMIT_MAX}"),
        (2.5, f"limit: must be an integer from 1 to {HISTORY_LIMIT_MAX}"),
        (True, f"limit: must be an integer from 1 to {HISTORY_LIMIT_MAX}"),
    ],
)
@pytest.mark.asyncio
async def test_a_limit_out_of_range_is_refused_naming_the_range(
    limit: object, content: str
) -> None:
    desk = FakeDesk()
    result = await history(tools_with(desk), session="agent:main:b", limit=limit)
    assert result == ToolResult(f"sessions_history: {content}", is_error=True)
    assert desk.read == []


@pytest.mark.asyncio
async def test_reading_the_calling_sessions_own_history_is_allowed() -> None:
    desk = FakeDesk({CALLER.session_key: [TranscriptItem.user("hello")]})
    result = await history(tools_with(desk), session=CALLER.session_key, limit=HISTORY_LIMIT_MAX)
    assert result == ToolResult(
        "session agent:main:a: the last 1 entries, oldest first\nuser: hello", is_error=False
    )


@pytest.mark.asyncio
async def test_a_session_without_entries_says_so() -> None:
    result = await history(tools_with(FakeDesk()), session="agent:main:new")
    assert result == ToolResult("session agent:main:new has no transcript entries", False)


@pytest.mark.asyncio
async def test_a_long_entry_is_cut_saying_how_much() -> None:
    long = TranscriptItem.tool_result("c1", "dump", "y" * 10_000)
    desk = FakeDesk({"agent:main:b": [long, TranscriptItem.assistant("done")]})
    lines = (await history(tools_with(desk), session="agent:main:b")).content.splitlines()
    prefix = "tool result dump: "
    assert lines[1] == (
        prefix
        + "y" * (ENTRY_CHARS_MAX - len(prefix))
        + f" [{10_000 + len(prefix) - ENTRY_CHARS_MAX} more characters cut]"
    )
    assert lines[2] == "assistant: done"


@pytest.mark.asyncio
async def test_history_is_bounded_keeping_the_newest_entries_and_saying_how_many_left_out() -> None:
    entries = [TranscriptItem.user(f"{n:02d} " + "z" * 2_000) for n in range(HISTORY_LIMIT_MAX)]
    desk = FakeDesk({"agent:main:b": entries})
    result = await history(tools_with(desk), session="agent:main:b", limit=HISTORY_LIMIT_MAX)
    assert not result.is_error
    assert len(result.content) <= HISTORY_CHARS_MAX
    lines = result.content.splitlines()
    kept = lines[2:]
    assert lines[0] == f"session agent:main:b: the last {len(kept)} entries, oldest first"
    assert lines[1] == (
        f"[{HISTORY_LIMIT_MAX - len(kept)} earlier entries left out: the history is bounded at"
        f" {HISTORY_CHARS_MAX} characters]"
    )
    assert 0 < len(kept) < HISTORY_LIMIT_MAX
    assert [line[6:8] for line in kept] == [
        f"{n:02d}" for n in range(HISTORY_LIMIT_MAX - len(kept), HISTORY_LIMIT_MAX)
    ]


# -- on the real engine ------------------------------------------------------------------


class BySession:
    """A provider that hands each session's calls to that session's own scripted model."""

    name = "by-session"

    def __init__(self, models: dict[str, ScriptedModel]) -> None:
        self.models = models

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        async for event in self.models[request.session_key].stream(request):
            yield event


def test_a_run_sends_to_another_session_without_waiting_and_then_reads_its_reply(
    tmp_path: Path,
) -> None:
    arguments = json.dumps({"session": "agent:main:b", "message": "hello from a"})
    in_a = ScriptedModel(
        [Call(reply="", tool_calls=(ToolCallDelta(0, "c1", SESSIONS_SEND, arguments),))],
        then=Call(reply="sent", latency_s=1.0),
    )
    in_b = ScriptedModel(then=Call(latency_s=5.0))  # echoes, after 5 s
    tools = SessionTools("main", BOTH)
    harness = EngineHarness(
        tmp_path,
        BySession({"agent:main:a": in_a, "agent:main:b": in_b}),
        toolbox=Toolbox([tools]),
        max_steps=4,
    )

    async def scenario(engine: Engine) -> None:
        tools.attach(EngineDesk(engine))
        b_ended = asyncio.Event()

        def on_event(event: Event) -> None:
            if event.kind is EventKind.ENDED and event.session_key == "agent:main:b":
                b_ended.set()

        engine.events.subscribe(on_event)
        ticket = await engine.submit(SubmitRequest(parse_session_key("agent:main:a"), "tell b"))
        outcome = await ticket.outcome
        # a's run went on at once: its second step began at 0 s, not after b's 5 s turn.
        assert (outcome.state, outcome.reply) == (TurnState.REPLIED, "sent")
        assert engine.clock.now() == 1.0
        assert not b_ended.is_set()
        (sent,) = await engine.store.session_turns("agent:main:b", 10)
        assert (sent.message, sent.queue_mode, sent.lane) == (
            "hello from a",
            "followup",
            "sessions_send",
        )

        await b_ended.wait()
        assert engine.clock.now() == 5.0
        read = await tools.call(
            SESSIONS_HISTORY, {"session": "agent:main:b"}, ToolContext("agent:main:a", "r", 1)
        )
        assert read == ToolResult(
            "session agent:main:b: the last 2 entries, oldest first\n"
            "user: hello from a\n"
            "assistant: echo: hello from a",
            is_error=False,
        )
        assert f"queued as turn {sent.turn_id} in session agent:main:b" in (
            in_a.requests[1].messages[-1].content
        )

    harness.run(scenario)
    assert [m.role for m in in_a.requests[1].messages] == ["user", "assistant", "tool"]
    assert [request.session_key for request in in_b.requests] == ["agent:main:b"]
