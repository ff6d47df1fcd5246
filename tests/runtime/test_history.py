"""The conversation a model call sends, built from typed transcript entries: one message per
entry, an assistant's text and its tool calls as one message, and never a tool call without
its result nor a result without its call, wherever the history bound cuts."""

from __future__ import annotations

import pytest

from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.providers.base import ChatMessage
from turngate.runtime.history import chat_messages, model_messages, whole_groups

WEATHER = ToolCall("c1", "weather", '{"city": "Lisbon"}')
FLIGHTS = ToolCall("c2", "flights", '{"to": "LIS"}')

ASK = TranscriptItem.user("plan a trip")
LOOKING = TranscriptItem.assistant("Let me look.")
CALLS = TranscriptItem.calls([WEATHER, FLIGHTS])
SUNNY = TranscriptItem.tool_result("c1", "weather", "sunny")
NO_FLIGHTS = TranscriptItem.tool_result("c2", "flights", "timed out", is_error=True)
ANSWER = TranscriptItem.assistant("Lisbon is sunny; flights unknown.")
THANKS = TranscriptItem.user("thanks")
WELCOME = TranscriptItem.assistant("You're welcome.")

TOOL_TURN = [ASK, LOOKING, CALLS, SUNNY, NO_FLIGHTS, ANSWER]
"""One turn in which the model called two tools in parallel, then answered."""


def test_text_entries_become_the_same_messages_as_before_typed_entries() -> None:
    past = [ASK, TranscriptItem.assistant("where to?")]
    assert model_messages("Be brief.", past, [THANKS]) == [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "plan a trip"),
        ChatMessage("assistant", "where to?"),
        ChatMessage("user", "thanks"),
    ]
    assert model_messages(None, [], [THANKS]) == [ChatMessage("user", "thanks")]


def test_tool_calls_join_the_assistant_text_before_them_and_each_result_is_a_tool_message() -> None:
    assert chat_messages(TOOL_TURN) == [
        ChatMessage("user", "plan a trip"),
        ChatMessage("assistant", "Let me look.", tool_calls=(WEATHER, FLIGHTS)),
        ChatMessage.tool_result("c1", "weather", "sunny"),
        ChatMessage.tool_result("c2", "flights", "timed out", is_error=True),
        ChatMessage("assistant", "Lisbon is sunny; flights unknown."),
    ]


def test_tool_calls_with_no_text_before_them_are_an_assistant_message_of_their_own() -> None:
    assert chat_messages([ASK, CALLS, SUNNY, NO_FLIGHTS])[1] == ChatMessage(
        "assistant", "", tool_calls=(WEATHER, FLIGHTS)
    )
    # A user's message between an answer and tool calls: the calls do not join the answer.
    assert chat_messages([WELCOME, ASK, CALLS])[2] == ChatMessage(
        "assistant", "", tool_calls=(WEATHER, FLIGHTS)
    )


def test_whole_groups_keep_everything_when_nothing_is_cut() -> None:
    assert whole_groups([*TOOL_TURN, THANKS, WELCOME]) == [*TOOL_TURN, THANKS, WELCOME]


@pytest.mark.parametrize(
    ("window", "sent"),
    [
        # The bound cut the calls off: their results are dropped.
        ([SUNNY, NO_FLIGHTS, ANSWER, THANKS], [ANSWER, THANKS]),
        ([NO_FLIGHTS, ANSWER], [ANSWER]),
        # The bound kept the calls and every result: the group stays (its text was cut).
        ([CALLS, SUNNY, NO_FLIGHTS, ANSWER], [CALLS, SUNNY, NO_FLIGHTS, ANSWER]),
        # The transcript ends before every call has its result: the group is dropped.
        ([ASK, LOOKING, CALLS, SUNNY], [ASK, LOOKING]),
        ([ASK, LOOKING, CALLS], [ASK, LOOKING]),
        # Something else came before the last result: the group is dropped, and so is the
        # result that comes after it.
        ([ASK, CALLS, SUNNY, THANKS, NO_FLIGHTS], [ASK, THANKS]),
        # A result given twice is one result; the second is dropped.
        ([ASK, CALLS, SUNNY, NO_FLIGHTS, SUNNY], [ASK, CALLS, SUNNY, NO_FLIGHTS]),
    ],
)
def test_a_call_and_result_group_cut_by_the_bound_is_dropped_whole(
    window: list[TranscriptItem], sent: list[TranscriptItem]
) -> None:
    assert whole_groups(window) == sent


def test_the_history_bound_never_sends_a_result_without_its_call() -> None:
    """Every cut of a long transcript: each tool message follows the assistant message that
    made its call, and each call made has its result."""
    transcript = [*TOOL_TURN, THANKS, WELCOME, *TOOL_TURN]
    for start in range(len(transcript)):
        messages = model_messages(None, transcript[start:], [THANKS])
        open_calls: set[str] = set()
        for message in messages:
            if message.role == "tool":
                assert message.tool_call_id in open_calls, (start, messages)
                open_calls.discard(message.tool_call_id)
            else:
                assert not open_calls, (start, messages)
                open_calls = {call.id for call in message.tool_calls}
        assert messages[-1] == ChatMessage("user", "thanks")
