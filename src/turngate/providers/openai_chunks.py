"""Reading an OpenAI-compatible chat completions stream, chunk by chunk, into events.

The SDK hands each chunk over as the JSON it parsed (dicts, lists, strings, numbers), not as a
model (see :data:`~turngate.providers.openai_compat.RawChunks`), so each is read field by
field here rather than trusted: a chunk of the wrong shape is ``bad_response``.
:class:`Answer` keeps what the stream has said so far and decides, at its end, whether it was
a reply (:meth:`Answer.check`): finished (a ``finish_reason``), not refused, and with some
output, text or tool calls.

Tool calls come as ``delta.tool_calls`` entries: each has the call's ``index``; the first
entry of a call has its ``id`` and ``function.name``, and every entry may have the next
fragment of ``function.arguments`` (an empty string, or the whole arguments at once, on some
servers). Parallel calls interleave by index. Each entry that says something becomes one
:class:`~turngate.providers.base.ToolCallDelta`, in arrival order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from turngate.providers.base import Finish, TextDelta, ToolCallDelta, Usage
from turngate.providers.http_call import (
    bad_response,
    check_finished,
    provider_text,
    refused_error,
)
from turngate.providers.tool_calls import ToolCallAssembler


@dataclass(frozen=True, slots=True)
class Choice:
    """What one choice of one chunk says, its fields checked."""

    content: str | None
    refusal: str | None
    finish_reason: str | None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass
class Answer:
    """What the stream has said so far: whether it had text, its refusal, its tool calls,
    how it finished, and the last usage it reported (servers that report usage on every
    chunk, as vLLM can, report running totals, so the last one is the call's)."""

    label: str
    """``<provider id>/<model>``, which starts every error's message."""
    has_text: bool = False
    refusal: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: ToolCallAssembler = field(init=False)

    def __post_init__(self) -> None:
        self.tool_calls = ToolCallAssembler(self.label)

    def take(self, choice: Choice) -> list[TextDelta | ToolCallDelta]:
        """Note ``choice``; the events it carries, to pass on: its text, if any, then its
        tool-call pieces."""
        if choice.refusal:
            self.refusal += choice.refusal
        if choice.finish_reason == "content_filter":
            raise refused_error(self.label, "stopped by the content filter")
        if choice.finish_reason is not None:
            # "length" too: an answer cut by the output budget is finished, and delivered.
            self.finish_reason = choice.finish_reason
        events: list[TextDelta | ToolCallDelta] = []
        if choice.content:
            self.has_text = True
            events.append(TextDelta(choice.content))
        for delta in choice.tool_calls:
            self.tool_calls.add(delta)
            events.append(delta)
        return events

    def check(self, api_key: str | None) -> None:
        """At the end of the stream: refuse a refusal, a cut-off or an empty answer, and
        tool calls that cannot be answered (no id, no name) or that ``tool_calls`` promised
        and the stream never sent."""
        if self.refusal:
            raise refused_error(self.label, provider_text(self.refusal, api_key))
        check_finished(
            self.label,
            finished=self.finish_reason is not None,
            has_output=self.has_text or len(self.tool_calls) > 0,
            stop_signal="finish_reason",
        )
        if self.finish_reason == "tool_calls" and not self.tool_calls:
            why = "the model finished with tool_calls but sent no tool call"
            raise bad_response(self.label, why)
        self.tool_calls.calls()

    def finish(self) -> Finish:
        """How the answer ended, and its usage (after :meth:`check`)."""
        reason = self.finish_reason or "stop"
        if reason == "stop" and self.tool_calls:
            # Some servers (older Ollama, ...) say "stop" after tool calls: the answer still
            # waits for their results, which is what "tool_calls" tells the caller.
            reason = "tool_calls"
        return Finish(reason, self.usage)


def choices(label: str, chunk: object) -> list[Choice]:
    """The choices of one chunk; ``bad_response`` if it is not shaped like one.

    A chunk with an empty list is fine (usage and content-filter results come that way).
    """
    found = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(found, list):
        raise bad_response(label, "a chunk without a list of choices")
    return [_choice(label, choice) for choice in found]


def _choice(label: str, choice: object) -> Choice:
    fields = _object(choice)
    finish_reason = fields.get("finish_reason")
    delta = fields.get("delta")
    # Some servers end with a choice that has a finish_reason and no delta at all.
    if not isinstance(delta, dict) and not (delta is None and finish_reason):
        raise bad_response(label, "a choice without a delta")
    said = _object(delta)
    content = said.get("content")
    refusal = said.get("refusal")
    for name, value in (
        ("finish_reason", finish_reason),
        ("content", content),
        ("refusal", refusal),
    ):
        if value is not None and not isinstance(value, str):
            raise bad_response(label, f"a choice whose {name} is not text")
    return Choice(content, refusal, finish_reason, _tool_calls(label, said))


def _tool_calls(label: str, delta: Mapping[str, Any]) -> tuple[ToolCallDelta, ...]:
    """The tool-call pieces of one delta that say something (an id, a name or arguments)."""
    entries = delta.get("tool_calls")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise bad_response(label, "a delta whose tool_calls is not a list")
    pieces = (_tool_call(label, entry) for entry in entries)
    return tuple(piece for piece in pieces if piece.id or piece.name or piece.arguments)


def _tool_call(label: str, entry: object) -> ToolCallDelta:
    fields = _object(entry)
    index = fields.get("index")
    if not _is_count(index):
        raise bad_response(label, "a tool call without an index")
    function = fields.get("function")
    if function is not None and not isinstance(function, dict):
        raise bad_response(label, "a tool call whose function is not an object")
    call_id = fields.get("id")
    name = _object(function).get("name")
    arguments = _object(function).get("arguments")
    for what, value in (("id", call_id), ("name", name), ("arguments", arguments)):
        if value is not None and not isinstance(value, str):
            raise bad_response(label, f"a tool call whose {what} is not text")
    return ToolCallDelta(index, call_id or None, name or None, arguments or "")


def chunk_usage(chunk: object) -> Usage | None:
    """The chunk's ``usage``, if it has one that reads as token counts; else None."""
    usage = _object(_object(chunk).get("usage"))
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if _is_count(prompt) and _is_count(completion):
        return Usage(prompt, completion)
    return None


_NOTHING: Mapping[str, Any] = MappingProxyType({})


def _object(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a field of something that is not
    an object is absent, which each caller then judges."""
    return value if isinstance(value, dict) else _NOTHING


def _is_count(value: object) -> TypeGuard[int]:
    # bool is an int to Python, never a count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
