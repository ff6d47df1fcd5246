"""Reading a Messages API stream, event by event, into events of a model call.

The SDK hands each event over as the JSON it parsed (dicts, lists, strings, numbers), not as a
model (see :data:`~turngate.providers.anthropic_messages.RawEvents`), so the fields read here
are checked one by one: a known event with fields of the wrong type is ``bad_response``, and
event types this code does not know are skipped (Anthropic adds new ones and asks clients to
ignore them). A field that is absent reads as null, as it did when the SDK built models.
:class:`Answer` keeps what the stream has said so far and decides, at its end, whether it was
a reply (:meth:`Answer.check`): it reached ``message_stop`` and had text or tool calls.

Tool calls are ``tool_use`` content blocks. A block's ``content_block_start`` has the call's
id and tool name, and its input comes as ``input_json_delta`` fragments
(``partial_json``), which become :class:`~turngate.providers.base.ToolCallDelta` pieces as
they arrive. A server that does not stream the input sends it whole in the start's
``input`` and no fragments: that input is passed on at the block's ``content_block_stop``
(a streamed block's start says ``{}`` there, which is also the input of a call that takes
no arguments). A call's index is its block's place among the answer's ``tool_use`` blocks,
from 0, whatever other blocks (text, thinking) come before it.

Token usage comes in ``message_start`` (``message.usage``) and ``message_delta`` (``usage``),
whose counts are running totals: the last value of each counter is the call's. The prompt's
tokens are ``input_tokens`` plus the cache's (``cache_creation_input_tokens``,
``cache_read_input_tokens``), as OpenAI's ``prompt_tokens`` counts cached tokens too. A count
that cannot be read is ignored: usage is a report, never a reason to lose a finished reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

from turngate.providers.base import Finish, TextDelta, ToolCallDelta, Usage
from turngate.providers.http_call import bad_response, check_finished, refused_error
from turngate.providers.tool_calls import ToolCallAssembler

STOP_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
"""Anthropic's stop reasons that have an OpenAI name, which a Finish carries; any other
(``pause_turn``, ...) is passed on as Anthropic said it."""
USAGE_COUNTERS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
"""The counters of an event's ``usage`` that make up a call's :class:`Usage`."""
_NO_FIELD = object()
"""A ``message_delta``'s ``stop_reason`` when it has no ``delta`` object to hold one."""


@dataclass
class _ToolBlock:
    """A ``tool_use`` block still open: its call's index, and the input its start gave."""

    index: int
    start_input: object
    streamed: bool = False
    """Whether an ``input_json_delta`` has sent some of its input."""


