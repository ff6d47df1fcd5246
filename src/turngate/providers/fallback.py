"""A fallback chain: models tried in order, each retried a few times, behind one Provider.

One function, :func:`disposition`, classifies every failure:

================================  ===========  ============================================
failure                           disposition  what the chain does
================================  ===========  ============================================
ProviderError, ProviderTimeout,   RETRY        same model again, up to its ``max_retries``,
ProviderResponseError (cut off,                after a backoff; then the next model
empty, unreadable answer)
ProviderAuthError                 NEXT         the next model at once
ALL_MODELS_FAILED (a nested       NEXT         the next model at once (it already retried)
chain)
ProviderRejectedError             FAIL         the turn fails with the provider's message
anything else, CancelledError     PROPAGATE    never caught: a bug, or an abort / fence /
                                               shutdown, which are never retried
================================  ===========  ============================================

Each attempt's text and tool-call deltas are passed on as they come. A model whose answer
had no output at all (nothing, or only empty text) failed too: the chain raises
``empty_response`` for it, a ProviderResponseError, whatever kind of provider it is. Once a
model's output has gone out, though, no failure is retried or handed to the next model: that
would splice a second answer onto the first, so the turn fails with the error.

The :class:`~turngate.providers.base.Finish`, and the token usage it carries, is the
delivered attempt's only: the chain holds each attempt's Finish back until that attempt has
ended well (with output, without an error), then yields it as its own last event, naming the
model that answered (``model``; a plain ``stop`` when the model sent none). A failed
attempt was billed too, but what it reports is neither whole (a stream cut off mid-way never
sends its usage) nor about the reply the client gets; the usage a client sees is that of the
answer it got, as from the model directly.

The backoff is exponential with full jitter, ``uniform(0, retry_backoff_s * 2**attempt)``,
or the provider's own ``Retry-After`` when it sent one, capped at :data:`BACKOFF_MAX_S`. The
sleeps are ``asyncio.sleep`` (the simulator's virtual clock drives them) and the jitter
comes only from the injected ``random.Random``, so a seed replays them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from turngate.errors import (
    ErrorCode,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderResponseError,
)
from turngate.providers.base import (
    Finish,
    Provider,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    closing,
)

log = logging.getLogger("turngate.providers")

BACKOFF_MAX_S = 30.0
"""No wait between two attempts is longer, whatever the provider asks."""


class Disposition(enum.StrEnum):
    """What the chain does after a failed attempt."""

    RETRY = "retry"
    """The same model again (after a backoff) while it has retries left, then the next."""
    NEXT = "next"
    """The next model at once."""
    FAIL = "fail"
    """The turn fails with this error; no model is tried again."""
    PROPAGATE = "propagate"
    """Not a provider failure: the exception goes up unchanged."""


def disposition(exc: BaseException) -> Disposition:
    """The one classification of a failure of a model call."""
    if not isinstance(exc, ProviderError):
        return Disposition.PROPAGATE
    if isinstance(exc, ProviderRejectedError):
        return Disposition.FAIL
    if isinstance(exc, ProviderAuthError) or exc.code is ErrorCode.ALL_MODELS_FAILED:
        return Disposition.NEXT
    return Disposition.RETRY


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One model of a chain, with its retry budget."""

    ref: str
    """``<provider id>/<model>``: how the model is named in logs and in the final error."""
    provider: Provider
    max_retries: int
    retry_backoff_s: float


@runtime_checkable
class Closable(Protocol):
    """A provider that holds connections to close at shutdown."""

    async def aclose(self) -> None:
        """Close the provider's connections."""
        ...


