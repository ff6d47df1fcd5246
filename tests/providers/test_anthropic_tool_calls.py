"""Tool calling through the Messages API, against the fake server on loopback: the tools a
request offers, and the ``tool_use`` blocks the model streams back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.providers.fakes import (
    COMPLETION_TOKENS,
    ESCAPED_ARGUMENTS,
    PROMPT_TOKENS,
    REQUEST,
    SECRET_KEY,
    FakeModelServer,
    RawReply,
    ToolAnswer,
    anthropic_event,
    chain_of,
    fake_provider,
    tool_answer,
)
from turngate.errors import ErrorCode, ProviderError
from turngate.providers.anthropic_messages import AnthropicProvider
from turngate.providers.base import Finish, TextDelta, ToolCall, ToolCallDelta, Usage

USAGE = Usage(PROMPT_TOKENS, COMPLETION_TOKENS)


def event(kind: str, **data: Any) -> bytes:
    """One event of type ``kind`` with ``data``, worded as the Messages API streams it."""
    return anthropic_event(kind, {"type": kind, **data})


START = event(
    "message_start",
    message={"id": "msg_fake", "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}},
)


def text_block(index: int, text: str) -> bytes:
    """A whole text block at content block ``index``."""
    return (
        event("content_block_start", index=index, content_block={"type": "text", "text": ""})
        + event("content_block_delta", index=index, delta={"type": "text_delta", "text": text})
        + event("content_block_stop", index=index)
    )


def tool_block(
    index: int, call_id: str, name: str, *fragments: str, whole: dict[str, Any] | None = None
) -> bytes:
    """A ``tool_use`` block at content block ``index``: its input streamed as ``fragments``,
    or, from a server that does not stream it, ``whole`` in its start."""
    block = {"type": "tool_use", "id": call_id, "name": name, "input": whole or {}}
    deltas = (
        event(
            "content_block_delta",
            index=index,
            delta={"type": "input_json_delta", "partial_json": f},
        )
        for f in fragments
    )
    return (
        event("content_block_start", index=index, content_block=block)
        + b"".join(deltas)
        + event("content_block_stop", index=index)
    )


def stop(reason: str = "tool_use") -> bytes:
    delta = {"stop_reason": reason, "stop_sequence": None}
    return event("message_delta", delta=delta, usage={"output_tokens": COMPLETION_TOKENS}) + event(
        "message_stop"
    )


def reply(*blocks: bytes, reason: str = "tool_use") -> RawReply:
    return RawReply(START + b"".join(blocks) + stop(reason))


async def claude_answer(server: FakeModelServer, *blocks: bytes) -> ToolAnswer:
    """One call of ``claude`` whose stream has ``blocks``, through a chain."""
    server.script("claude", [reply(*blocks)])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        return await tool_answer(chain)


async def bad_answer(server: FakeModelServer, *blocks: bytes) -> ProviderError:
    """The error one call of ``claude`` (straight, no chain) raises."""
    server.script("claude", [reply(*blocks)])
    provider = AnthropicProvider(fake_provider(server, "anthropic"), "claude", SECRET_KEY)
    try:
        with pytest.raises(ProviderError) as caught:
            await tool_answer(provider)
    finally:
        await provider.aclose()
    return caught.value


# -- offering tools ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_offered_tools_are_sent_with_their_schema_as_input_schema(
    server: FakeModelServer,
) -> None:
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        await tool_answer(chain)
    [call] = server.calls()
    assert call.body["tools"] == [
        {
            "name": "weather",
            "description": "The weather in a city today.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        {
            "name": "clock",
            "description": "The time now.",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]


@pytest.mark.asyncio
async def test_a_request_without_tools_sends_no_tools(server: FakeModelServer) -> None:
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        await tool_answer(chain, REQUEST)
    [call] = server.calls()
    assert set(call.body) == {"model", "max_tokens", "messages", "system", "stream"}


# -- reading calls ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_use_block_streamed_in_pieces_is_a_call_that_finishes_with_tool_calls(
    server: FakeModelServer,
) -> None:
    got = await claude_answer(server, tool_block(0, "toolu_1", "weather", '{"city"', ': "Lisbon"}'))
    assert got.events == [
        ToolCallDelta(0, "toolu_1", "weather"),
        ToolCallDelta(0, arguments='{"city"'),
        ToolCallDelta(0, arguments=': "Lisbon"}'),
    ]
    assert got.calls == [ToolCall("toolu_1", "weather", '{"city": "Lisbon"}')]
    assert got.finish == Finish("tool_calls", USAGE, "fake/claude")


@pytest.mark.asyncio
async def test_text_before_a_call_streams_first_and_the_call_is_numbered_among_calls(
    server: FakeModelServer,
) -> None:
    # The tool_use block is content block 1, and the answer's call 0.
    got = await claude_answer(
        server, text_block(0, "Let me check."), tool_block(1, "toolu_1", "clock", "{}")
    )
    assert got.events == [
        TextDelta("Let me check."),
        ToolCallDelta(0, "toolu_1", "clock"),
        ToolCallDelta(0, arguments="{}"),
    ]
    assert got.finish.reason == "tool_calls"


@pytest.mark.asyncio
async def test_parallel_tool_use_blocks_come_back_as_separate_calls(
    server: FakeModelServer,
) -> None:
    got = await claude_answer(
        server,
        tool_block(0, "toolu_a", "weather", '{"city": ', '"Lisbon"}'),
        tool_block(1, "toolu_b", "weather", '{"city": "Porto"}'),
        tool_block(2, "toolu_c", "clock", "{}"),
    )
    assert got.calls == [
        ToolCall("toolu_a", "weather", '{"city": "Lisbon"}'),
        ToolCall("toolu_b", "weather", '{"city": "Porto"}'),
        ToolCall("toolu_c", "clock", "{}"),
    ]


@pytest.mark.asyncio
async def test_input_split_inside_unicode_escapes_comes_back_exactly_as_sent(
    server: FakeModelServer,
) -> None:
    got = await claude_answer(server, tool_block(0, "toolu_1", "weather", *ESCAPED_ARGUMENTS))
    [call] = got.calls
    assert call.arguments == ESCAPED_ARGUMENTS
    assert call.arguments_object() == {"city": "Zürich", "mood": "😀", "raw": "Zürich 😀"}


@pytest.mark.asyncio
async def test_input_sent_whole_in_the_block_start_is_the_call_s_arguments(
    server: FakeModelServer,
) -> None:
    whole = tool_block(0, "toolu_1", "weather", whole={"city": "Lisbon"})
    got = await claude_answer(server, whole)
    assert got.calls == [ToolCall("toolu_1", "weather", '{"city": "Lisbon"}')]


@pytest.mark.asyncio
async def test_a_call_that_takes_no_input_has_an_empty_object_for_arguments(
    server: FakeModelServer,
) -> None:
    # Streamed: the start's input is {}, and the one delta is empty.
    got = await claude_answer(server, tool_block(0, "toolu_1", "clock", ""))
    assert got.calls == [ToolCall("toolu_1", "clock", "{}")]


# -- answers that are not a reply -------------------------------------------------------------


@pytest.mark.asyncio
async def test_stopping_for_tool_use_without_a_tool_use_block_is_a_bad_response(
    server: FakeModelServer,
) -> None:
    error = await bad_answer(server, text_block(0, "I will call a tool."))
    assert error.code is ErrorCode.BAD_RESPONSE
    assert error.message == (
        "fake/claude: the model stopped for tool_use but sent no tool_use block"
    )


@pytest.mark.asyncio
async def test_a_tool_use_block_whose_name_is_not_text_is_a_bad_response(
    server: FakeModelServer,
) -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": 7, "input": {}}
    error = await bad_answer(server, event("content_block_start", index=0, content_block=block))
    assert (error.code, error.message) == (
        "bad_response",
        "fake/claude: a tool_use block whose id or name is not text",
    )
