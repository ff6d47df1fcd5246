"""What a session's transcript is made of: typed entries, one per thing said.

A transcript is a sequence of :class:`TranscriptItem` values, each of one :class:`EntryKind`:

- ``user``: a user's message (``text``), with the id of the turn it is the message of
  (``turn_id``; None in entries written before turngate recorded it);
- ``assistant``: the assistant's text (``text``);
- ``tool_calls``: the tools the assistant called in one message (``tool_calls``, at least one);
- ``tool_result``: what one tool call returned (``call_id``, ``tool_name``, its content in
  ``text``, and ``is_error``).

An assistant message that both says something and calls tools is two entries: its text
(``assistant``), then its calls (``tool_calls``). Each call's result follows as its own
entry. The constructors (:meth:`TranscriptItem.user`, ...) make the valid combinations, and
any other is refused when the item is made, so an item read back is always one of these.

A transcript is *valid for a model call* when every tool call has exactly one result: both
model APIs refuse a call without its result. A run that ends before its calls returned
(aborted, fenced, interrupted by a crash) leaves calls open; :func:`closing_results` writes
the results that close them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class EntryKind(enum.StrEnum):
    """What one transcript entry is."""

    USER = "user"
    ASSISTANT = "assistant"
    TOOL_CALLS = "tool_calls"
    TOOL_RESULT = "tool_result"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model made."""

    id: str
    """The model's id for the call; its result names it (``call_id``)."""
    name: str
    arguments: str
    """The JSON text as the model sent it (kept verbatim, even when it is not valid JSON)."""

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("id: a tool call needs an id")
        if not self.name:
            raise ValueError(f"name: tool call {self.id} needs a tool name")

    def arguments_object(self) -> dict[str, Any] | None:
        """The arguments as a JSON object; None when they are not one (not JSON, or JSON of
        another type), for the caller to decide what to show instead."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class TranscriptItem:
    """One entry to append to a transcript. Make one with :meth:`user`, :meth:`assistant`,
    :meth:`calls` or :meth:`tool_result`; see the module docstring for the fields each
    kind has."""

    kind: EntryKind
    text: str = ""
    """The message's text (``user``, ``assistant``) or the tool's result (``tool_result``);
    empty for ``tool_calls``."""
    tool_calls: tuple[ToolCall, ...] = ()
    call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False
    turn_id: str | None = None
    """The turn whose message a ``user`` entry is."""

    def __post_init__(self) -> None:
        is_calls = self.kind is EntryKind.TOOL_CALLS
        is_result = self.kind is EntryKind.TOOL_RESULT
        if is_calls != bool(self.tool_calls):
            raise ValueError(f"tool_calls: present exactly in a tool_calls entry ({self.kind})")
        if is_calls and self.text:
            raise ValueError("text: a tool_calls entry has none (its text is an assistant entry)")
        if is_calls and len({call.id for call in self.tool_calls}) != len(self.tool_calls):
            raise ValueError("tool_calls: two calls of one entry share an id")
        if is_result != (self.call_id is not None) or is_result != (self.tool_name is not None):
            raise ValueError(
                f"call_id, tool_name: present exactly in a tool_result entry ({self.kind})"
            )
        if is_result and not (self.call_id and self.tool_name):
            raise ValueError("call_id, tool_name: a tool result names its call and its tool")
        if self.is_error and not is_result:
            raise ValueError(f"is_error: only a tool_result entry has it ({self.kind})")
        if self.turn_id is not None and self.kind is not EntryKind.USER:
            raise ValueError(f"turn_id: only a user entry has it ({self.kind})")

    @classmethod
    def user(cls, text: str, turn_id: str | None = None) -> TranscriptItem:
        """The message of turn ``turn_id``."""
        return cls(EntryKind.USER, text, turn_id=turn_id)

    @classmethod
    def assistant(cls, text: str) -> TranscriptItem:
        """The assistant's text."""
        return cls(EntryKind.ASSISTANT, text)

    @classmethod
    def calls(cls, calls: Sequence[ToolCall]) -> TranscriptItem:
        """The tool calls of one assistant message (at least one). Named ``calls``, not
        ``tool_calls``, which is the field that holds them."""
        return cls(EntryKind.TOOL_CALLS, tool_calls=tuple(calls))

    @classmethod
    def tool_result(
        cls, call_id: str, tool_name: str, content: str, *, is_error: bool = False
    ) -> TranscriptItem:
        """What the call ``call_id`` of ``tool_name`` returned; ``is_error`` when it failed
        (an error, a timeout, a cancellation: the content says which)."""
        return cls(
            EntryKind.TOOL_RESULT,
            content,
            call_id=call_id,
            tool_name=tool_name,
            is_error=is_error,
        )


def unanswered_calls(items: Sequence[TranscriptItem]) -> list[ToolCall]:
    """The tool calls of ``items`` that no result in ``items`` answers, in call order."""
    answered = {item.call_id for item in items if item.kind is EntryKind.TOOL_RESULT}
    return [
        call
        for item in items
        if item.kind is EntryKind.TOOL_CALLS
        for call in item.tool_calls
        if call.id not in answered
    ]


def closing_results(items: Sequence[TranscriptItem], why: str) -> list[TranscriptItem]:
    """One error result per call of ``items`` left without one, saying ``why`` it has none
    (the run ended, or the gateway restarted, before the call returned)."""
    return [
        TranscriptItem.tool_result(call.id, call.name, why, is_error=True)
        for call in unanswered_calls(items)
    ]
