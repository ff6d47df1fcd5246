"""Typed transcript entries: each kind has its own fields, and no other combination can be made."""

from __future__ import annotations

from typing import Any

import pytest

from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem

SEARCH = ToolCall("c1", "search", '{"q": "lisbon"}')


def test_each_constructor_makes_its_kind_with_only_its_fields() -> None:
    assert TranscriptItem.user("hi") == TranscriptItem(EntryKind.USER, "hi")
    assert TranscriptItem.assistant("hello") == TranscriptItem(EntryKind.ASSISTANT, "hello")
    calls = TranscriptItem.calls([SEARCH])
    assert (calls.kind, calls.text, calls.tool_calls) == (EntryKind.TOOL_CALLS, "", (SEARCH,))
    result = TranscriptItem.tool_result("c1", "search", "3 hits")
    assert (result.kind, result.call_id, result.tool_name, result.text, result.is_error) == (
        EntryKind.TOOL_RESULT,
        "c1",
        "search",
        "3 hits",
        False,
    )
    assert TranscriptItem.tool_result("c1", "search", "timed out", is_error=True).is_error


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        ({"kind": EntryKind.USER, "tool_calls": (SEARCH,)}, "tool_calls: present exactly in"),
        ({"kind": EntryKind.ASSISTANT, "call_id": "c1", "tool_name": "x"}, "call_id, tool_name"),
        ({"kind": EntryKind.ASSISTANT, "is_error": True}, "is_error: only a tool_result"),
        ({"kind": EntryKind.TOOL_CALLS}, "tool_calls: present exactly in"),
        ({"kind": EntryKind.TOOL_CALLS, "tool_calls": (SEARCH,), "text": "x"}, "text: a tool_"),
        ({"kind": EntryKind.TOOL_CALLS, "tool_calls": (SEARCH, SEARCH)}, "share an id"),
        ({"kind": EntryKind.TOOL_RESULT, "call_id": "c1"}, "call_id, tool_name: present"),
        ({"kind": EntryKind.TOOL_RESULT, "call_id": "", "tool_name": "x"}, "names its call"),
    ],
)
def test_an_entry_with_fields_its_kind_does_not_have_is_refused(
    fields: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        TranscriptItem(**fields)


def test_a_tool_call_needs_an_id_and_a_name() -> None:
    with pytest.raises(ValueError, match="id"):
        ToolCall("", "search", "{}")
    with pytest.raises(ValueError, match="name: tool call c1"):
        ToolCall("c1", "", "{}")


@pytest.mark.parametrize(
    ("arguments", "parsed"),
    [
        ('{"q": "lisbon", "n": 3}', {"q": "lisbon", "n": 3}),
        ("{}", {}),
        ('{"q": "lis', None),  # cut off mid-JSON
        ("", None),
        ("[1, 2]", None),  # JSON, but not an object
        ('"text"', None),
    ],
)
def test_arguments_read_as_an_object_only_when_they_are_one(
    arguments: str, parsed: dict[str, Any] | None
) -> None:
    call = ToolCall("c1", "search", arguments)
    assert call.arguments_object() == parsed
    assert call.arguments == arguments  # kept verbatim either way
