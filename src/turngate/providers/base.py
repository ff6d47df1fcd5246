"""The :class:`Provider` protocol: a model call that streams its answer as typed events.

A call yields :class:`TextDelta` events, the reply's text in order, and ends with exactly one
:class:`Finish`, which says why the model stopped and the tokens the call used, if the
provider learned them. A call that fails raises instead, and yields no :class:`Finish`: a
failed call's token count is not a reply's.

A request may offer tools (:class:`ToolDefinition`); the model may then call them instead of,
or after, saying something. Each call arrives as :class:`ToolCallDelta` pieces, interleaved
with those of the answer's other calls, and the answer's :class:`Finish` says ``tool_calls``;
:class:`~turngate.providers.tool_calls.ToolCallAssembler` puts the pieces together. A
request's messages (:class:`ChatMessage`) hold the calls made so far and their results, as a
transcript that has them is sent back to the model.

The runtime runs a provider under the turn's lease and cancels it to abort; HTTP providers
also apply their own per-call deadlines (``first_token_timeout``, ``total_timeout``), always
within that lease. Providers raise :class:`~turngate.errors.ProviderError` (or a subclass)
for anything that went wrong on their side; any other exception is a bug and is reported as
``internal``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from turngate.core.transcript import ToolCall
from turngate.core.turn import Usage

__all__ = [
    "ChatMessage",
    "Finish",
    "Provider",
    "ProviderEvent",
    "ProviderRequest",
    "Role",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "Usage",
    "closing",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation sent to a model.

    An ``assistant`` message may carry ``tool_calls`` (its ``content`` is then the text it
    said along with them, possibly empty). A ``tool`` message is the result of one call: its
    ``content`` is what the tool returned, ``tool_call_id`` the call it answers,
    ``tool_name`` the tool's name, and ``is_error`` whether the call failed. Each provider
    turns these into its API's shapes.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False

    def __post_init__(self) -> None:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls: only an assistant message has them ({self.role})")
        is_tool = self.role == "tool"
        if is_tool != bool(self.tool_call_id) or is_tool != bool(self.tool_name):
            raise ValueError(
                f"tool_call_id, tool_name: present exactly in a tool message ({self.role})"
            )
        if self.is_error and not is_tool:
            raise ValueError(f"is_error: only a tool message has it ({self.role})")

    @classmethod
    def tool_result(
        cls, tool_call_id: str, tool_name: str, content: str, *, is_error: bool = False
    ) -> ChatMessage:
        """The result of the call ``tool_call_id`` of ``tool_name``."""
        return cls(
            "tool", content, tool_call_id=tool_call_id, tool_name=tool_name, is_error=is_error
        )


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool the model may call: its ``name``, what it does (``description``, which the
    model reads to decide when to call it), and its ``parameters`` as a JSON schema object
    (``{"type": "object", "properties": {...}, ...}``). Each provider sends it in its API's
    shape."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What a run asks of a model: the bounded transcript plus the new user message(s), and
    the tools the model may call (none: the request offers no tools at all)."""

    session_key: str
    run_id: str
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolDefinition] = ()

    def new_user_messages(self) -> list[str]:
        """The user messages after the last non-user message: what this turn asks."""
        new: list[str] = []
        for message in reversed(self.messages):
            if message.role != "user":
                break
            new.append(message.content)
        return new[::-1]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the reply's text (possibly empty: still a sign of life)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call the model is making: the first piece of call ``index`` has its
    ``id`` and ``name``; ``arguments`` is the next fragment of its JSON arguments (split
    anywhere, even mid-token)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """The model call ended: why (``stop``, ``length``, ``tool_calls``, ...) and the tokens
    it used, if known.

    The reasons are OpenAI's words; a provider whose API has others maps them to these where
    one means the same (Anthropic's ``end_turn`` is ``stop``, ``max_tokens`` is ``length``).
    """

    reason: str
    usage: Usage | None = None
    model: str = ""
    """Which model answered (``<provider id>/<model>``), when the caller knows it: the
    fallback chain says which of its models it was."""


ProviderEvent: TypeAlias = TextDelta | ToolCallDelta | Finish
"""What a model call yields; see the module docstring for their order."""


class Provider(Protocol):
    """A model client."""

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield the answer's events as they are produced: its text and tool-call deltas in
        order, then one :class:`Finish` if the call ended normally."""
        ...


@asynccontextmanager
async def closing(
    events: AsyncIterator[ProviderEvent],
) -> AsyncIterator[AsyncIterator[ProviderEvent]]:
    """Close an abandoned model call's stream here and now, not whenever it is collected."""
    try:
        yield events
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()
