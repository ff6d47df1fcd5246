"""What the Anthropic provider sends, and how it reads events, now that it takes the events as
the JSON the SDK parsed (``messages.with_raw_response.create``, then ``parse(to=...)``).

The request must be the one plain ``messages.create`` would send for the same arguments, but
for the SDK's own ``x-stainless-raw-response`` header: the test sends both, to the same fake
server, and compares what it received.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.providers.fakes import (
    SECRET_KEY,
    TOOL_REQUEST,
    Call,
    FakeModelServer,
    fake_provider,
    tool_answer,
)
from turngate.errors import ErrorCode, ProviderResponseError
from turngate.providers.anthropic_events import Answer
from turngate.providers.anthropic_messages import (
    AnthropicProvider,
    request_messages,
    request_tools,
)
from turngate.providers.base import (
    ChatMessage,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

RAW_RESPONSE_HEADER = "x-stainless-raw-response"
WEATHER = ToolCall("c1", "weather", '{"city": "Zürich"}')
CONVERSATION = ProviderRequest(
    "agent:main:main",
    "run-1",
    (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "weather in Zürich? 😀"),
        ChatMessage("assistant", "Let me look.", tool_calls=(WEATHER,)),
        ChatMessage.tool_result("c1", "weather", "sunny"),
        ChatMessage("assistant", "Sunny."),
        ChatMessage("user", "and tomorrow?"),
    ),
    tools=TOOL_REQUEST.tools,
)
"""Every kind of message, non-ASCII text, and tools."""


async def sent_by_create(server: FakeModelServer, request: ProviderRequest) -> Call:
    """What the fake server receives from the SDK's plain ``messages.create``, called as the
    provider did before it asked for the raw response (the same client settings)."""
    config = fake_provider(server, "anthropic")
    client = anthropic.AsyncAnthropic(
        base_url=config.base_url,
        api_key=SECRET_KEY,
        max_retries=0,
        timeout=anthropic.Timeout(config.total_timeout, connect=config.connect_timeout),
    )
    system, messages = request_messages(request.messages)
    try:
        events = await client.messages.create(
            model="claude",
            max_tokens=config.max_tokens,
            messages=messages,
            system=system or anthropic.omit,
            tools=request_tools(request.tools) or anthropic.omit,
            stream=True,
        )
        async with events:
            async for _ in events:
                pass
    finally:
        await client.close()
    return server.calls()[-1]


@pytest.mark.asyncio
async def test_the_request_is_the_one_plain_create_would_send(server: FakeModelServer) -> None:
    provider = AnthropicProvider(fake_provider(server, "anthropic"), "claude", SECRET_KEY)
    try:
        await tool_answer(provider, CONVERSATION)
    finally:
        await provider.aclose()
    ours = server.calls()[-1]
    theirs = await sent_by_create(server, CONVERSATION)
    assert list(ours.body.items()) == list(theirs.body.items())
    assert ours.headers.pop(RAW_RESPONSE_HEADER) == "raw"
    assert ours.headers == theirs.headers


# -- reading events ---------------------------------------------------------------------------


def take_all(*events: object) -> tuple[Answer, list[TextDelta | ToolCallDelta]]:
    answer = Answer("p/m")
    out: list[TextDelta | ToolCallDelta] = []
    for event in events:
        out.extend(answer.take(event))
    return answer, out


def test_events_are_read_from_the_json_the_sdk_parsed() -> None:
    start: dict[str, Any] = {"type": "message_start", "message": {"usage": {"input_tokens": 9}}}
    answer, out = take_all(
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t1", "name": "clock", "input": {}},
        },
        {"type": "content_block_stop", "index": 1},
        # A delta without a stop_reason says nothing about it, as the SDK's models read it.
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 1}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}},
        {"type": "message_stop"},
    )
    assert out == [
        TextDelta("Hi"),
        ToolCallDelta(0, "t1", "clock"),
        ToolCallDelta(0, None, None, "{}"),
    ]
    answer.check()
    assert (answer.stop_reason, answer.usage()) == ("tool_use", Usage(9, 1))


@pytest.mark.parametrize(
    ("event", "why"),
    [
        pytest.param("message_stop", "an event without a type", id="a-string"),
        pytest.param(None, "an event without a type", id="null"),
        pytest.param({"type": 5}, "an event without a type", id="type-a-number"),
        pytest.param(
            {"type": "message_delta", "delta": "end_turn"},
            "a message_delta without a stop_reason",
            id="delta-a-string",
        ),
        pytest.param(
            {"type": "content_block_delta", "index": 0, "delta": ["text_delta"]},
            "a content_block_delta without a typed delta",
            id="delta-a-list",
        ),
        pytest.param(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": None},
            },
            "a tool_use block whose id or name is not text",
            id="name-null",
        ),
        pytest.param(
            {"type": "content_block_start", "index": "0", "content_block": {"type": "tool_use"}},
            "a content block event without an index",
            id="index-a-string",
        ),
    ],
)
def test_an_event_of_the_wrong_shape_is_a_bad_response(event: object, why: str) -> None:
    with pytest.raises(ProviderResponseError) as caught:
        take_all(event)
    assert (caught.value.code, caught.value.message) == (ErrorCode.BAD_RESPONSE, f"p/m: {why}")


def test_usage_that_is_not_an_object_of_counts_is_ignored() -> None:
    answer, _ = take_all(
        {"type": "message_start", "message": {"usage": "lots"}},
        {"type": "message_start", "message": "m"},
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": -1}},
    )
    assert answer.usage() is None
