"""The :class:`Provider` protocol: a model call that streams its reply as text deltas.

The runtime runs a provider under the turn's lease and cancels it to abort; HTTP providers
also apply their own per-call deadlines (``first_token_timeout``, ``total_timeout``), always
within that lease. Providers raise :class:`~turngate.errors.ProviderError` (or a subclass)
for anything that went wrong on their side; any other exception is a bug and is reported as
``internal``.

Token usage travels beside the text, not in it: a provider that learns what a call used
reports it into the request's :class:`UsageMeter` (``request.usage.add(...)``). This keeps
:meth:`Provider.stream` a stream of text until providers yield typed events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from turngate.core.turn import Usage

__all__ = [
    "ChatMessage",
    "Provider",
    "ProviderRequest",
    "Role",
    "Usage",
    "UsageMeter",
    "closing",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation sent to a model."""

    role: Role
    content: str


class UsageMeter:
    """The token usage reported for a request's model call(s), added up.

    Mutable on purpose, inside a frozen request: the provider reports into it while the
    caller holds the same request, and ``dataclasses.replace`` keeps the same meter (pass a
    new one to count a call apart, as the fallback chain does for each attempt).
    """

    __slots__ = ("_total",)

    def __init__(self) -> None:
        self._total: Usage | None = None

    def __repr__(self) -> str:
        return f"UsageMeter({self._total!r})"

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        """One call's usage, as the provider reported it."""
        self.add_usage(Usage(prompt_tokens, completion_tokens))

    def add_usage(self, usage: Usage | None) -> None:
        """Add ``usage`` (another meter's total, say); None adds nothing."""
        if usage is not None:
            self._total = usage if self._total is None else self._total + usage

    def total(self) -> Usage | None:
        """Everything reported so far; None when no provider reported any usage."""
        return self._total


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What a run asks of a model: the bounded transcript plus the new user message(s).

    ``usage`` is where the provider reports the tokens the call used, if it learns them.
    """

    session_key: str
    run_id: str
    messages: Sequence[ChatMessage]
    usage: UsageMeter = field(default_factory=UsageMeter, compare=False)

    def new_user_messages(self) -> list[str]:
        """The user messages after the last non-user message: what this turn asks."""
        new: list[str] = []
        for message in reversed(self.messages):
            if message.role != "user":
                break
            new.append(message.content)
        return new[::-1]


class Provider(Protocol):
    """A model client."""

    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[str]:
        """Yield the reply's text in order, as it is produced."""
        ...


@asynccontextmanager
async def closing(deltas: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """Close an abandoned model call's stream here and now, not whenever it is collected."""
    try:
        yield deltas
    finally:
        if isinstance(deltas, AsyncGenerator):
            await deltas.aclose()
