"""Putting a model's tool calls back together from the pieces its stream sent.

A provider yields each call as :class:`~turngate.providers.base.ToolCallDelta` pieces: the
first piece of call ``index`` names its ``id`` and tool, and every piece may carry the next
fragment of its JSON arguments, split anywhere. The pieces of parallel calls arrive
interleaved. :class:`ToolCallAssembler` takes them in arrival order and gives back the whole
calls, in index order.

The arguments are kept as the text the model sent, fragments joined: whether they parse, and
match the tool's schema, is for the tool to say (a call with broken arguments still gets a
result, an error, that the model can read). A call without an id or a tool name, or two calls
with one id, cannot be answered at all: that is the provider's bad response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turngate.core.transcript import ToolCall
from turngate.providers.base import ToolCallDelta
from turngate.providers.http_call import bad_response

TOOL_CALLS_MAX = 128
"""An answer with more calls than this (or a call index past it) is a bad response: every
call is run, so their number is bounded before any is."""


@dataclass
class _Partial:
    """One call as its pieces have told it so far."""

    id: str | None = None
    name: str | None = None
    fragments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects one answer's :class:`~turngate.providers.base.ToolCallDelta` pieces and
    returns its whole calls (see the module docstring).

    ``label`` (``<provider id>/<model>``) starts the message of every error it raises.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._calls: dict[int, _Partial] = {}

    def __len__(self) -> int:
        """How many calls have begun so far."""
        return len(self._calls)

    def add(self, delta: ToolCallDelta) -> None:
        """Take the next piece of call ``delta.index``.

        An id or name that a later piece repeats is the same call's (some servers repeat
        them); one that differs is a bad response, as is an index out of bounds.
        """
        if not 0 <= delta.index < TOOL_CALLS_MAX:
            why = f"tool call index {delta.index} (at most {TOOL_CALLS_MAX} calls)"
            raise bad_response(self.label, why)
        call = self._calls.setdefault(delta.index, _Partial())
        call.id = self._same(delta.index, "id", call.id, delta.id)
        call.name = self._same(delta.index, "name", call.name, delta.name)
        if delta.arguments:
            call.fragments.append(delta.arguments)

    def calls(self) -> list[ToolCall]:
        """The whole calls in index order; ``ProviderResponseError`` (``bad_response``) for
        a call without an id or a tool name, or two calls with one id."""
        calls = [self._finished(index, self._calls[index]) for index in sorted(self._calls)]
        seen: set[str] = set()
        for call in calls:
            if call.id in seen:
                raise bad_response(self.label, f"two tool calls have the id {call.id!r}")
            seen.add(call.id)
        return calls

    def _finished(self, index: int, call: _Partial) -> ToolCall:
        if not call.id:
            raise bad_response(self.label, f"tool call {index} has no id")
        if not call.name:
            raise bad_response(self.label, f"tool call {index} ({call.id}) has no tool name")
        return ToolCall(call.id, call.name, "".join(call.fragments))

    def _same(self, index: int, what: str, known: str | None, given: str | None) -> str | None:
        if not given or given == known:
            return known
        if known:
            why = f"tool call {index} has two {what}s ({known!r}, then {given!r})"
            raise bad_response(self.label, why)
        return given
