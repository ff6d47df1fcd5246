"""What the OpenAI-compatible provider sends, and how it reads chunks, now that it builds the
chat completions body itself and takes the chunks as the JSON the SDK parsed.

The request must be the one ``chat.completions.create`` would send for the same arguments:
each test here sends both, to the same fake server, and compares what it received.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.providers.fakes import (
    REQUEST,
    SECRET_KEY,
    TOOL_REQUEST,
    Call,
    FakeModelServer,
    RawReply,
    answer,
    chain_of,
    fake_provider,
    openai_chunk,
    openai_event,
    tool_answer,
)
from turngate.errors import ErrorCode, ProviderError, ProviderResponseError
from turngate.providers.base import ChatMessage, ProviderRequest, ToolCall, Usage
from turngate.providers.openai_chunks import Choice, choices, chunk_usage
from turngate.providers.openai_compat import (
    OpenAICompatProvider,
    request_messages,
    request_tools,
)

WEATHER = ToolCall("c1", "weather", '{"city": "Zürich"}')
CONVERSATION = ProviderRequest(
    "agent:main:main",
    "run-1",
    (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "weather in Zürich? 😀"),
        ChatMessage("assistant", "", tool_calls=(WEATHER,)),
        ChatMessage.tool_result("c1", "weather", "sunny"),
        ChatMessage("assistant", "Sunny."),
        ChatMessage("user", "and tomorrow?"),
    ),
    tools=TOOL_REQUEST.tools,
)
"""Every kind of message, non-ASCII text, and tools."""
VOLATILE_HEADERS = frozenset({"content-length"})
"""Headers that differ only because the bodies do (compared apart)."""


async def sent_by_create(server: FakeModelServer, request: ProviderRequest, **extra: Any) -> Call:
    """What the fake server receives from the SDK's own ``chat.completions.create``, called as
    the provider did before it built the body itself (the same client settings)."""
    config = fake_provider(server)
    client = openai.AsyncOpenAI(
        base_url=config.base_url,
        api_key=SECRET_KEY,
        max_retries=0,
        timeout=openai.Timeout(config.total_timeout, connect=config.connect_timeout),
    )
    messages: list[ChatCompletionMessageParam] = request_messages(request.messages)
    try:
        chunks = await client.chat.completions.create(
            model="primary",
            messages=messages,
            tools=request_tools(request.tools) or openai.omit,
            max_completion_tokens=config.max_tokens,
            stream=True,
            **extra,
        )
        async with chunks:
            async for _ in chunks:
                pass
    finally:
        await client.close()
    return server.calls()[-1]


async def sent_by_provider(server: FakeModelServer, request: ProviderRequest) -> Call:
    """What the fake server receives from one call of the provider."""
    provider = OpenAICompatProvider(fake_provider(server), "primary", SECRET_KEY)
    try:
        await tool_answer(provider, request)
    finally:
        await provider.aclose()
    return server.calls()[-1]


def without_volatile(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}


@pytest.mark.asyncio
@pytest.mark.parametrize("request_", [REQUEST, CONVERSATION], ids=["plain", "tools"])
async def test_the_request_is_the_one_the_sdk_s_create_would_send(
    server: FakeModelServer, request_: ProviderRequest
) -> None:
    ours = await sent_by_provider(server, request_)
    theirs = await sent_by_create(server, request_, stream_options={"include_usage": True})
    # The same JSON object (the SDK's own key order changed between its releases; an object's
    # key order means nothing to the API).
    assert ours.body == theirs.body
    assert without_volatile(ours.headers) == without_volatile(theirs.headers)
    assert ours.headers["authorization"] == f"Bearer {SECRET_KEY}"


@pytest.mark.asyncio
async def test_the_request_without_stream_options_is_the_one_create_would_send(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["refuses_stream_options", "ok"])
    ours = await sent_by_provider(server, CONVERSATION)
    theirs = await sent_by_create(server, CONVERSATION)
    assert "stream_options" not in ours.body
    assert ours.body == theirs.body


@pytest.mark.asyncio
async def test_an_error_event_inside_the_stream_is_a_provider_error(
    server: FakeModelServer,
) -> None:
    error = {"message": "The server had an error", "type": "server_error", "code": None}
    server.script("primary", [RawReply(openai_event({"error": error}))])
    async with chain_of(fake_provider(server, max_retries=0), "primary") as chain:
        with pytest.raises(ProviderError) as caught:
            await answer(chain)
    assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
    assert "fake/primary: HTTP 500: The server had an error" in caught.value.message


# -- reading chunks ---------------------------------------------------------------------------


def test_a_chunk_is_read_from_the_json_the_sdk_parsed() -> None:
    chunk = openai_chunk(
        [
            {
                "index": 0,
                "delta": {
                    "content": "Hi",
                    "tool_calls": [
                        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}},
                        {"index": 0, "function": {"arguments": ""}},  # says nothing
                        {"index": 1, "function": {"arguments": "{}"}},
                    ],
                },
                "finish_reason": None,
            }
        ]
    )
    [choice] = choices("p/m", chunk)
    assert choice.content == "Hi"
    assert choice.refusal is None
    assert choice.finish_reason is None
    assert [(d.index, d.id, d.name, d.arguments) for d in choice.tool_calls] == [
        (0, "c1", "f", ""),
        (1, None, None, "{}"),
    ]


def test_a_last_choice_without_a_delta_only_finishes() -> None:
    chunk = openai_chunk([{"index": 0, "delta": None, "finish_reason": "stop"}])
    assert choices("p/m", chunk) == [Choice(None, None, "stop")]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        pytest.param("c1", "a tool call without an index", id="a-string"),
        pytest.param({"index": True, "id": "c1"}, "a tool call without an index", id="index-bool"),
        pytest.param({"index": -1, "id": "c1"}, "a tool call without an index", id="index-neg"),
        pytest.param({"index": 0, "id": 7}, "a tool call whose id is not text", id="id-number"),
        pytest.param(
            {"index": 0, "function": {"name": ["f"]}},
            "a tool call whose name is not text",
            id="name-a-list",
        ),
    ],
)
def test_a_tool_call_entry_of_the_wrong_shape_is_a_bad_response(entry: object, why: str) -> None:
    chunk = openai_chunk([{"index": 0, "delta": {"tool_calls": [entry]}}])
    with pytest.raises(ProviderResponseError) as caught:
        choices("p/m", chunk)
    assert (caught.value.code, caught.value.message) == (ErrorCode.BAD_RESPONSE, f"p/m: {why}")


@pytest.mark.parametrize(
    ("chunk", "usage"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 4)),
        ({"usage": {"prompt_tokens": 3}}, None),
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4.0}}, None),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 4}}, None),
        ({"usage": "3 + 4"}, None),
        ({"usage": None}, None),
        ({}, None),
        ([{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}], None),
        (None, None),
    ],
)
def test_usage_is_read_only_from_token_counts(chunk: object, usage: Usage | None) -> None:
    assert chunk_usage(chunk) == usage
