"""The :class:`Provider` protocol: a model call that streams its reply as text deltas.

The runtime runs a provider under the turn's lease and cancels it to abort; HTTP providers
also apply their own per-call deadlines (``first_token_timeout``, ``total_timeout``), always
within that lease. Providers raise :class:`~turngate.errors.ProviderError` (or a subclass)
for anything that went wrong on their side; any other exception is a bug and is reported as
``internal``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation sent to a model."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What a run asks of a model: the bounded transcript plus the new user message(s)."""

    session_key: str
    run_id: str
    messages: Sequence[ChatMessage]

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