class FallbackChain:
    """A Provider that tries its links in order until one streams a reply."""

    def __init__(self, links: Sequence[ChainLink], rng: random.Random | None = None) -> None:
        if not links:
            raise ValueError("a fallback chain needs at least one model")
        self.links = tuple(links)
        self.name = " -> ".join(link.ref for link in self.links)
        # A Random of its own, never the module's: only what is injected decides the jitter.
        self._rng = rng if rng is not None else random.Random()

    def __repr__(self) -> str:
        return f"FallbackChain({self.name!r})"

    async def aclose(self) -> None:
        """Close every link's provider that holds connections (at shutdown)."""
        closed: set[int] = set()
        for link in self.links:
            if isinstance(link.provider, Closable) and id(link.provider) not in closed:
                closed.add(id(link.provider))
                await link.provider.aclose()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield the answer of the first model that gives one; see the module docstring.

        An empty text delta is passed on (the run may count it as progress) but is no output:
        it neither counts as an answer nor stops a retry, since a retry splices nothing onto
        it.
        """
        failures: list[tuple[str, str]] = []
        for index, link in enumerate(self.links):
            for attempt in range(link.max_retries + 1):
                streamed = False
                # Held back until the attempt ended well: a failed one's never counts.
                finish: Finish | None = None
                try:
                    async with closing(link.provider.stream(request)) as events:
                        async for event in events:
                            if isinstance(event, Finish):
                                finish = event
                                continue
                            streamed = streamed or _is_output(event)
                            yield event
                    if not streamed:
                        raise ProviderResponseError(
                            f"{link.ref}: the model finished without any text",
                            code=ErrorCode.EMPTY_RESPONSE,
                        )
                    yield replace(finish or Finish("stop"), model=link.ref)
                    return
                except ProviderError as exc:
                    if streamed:
                        # Output already went out: the client saw it, and the run reported
                        # it as progress. Another attempt would splice a second, different
                        # reply onto the first; so the turn fails with this error instead.
                        self._warn(
                            request,
                            "%s failed after part of its answer went out: %s; not retried",
                            link.ref,
                            _reason(link.ref, exc),
                        )
                        raise
                    if disposition(exc) is Disposition.FAIL:
                        raise
                    delay_s = self._after_failure(request, index, attempt, exc, failures)
                    if delay_s is None:
                        break
                    await asyncio.sleep(delay_s)
        raise ProviderError(_summary(failures), code=ErrorCode.ALL_MODELS_FAILED)

    def _after_failure(
        self,
        request: ProviderRequest,
        index: int,
        attempt: int,
        exc: ProviderError,
        failures: list[tuple[str, str]],
    ) -> float | None:
        """Record a failed attempt of link ``index`` and say so; the wait before retrying
        the same model, or None to move on to the next one."""
        link = self.links[index]
        reason = _reason(link.ref, exc)
        failures.append((link.ref, reason))
        if disposition(exc) is Disposition.RETRY and attempt < link.max_retries:
            delay_s = self._backoff_s(link, attempt, exc)
            self._warn(
                request,
                "%s failed: %s; retry %d of %d in %.3fs",
                link.ref,
                reason,
                attempt + 1,
                link.max_retries,
                delay_s,
            )
            return delay_s
        if index + 1 < len(self.links):
            self._warn(
                request,
                "%s failed: %s; falling back to %s",
                link.ref,
                reason,
                self.links[index + 1].ref,
            )
        return None

    def _backoff_s(self, link: ChainLink, attempt: int, exc: ProviderError) -> float:
        if exc.retry_after_s is not None:
            return min(BACKOFF_MAX_S, exc.retry_after_s)
        return min(BACKOFF_MAX_S, self._rng.uniform(0, link.retry_backoff_s * 2**attempt))

    @staticmethod
    def _warn(request: ProviderRequest, message: str, *args: object) -> None:
        log.warning(
            "run %s: " + message,
            request.run_id,
            *args,
            extra={"run_id": request.run_id, "session_key": request.session_key},
        )


def _is_output(event: TextDelta | ToolCallDelta) -> bool:
    """Whether ``event`` is part of an answer: text, or a tool call (an answer too)."""
    return not isinstance(event, TextDelta) or bool(event.text)


def _reason(ref: str, exc: ProviderError) -> str:
    # Provider messages start with their own "<provider id>/<model>: "; the summary names
    # the model once.
    return exc.message.removeprefix(f"{ref}: ")


def _summary(failures: Sequence[tuple[str, str]]) -> str:
    """``all models failed: a/m: rate limited (429): ... x3; b/n: HTTP 500: ...``."""
    parts: list[str] = []
    run: tuple[str, str] | None = None
    count = 0
    for failure in [*failures, None]:
        if failure == run:
            count += 1
            continue
        if run is not None:
            parts.append(f"{run[0]}: {run[1]}" + (f" x{count}" if count > 1 else ""))
        run, count = failure, 1
    return "all models failed: " + "; ".join(parts)
