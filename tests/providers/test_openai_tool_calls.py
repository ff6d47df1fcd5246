"""Tool calling through an OpenAI-compatible model, against the fake server on loopback: the
tools a request offers, and the calls the model streams back as ``delta.tool_calls``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.providers.fakes import (
    COMPLETION_TOKENS,
    ESCAPED_ARGUMENTS,
    PROMPT_TOKENS,
    REPLY,
    REQUEST,
    SECRET_KEY,
    FakeModelServer,
    RawReply,
    chain_of,
    fake_provider,
    openai_chunk,
    openai_event,
    openai_usage_chunk,
    tool_answer,
)
from turngate.errors import ErrorCode, ProviderError
from turngate.providers.base import Finish, TextDelta, ToolCall, ToolCallDelta, Usage
from turngate.providers.openai_compat import OpenAICompatProvider

USAGE = Usage(PROMPT_TOKENS, COMPLETION_TOKENS)


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    """One chunk whose only choice has ``delta``."""
    return openai_event(
        openai_chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])
    )


def calls_chunk(*entries: dict[str, Any]) -> bytes:
    """One chunk carrying ``entries`` in ``delta.tool_calls``."""
    return chunk({"tool_calls": list(entries)})


def entry(
    index: int, call_id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict[str, Any]:
    """One ``delta.tool_calls`` entry, as OpenAI words it (id, type and name come first)."""
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    start = {"id": call_id, "type": "function"} if call_id else {}
    return {"index": index, **start, "function": function}


START = chunk({"role": "assistant", "content": None})
TOOL_CALLS = chunk({}, "tool_calls")
END = openai_event(openai_usage_chunk()) + b"data: [DONE]\n\n"


def reply(*chunks: bytes, finish: bytes = TOOL_CALLS) -> RawReply:
    """A stream: the opening, ``chunks``, ``finish``, usage and ``[DONE]``."""
    return RawReply(START + b"".join(chunks) + finish + END)


@asynccontextmanager
async def model(server: FakeModelServer) -> AsyncIterator[OpenAICompatProvider]:
    """The ``primary`` model straight (no chain), closed at the end of the block."""
    provider = OpenAICompatProvider(fake_provider(server), "primary", SECRET_KEY)
    try:
        yield provider
    finally:
        await provider.aclose()


async def bad_answer(server: FakeModelServer) -> ProviderError:
    """The error one call of ``primary`` raises."""
    async with model(server) as provider:
        with pytest.raises(ProviderError) as caught:
            await tool_answer(provider)
    return caught.value


# -- offering tools ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_offered_tools_are_sent_as_function_tools(server: FakeModelServer) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        await tool_answer(chain)
    [call] = server.calls()
    assert call.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city today.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "clock",
                "description": "The time now.",
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]
    assert "parallel_tool_calls" not in call.body  # the API's default
    assert "tool_choice" not in call.body


@pytest.mark.asyncio
async def test_a_request_without_tools_sends_no_tool_fields(server: FakeModelServer) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        await tool_answer(chain, REQUEST)
    [call] = server.calls()
    assert set(call.body) == {
        "model",
        "messages",
        "max_completion_tokens",
        "stream",
        "stream_options",
    }


# -- reading calls ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_call_alone_is_an_answer_that_finishes_with_tool_calls(
    server: FakeModelServer,
) -> None:
    server.script(
        "primary",
        [
            reply(
                calls_chunk(entry(0, "call_1", "weather", "")),  # arguments "" at first
                calls_chunk(entry(0, arguments='{"city"')),
                calls_chunk(entry(0, arguments=': "Lisbon"}')),
            )
        ],
    )
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        got = await tool_answer(chain)
    assert got.events == [
        ToolCallDelta(0, "call_1", "weather", ""),
        ToolCallDelta(0, arguments='{"city"'),
        ToolCallDelta(0, arguments=': "Lisbon"}'),
    ]
    assert got.calls == [ToolCall("call_1", "weather", '{"city": "Lisbon"}')]
    assert got.finish == Finish("tool_calls", USAGE, "fake/primary")
    assert [c.model for c in server.calls()] == ["primary"]


@pytest.mark.asyncio
async def test_a_call_sent_whole_in_one_chunk_arrives_whole(server: FakeModelServer) -> None:
    server.script("primary", [reply(calls_chunk(entry(0, "call_1", "clock", "{}")))])
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    assert got.events == [ToolCallDelta(0, "call_1", "clock", "{}")]
    assert got.finish == Finish("tool_calls", USAGE, "fake/primary")


@pytest.mark.asyncio
async def test_parallel_calls_interleaved_by_index_come_back_as_separate_calls(
    server: FakeModelServer,
) -> None:
    server.script(
        "primary",
        [
            reply(
                calls_chunk(entry(0, "call_a", "weather", '{"ci')),
                calls_chunk(entry(1, "call_b", "weather", "")),
                calls_chunk(entry(0, arguments='ty": "Lisbon"}'), entry(2, "call_c", "clock")),
                calls_chunk(entry(1, arguments='{"city": "Porto"}')),
                calls_chunk(entry(2, arguments="{}")),
            )
        ],
    )
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    assert [e.index for e in got.events if isinstance(e, ToolCallDelta)] == [0, 1, 0, 2, 1, 2]
    assert got.calls == [
        ToolCall("call_a", "weather", '{"city": "Lisbon"}'),
        ToolCall("call_b", "weather", '{"city": "Porto"}'),
        ToolCall("call_c", "clock", "{}"),
    ]


@pytest.mark.asyncio
async def test_arguments_split_inside_unicode_escapes_come_back_exactly_as_sent(
    server: FakeModelServer,
) -> None:
    # One character a chunk: cuts inside "\u00fc", between and inside the halves of
    # "\ud83d\ude00", and around raw multi-byte characters.
    pieces = [calls_chunk(entry(0, arguments=char)) for char in ESCAPED_ARGUMENTS]
    server.script("primary", [reply(calls_chunk(entry(0, "call_1", "weather")), *pieces)])
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    [call] = got.calls
    assert call.arguments == ESCAPED_ARGUMENTS
    assert call.arguments_object() == {"city": "Zürich", "mood": "😀", "raw": "Zürich 😀"}


@pytest.mark.asyncio
async def test_text_said_before_a_call_streams_first(server: FakeModelServer) -> None:
    server.script(
        "primary",
        [
            reply(
                chunk({"content": "Let me check."}),
                calls_chunk(entry(0, "call_1", "weather", '{"city": "Lisbon"}')),
            )
        ],
    )
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    assert got.events == [
        TextDelta("Let me check."),
        ToolCallDelta(0, "call_1", "weather", '{"city": "Lisbon"}'),
    ]
    assert got.finish.reason == "tool_calls"


@pytest.mark.asyncio
async def test_a_server_that_says_stop_after_its_calls_still_finishes_with_tool_calls(
    server: FakeModelServer,
) -> None:
    call = calls_chunk(entry(0, "call_1", "clock", "{}"))
    server.script("primary", [reply(call, finish=chunk({}, "stop"))])
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    assert got.finish == Finish("tool_calls", USAGE, "fake/primary")


@pytest.mark.asyncio
async def test_a_text_answer_still_finishes_with_stop(server: FakeModelServer) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await tool_answer(chain)
    assert got.text == "".join(REPLY)
    assert got.finish == Finish("stop", USAGE, "fake/primary")


# -- answers that are not a reply -------------------------------------------------------------


@pytest.mark.asyncio
async def test_finishing_with_tool_calls_without_any_call_is_a_bad_response(
    server: FakeModelServer,
) -> None:
    server.script("primary", [reply(chunk({"content": "I will call a tool."}))])
    error = await bad_answer(server)
    assert error.code is ErrorCode.BAD_RESPONSE
    assert error.message == (
        "fake/primary: the model finished with tool_calls but sent no tool call"
    )


@pytest.mark.asyncio
async def test_a_promised_call_that_never_came_is_retried_on_the_next_model(
    server: FakeModelServer,
) -> None:
    server.script("primary", [reply()])
    async with chain_of(fake_provider(server, max_retries=0), "primary", "backup") as chain:
        got = await tool_answer(chain)
    assert got.text == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary", "backup"]


@pytest.mark.asyncio
async def test_a_call_without_an_id_is_a_bad_response(server: FakeModelServer) -> None:
    server.script("primary", [reply(calls_chunk(entry(0, name="weather", arguments="{}")))])
    error = await bad_answer(server)
    assert (error.code, error.message) == ("bad_response", "fake/primary: tool call 0 has no id")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("delta", "why"),
    [
        pytest.param({"tool_calls": {"index": 0}}, "a delta whose tool_calls is not a list"),
        pytest.param(
            {"tool_calls": [{"id": "c1", "function": {"name": "clock"}}]},
            "a tool call without an index",
            id="no-index",
        ),
        pytest.param(
            {"tool_calls": [{"index": 0, "id": "c1", "function": "clock"}]},
            "a tool call whose function is not an object",
            id="function-a-string",
        ),
        pytest.param(
            {"tool_calls": [entry(0, "c1", "clock") | {"function": {"arguments": {}}}]},
            "a tool call whose arguments is not text",
            id="arguments-an-object",
        ),
    ],
)
async def test_a_tool_call_of_the_wrong_shape_is_a_bad_response(
    server: FakeModelServer, delta: dict[str, Any], why: str
) -> None:
    server.script("primary", [reply(chunk(delta))])
    error = await bad_answer(server)
    assert (error.code, error.message) == ("bad_response", f"fake/primary: {why}")


@pytest.mark.asyncio
async def test_a_stream_cut_off_after_a_call_began_fails_the_turn_without_a_retry(
    server: FakeModelServer,
) -> None:
    started = calls_chunk(entry(0, "call_1", "weather", '{"city": '))
    server.script("primary", [RawReply(START + started)])
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        with pytest.raises(ProviderError) as caught:
            await tool_answer(chain)
    assert caught.value.code is ErrorCode.INCOMPLETE_RESPONSE
    # The call's start already went out: another answer would be spliced onto it.
    assert [c.model for c in server.calls()] == ["primary"]
