"""Putting tool calls back together from a stream's pieces: split anywhere, interleaved."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turngate.errors import ErrorCode, ProviderResponseError
from turngate.providers.base import ToolCall, ToolCallDelta
from turngate.providers.tool_calls import TOOL_CALLS_MAX, ToolCallAssembler


def assemble(*deltas: ToolCallDelta) -> list[ToolCall]:
    assembler = ToolCallAssembler("p/m")
    for delta in deltas:
        assembler.add(delta)
    return assembler.calls()


def refusal(*deltas: ToolCallDelta) -> str:
    """The message of the bad response that ``deltas`` are."""
    with pytest.raises(ProviderResponseError) as caught:
        assemble(*deltas)
    assert caught.value.code is ErrorCode.BAD_RESPONSE
    return caught.value.message


def test_a_call_sent_whole_in_one_piece_is_returned_as_sent() -> None:
    assert assemble(ToolCallDelta(0, "c1", "weather", '{"city": "Lisbon"}')) == [
        ToolCall("c1", "weather", '{"city": "Lisbon"}')
    ]


def test_no_pieces_are_no_calls() -> None:
    assert assemble() == []


def test_calls_come_back_in_index_order_whatever_order_they_started_in() -> None:
    calls = assemble(
        ToolCallDelta(1, "c2", "clock", ""),
        ToolCallDelta(0, "c1", "weather", '{"city": '),
        ToolCallDelta(1, arguments="{}"),
        ToolCallDelta(0, arguments='"Lisbon"}'),
    )
    assert calls == [
        ToolCall("c1", "weather", '{"city": "Lisbon"}'),
        ToolCall("c2", "clock", "{}"),
    ]


def test_an_id_or_name_repeated_on_a_later_piece_is_the_same_call() -> None:
    # Some servers repeat the call's id and name on every piece.
    calls = assemble(ToolCallDelta(0, "c1", "weather", "{"), ToolCallDelta(0, "c1", "weather", "}"))
    assert calls == [ToolCall("c1", "weather", "{}")]


def test_arguments_that_are_not_json_are_kept_as_the_model_sent_them() -> None:
    calls = assemble(ToolCallDelta(0, "c1", "weather", '{"city": "Lis'))
    assert calls == [ToolCall("c1", "weather", '{"city": "Lis')]
    assert calls[0].arguments_object() is None


def test_a_call_without_arguments_has_empty_arguments() -> None:
    assert assemble(ToolCallDelta(0, "c1", "clock")) == [ToolCall("c1", "clock", "")]


def test_a_call_without_an_id_is_a_bad_response() -> None:
    assert refusal(ToolCallDelta(0, None, "weather", "{}")) == "p/m: tool call 0 has no id"


def test_a_call_without_a_tool_name_is_a_bad_response() -> None:
    assert refusal(ToolCallDelta(0, "c1", None, "{}")) == "p/m: tool call 0 (c1) has no tool name"


def test_two_calls_with_one_id_are_a_bad_response() -> None:
    why = refusal(ToolCallDelta(0, "c1", "weather"), ToolCallDelta(1, "c1", "clock"))
    assert why == "p/m: two tool calls have the id 'c1'"


def test_a_piece_that_gives_a_call_another_id_is_a_bad_response() -> None:
    why = refusal(ToolCallDelta(0, "c1", "weather"), ToolCallDelta(0, "c9", "weather"))
    assert why == "p/m: tool call 0 has two ids ('c1', then 'c9')"


@pytest.mark.parametrize("index", [-1, TOOL_CALLS_MAX])
def test_a_call_index_out_of_bounds_is_a_bad_response(index: int) -> None:
    why = refusal(ToolCallDelta(index, "c1", "weather"))
    assert why == f"p/m: tool call index {index} (at most {TOOL_CALLS_MAX} calls)"


# -- properties -------------------------------------------------------------------------------

JSON_VALUES = st.text() | st.integers() | st.booleans() | st.none()
ARGUMENTS = (
    # JSON as models write it, with \u escapes (surrogate pairs too) or raw characters.
    st.builds(
        json.dumps,
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
        ensure_ascii=st.booleans(),
    )
    # And anything at all: arguments are kept as sent, JSON or not.
    | st.text()
)


def split_at(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at each of ``cuts`` (past its end: at its end); at least one piece."""
    bounds = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def calls(draw: st.DrawFn) -> list[ToolCall]:
    """1-4 calls with distinct ids."""
    count = draw(st.integers(1, 4))
    return [
        ToolCall(
            f"call_{n}", draw(st.sampled_from(["weather", "clock", "search"])), draw(ARGUMENTS)
        )
        for n in range(count)
    ]


@st.composite
def pieces(draw: st.DrawFn, index: int, call: ToolCall) -> list[ToolCallDelta]:
    """``call`` as a stream sends it: its id and name first (with a first fragment, maybe
    empty), then its arguments split at arbitrary points."""
    fragments = split_at(call.arguments, draw(st.lists(st.integers(0, 200), max_size=12)))
    first = ToolCallDelta(index, call.id, call.name, fragments[0])
    return [first, *(ToolCallDelta(index, arguments=f) for f in fragments[1:])]


@given(calls(), st.data())
def test_calls_split_anywhere_and_interleaved_come_back_whole(
    sent: list[ToolCall], data: st.DataObject
) -> None:
    queues = [data.draw(pieces(index, call)) for index, call in enumerate(sent)]
    stream: list[ToolCallDelta] = []
    # Interleave the calls' pieces, each call's own pieces in order.
    while any(queues):
        pick = data.draw(st.sampled_from([q for q in queues if q]))
        stream.append(pick.pop(0))
    assert assemble(*stream) == sent


@given(ARGUMENTS, st.lists(st.integers(0, 200), max_size=20))
def test_arguments_split_at_any_character_rejoin_to_the_same_text(
    arguments: str, cuts: list[int]
) -> None:
    fragments = split_at(arguments, cuts)
    stream = [
        ToolCallDelta(0, "c1", "weather"),
        *(ToolCallDelta(0, arguments=f) for f in fragments),
    ]
    [call] = assemble(*stream)
    assert call.arguments == arguments
