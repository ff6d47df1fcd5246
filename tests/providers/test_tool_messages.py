"""A conversation with tool calls and results, sent to each API in its own shapes: OpenAI's
``tool_calls`` and ``tool`` messages; Anthropic's ``tool_use`` blocks and ``tool_result`` blocks
in user messages. Checked as request bodies, and once each as the fake server receives them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.providers.fakes import FakeModelServer, chain_of, collect, fake_provider
from turngate.providers import anthropic_messages, openai_compat
from turngate.providers.base import ChatMessage, ProviderRequest, ToolCall

WEATHER = ToolCall("c1", "weather", '{"city": "Lisbon"}')
FLIGHTS = ToolCall("c2", "flights", '{"to": "LIS", "cut')  # cut off: not JSON

CONVERSATION = (
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "plan a trip"),
    ChatMessage("assistant", "Let me look.", tool_calls=(WEATHER, FLIGHTS)),
    ChatMessage.tool_result("c1", "weather", "sunny"),
    ChatMessage.tool_result("c2", "flights", "arguments are not JSON", is_error=True),
    ChatMessage("assistant", "Lisbon is sunny."),
    ChatMessage("user", "and tomorrow?"),
    ChatMessage("assistant", "", tool_calls=(WEATHER,)),
    ChatMessage.tool_result("c1", "weather", "rain"),
)
"""Parallel calls with text, a failed call, then a call with no text of its own."""

OPENAI_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "plan a trip"},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lisbon"}'},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "flights", "arguments": '{"to": "LIS", "cut'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": "arguments are not JSON"},
    {"role": "assistant", "content": "Lisbon is sunny."},
    {"role": "user", "content": "and tomorrow?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lisbon"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "rain"},
]

ANTHROPIC_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "plan a trip"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Lisbon"}},
            # The Messages API takes only an object: arguments that were not one become {}.
            {"type": "tool_use", "id": "c2", "name": "flights", "input": {}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny", "is_error": False},
            {
                "type": "tool_result",
                "tool_use_id": "c2",
                "content": "arguments are not JSON",
                "is_error": True,
            },
        ],
    },
    {"role": "assistant", "content": "Lisbon is sunny."},
    {"role": "user", "content": "and tomorrow?"},
    {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Lisbon"}}
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "rain", "is_error": False}
        ],
    },
]


def test_openai_sends_tool_calls_on_the_assistant_message_and_each_result_as_a_tool_message() -> (
    None
):
    assert openai_compat.request_messages(CONVERSATION) == OPENAI_MESSAGES


def test_anthropic_sends_tool_use_blocks_and_the_results_in_one_user_message() -> None:
    system, messages = anthropic_messages.request_messages(CONVERSATION)
    assert system == "Be brief."
    assert messages == ANTHROPIC_MESSAGES


def test_anthropic_keeps_text_messages_as_they_were_sent_before_tools() -> None:
    plain = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "one"),
        ChatMessage("user", "two"),  # a batch of two messages: sent as two, as before
        ChatMessage("assistant", "answer"),
        ChatMessage("system", "Mind the time."),
    )
    assert anthropic_messages.request_messages(plain) == (
        "Be brief.\n\nMind the time.",
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "answer"},
        ],
    )


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"role": "user", "content": "x", "tool_calls": (WEATHER,)}, "tool_calls: only an"),
        ({"role": "tool", "content": "x", "tool_call_id": "c1"}, "tool_call_id, tool_name"),
        ({"role": "assistant", "content": "x", "tool_name": "weather"}, "tool_call_id, tool"),
        ({"role": "user", "content": "x", "is_error": True}, "is_error: only a tool message"),
    ],
)
def test_a_chat_message_with_fields_its_role_does_not_have_is_refused(
    fields: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        ChatMessage(**fields)


REQUEST = ProviderRequest("agent:main:main", "run-1", CONVERSATION)


@pytest.mark.asyncio
async def test_the_openai_server_receives_the_tool_calls_and_results(
    server: FakeModelServer,
) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        assert await collect(chain, REQUEST)
    [call] = server.calls()
    assert call.body["messages"] == OPENAI_MESSAGES


@pytest.mark.asyncio
async def test_the_anthropic_server_receives_the_tool_use_and_tool_result_blocks(
    server: FakeModelServer,
) -> None:
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        assert await collect(chain, REQUEST)
    [call] = server.calls()
    assert call.body["system"] == "Be brief."
    assert call.body["messages"] == ANTHROPIC_MESSAGES