@dataclass
class Answer:
    """What the stream has said so far: whether it had text, its tool calls, why and whether
    it stopped, and the usage it reported."""

    label: str
    """``<provider id>/<model>``, which starts every error's message."""
    has_text: bool = False
    stopped: bool = False
    stop_reason: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    """The last value of each usage counter the stream reported (they are running totals)."""
    tool_calls: ToolCallAssembler = field(init=False)
    _open_tools: dict[int, _ToolBlock] = field(default_factory=dict)
    """The ``tool_use`` blocks not stopped yet, by content block index."""

    def __post_init__(self) -> None:
        self.tool_calls = ToolCallAssembler(self.label)

    def take(self, event: object) -> list[TextDelta | ToolCallDelta]:
        """Note ``event``; the events it carries, to pass on (see the module docstring)."""
        kind = _field(event, "type")
        if not isinstance(kind, str):
            raise bad_response(self.label, "an event without a type")
        if kind == "content_block_start":
            return self._start_block(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_stop" and self._open_tools:
            return self._stop_block(_block_index(self.label, event))
        if kind == "message_start":
            self._note_usage(_field(_field(event, "message"), "usage"))
        elif kind == "message_delta":
            self._note_delta(event)
        elif kind == "message_stop":
            # After "max_tokens" too: an answer cut by the output budget is finished.
            self.stopped = True
            # A block a server never stopped still has its call.
            return [d for index in list(self._open_tools) for d in self._stop_block(index)]
        return []

    def check(self) -> None:
        """At the end of the stream: refuse a cut-off or an empty answer, and tool calls
        that cannot be answered (no id, no name) or that ``tool_use`` promised and the
        stream never sent."""
        check_finished(
            self.label,
            finished=self.stopped,
            has_output=self.has_text or len(self.tool_calls) > 0,
            stop_signal="message_stop",
        )
        if self.stop_reason == "tool_use" and not self.tool_calls:
            why = "the model stopped for tool_use but sent no tool_use block"
            raise bad_response(self.label, why)
        self.tool_calls.calls()

    def finish(self) -> Finish:
        """How the answer ended, and its usage (after :meth:`check`)."""
        reason = self.stop_reason or "end_turn"
        return Finish(STOP_REASONS.get(reason, reason), self.usage())

    def usage(self) -> Usage | None:
        """The call's usage; None if the stream reported neither input nor output tokens."""
        if "input_tokens" not in self.counters and "output_tokens" not in self.counters:
            return None
        c = self.counters
        prompt = (
            c.get("input_tokens", 0)
            + c.get("cache_creation_input_tokens", 0)
            + c.get("cache_read_input_tokens", 0)
        )
        return Usage(prompt, c.get("output_tokens", 0))

    def _start_block(self, event: object) -> list[TextDelta | ToolCallDelta]:
        block = _field(event, "content_block")
        if _field(block, "type") != "tool_use":
            return []  # text arrives in deltas; other blocks are not this gateway's
        block_index = _block_index(self.label, event)
        call_id = _field(block, "id")
        name = _field(block, "name")
        if not (isinstance(call_id, str) and isinstance(name, str)):
            raise bad_response(self.label, "a tool_use block whose id or name is not text")
        if block_index in self._open_tools:
            raise bad_response(self.label, f"two content blocks with index {block_index}")
        tool = _ToolBlock(len(self.tool_calls), _field(block, "input"))
        self._open_tools[block_index] = tool
        return [self._call(ToolCallDelta(tool.index, call_id, name))]

    def _block_delta(self, event: object) -> list[TextDelta | ToolCallDelta]:
        delta = _field(event, "delta")
        delta_type = _field(delta, "type")
        if not isinstance(delta_type, str):
            raise bad_response(self.label, "a content_block_delta without a typed delta")
        if delta_type == "text_delta":
            text = _field(delta, "text")
            if not isinstance(text, str):
                raise bad_response(self.label, "a text_delta whose text is not text")
            self.has_text = self.has_text or bool(text)
            return [TextDelta(text)] if text else []
        if delta_type != "input_json_delta":
            return []  # thinking, citations, ...
        partial_json = _field(delta, "partial_json")
        if not isinstance(partial_json, str):
            raise bad_response(self.label, "an input_json_delta whose partial_json is not text")
        # Input for a block that is not a tool_use (a server tool's, say) is not a call.
        tool = self._open_tools.get(_block_index(self.label, event))
        if tool is None or not partial_json:
            return []
        tool.streamed = True
        return [self._call(ToolCallDelta(tool.index, arguments=partial_json))]

    def _stop_block(self, block_index: int) -> list[TextDelta | ToolCallDelta]:
        tool = self._open_tools.pop(block_index, None)
        if tool is None or tool.streamed:
            return []
        start_input = {} if tool.start_input is None else tool.start_input
        if not isinstance(start_input, dict):
            raise bad_response(self.label, "a tool_use block whose input is not an object")
        return [self._call(ToolCallDelta(tool.index, arguments=json.dumps(start_input)))]

    def _call(self, delta: ToolCallDelta) -> ToolCallDelta:
        self.tool_calls.add(delta)
        return delta

    def _note_delta(self, event: object) -> None:
        self._note_usage(_field(event, "usage"))
        delta = _field(event, "delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else _NO_FIELD
        if stop_reason is _NO_FIELD or not isinstance(stop_reason, str | None):
            raise bad_response(self.label, "a message_delta without a stop_reason")
        if stop_reason == "refusal":
            raise refused_error(self.label, "the model declined (stop_reason refusal)")
        self.stop_reason = stop_reason or self.stop_reason

    def _note_usage(self, usage: object) -> None:
        for name in USAGE_COUNTERS:
            # Counters a given event does not carry, or carries as null, keep their value.
            value = _field(usage, name)
            if _is_count(value):
                self.counters[name] = value


def _field(value: object, name: str) -> object:
    """Field ``name`` of ``value`` if it is a JSON object that has it; else None."""
    return value.get(name) if isinstance(value, dict) else None


def _block_index(label: str, event: object) -> int:
    index = _field(event, "index")
    if not _is_count(index):
        raise bad_response(label, "a content block event without an index")
    return index


def _is_count(value: object) -> TypeGuard[int]:
    # bool is an int to Python, never a count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
