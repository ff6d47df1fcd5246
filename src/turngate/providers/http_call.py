"""The edge of one HTTP model call: its two deadlines, and how its failures are worded.

Both SDK-backed providers (:mod:`~turngate.providers.openai_compat`,
:mod:`~turngate.providers.anthropic_messages`) pull the facts out of their SDK's exception
(status, the provider's own message and code, ``Retry-After``) and hand them to
:func:`status_error` or :func:`transport_error`, so one table decides which turngate error a
failure becomes, whichever API it came from:

==========================================  =====================================
failure                                     turngate error
==========================================  =====================================
429, 409, 5xx, 529 overloaded, connection   ProviderError (retried, then next model)
408, timeouts, our deadlines                ProviderTimeoutError (retried)
401, 403                                    ProviderAuthError (next model at once)
4xx saying the context is too long          ProviderRejectedError ``context_too_long``
4xx content policy                          ProviderRejectedError ``content_refused``
any other 4xx                               ProviderRejectedError ``provider_rejected``
a 200 that is not an event stream           ProviderResponseError ``bad_response``
an event that is not JSON, or of the        ProviderResponseError ``bad_response``
wrong shape
a stream that ends before the provider      ProviderResponseError
said it was finished                        ``incomplete_response``
a finished answer with no text, no call     ProviderResponseError ``empty_response``
==========================================  =====================================

The last four are the answers a provider calls successful but that are not a reply: each is
retried, then the next model, like a 5xx, and never delivered as ``ok``.

Every message starts with ``<provider id>/<model>: `` and carries the provider's own words,
cut to :data:`PROVIDER_TEXT_CHARS_MAX` and with the API key blanked out: some servers echo
the key they were given, and these messages reach logs and clients.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Literal, TypeVar

import httpx2

from turngate.errors import (
    ErrorCode,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderTimeoutError,
)

T = TypeVar("T")

PROVIDER_TEXT_CHARS_MAX = 300
"""A provider's own message is cut to this many characters (error pages can be huge)."""
REDACTED = "[redacted]"
SECRET_CHARS_MIN = 8
"""Shorter "keys" are placeholders for local servers, not secrets: blanking every occurrence
of, say, ``none`` would garble the provider's message for nothing."""

CONTEXT_TOO_LONG_CODES = frozenset(
    {"context_length_exceeded", "exceed_context_size_error", "model_context_window_exceeded"}
)
"""Error codes or types that mean the prompt does not fit: OpenAI's, then llama.cpp's."""
CONTEXT_TOO_LONG_PHRASES = (
    "context length",
    "maximum context",
    "context window",
    "context size",
    "prompt is too long",
)
"""Lower-case phrases of servers that send no such code (Anthropic, vLLM, Ollama, ...)."""
CONTENT_REFUSED_CODES = frozenset({"content_policy_violation", "content_filter"})
"""OpenAI's code for a refused prompt, then Azure OpenAI's."""
ERROR_TYPE_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
    "timeout_error": 504,
}
"""An error sent inside a 200 stream has no status of its own: its type stands for one."""
OVERLOADED_STATUS = 529
EVENT_STREAM = "text/event-stream"
PEEK_BYTES_MAX = 2048
"""Of an answer that is not an event stream, this much is read to quote in the error."""


class _End(enum.Enum):
    END = "end"


END = _End.END
"""What :func:`next_event` returns at the end of the stream (``None`` is a possible event:
the SDKs turn ``data: null`` into it)."""


def provider_text(text: str, api_key: str | None) -> str:
    """The provider's own message, fit for a log line: one line, bounded, key blanked out."""
    if api_key and len(api_key) >= SECRET_CHARS_MIN:
        text = text.replace(api_key, REDACTED)
    text = " ".join(text.split())
    if len(text) > PROVIDER_TEXT_CHARS_MAX:
        text = text[: PROVIDER_TEXT_CHARS_MAX - 3] + "..."
    return text or "(no message)"


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The provider's ``Retry-After`` hint in seconds (``retry-after-ms`` first), if it sent one.

    An HTTP-date form is ignored rather than read against the wall clock: the chain's own
    backoff applies then.
    """
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def status_error(
    label: str,
    status: int,
    message: str,
    *,
    codes: Collection[str] = (),
    retry_after: float | None = None,
) -> ProviderError:
    """The turngate error for an HTTP error response (or an error event inside a stream).

    ``label`` is ``<provider id>/<model>``; ``message`` the provider's own (already passed
    through :func:`provider_text`); ``codes`` its machine-readable code and type, if any.
    """
    if not 400 <= status < 600:
        status = next((ERROR_TYPE_STATUS[c] for c in codes if c in ERROR_TYPE_STATUS), status)
    if status == 429:
        return ProviderError(f"{label}: rate limited (429): {message}", retry_after_s=retry_after)
    if status == OVERLOADED_STATUS:
        return ProviderError(f"{label}: overloaded (529): {message}", retry_after_s=retry_after)
    if status >= 500:
        return ProviderError(f"{label}: HTTP {status}: {message}", retry_after_s=retry_after)
    if status in (401, 403):
        return ProviderAuthError(f"{label}: credentials refused (HTTP {status}): {message}")
    if status == 408:
        return ProviderTimeoutError(f"{label}: request timed out (HTTP 408): {message}")
    if status == 409:
        # A conflict is transient on these APIs (OpenAI's SDK retries 408, 409, 429 and 5xx
        # by its own policy), so it is retried like a 5xx rather than failing the turn.
        return ProviderError(f"{label}: HTTP 409: {message}", retry_after_s=retry_after)
    if 400 <= status < 500:
        lowered = message.lower()
        if CONTEXT_TOO_LONG_CODES.intersection(codes) or any(
            phrase in lowered for phrase in CONTEXT_TOO_LONG_PHRASES
        ):
            return ProviderRejectedError(
                f"{label}: context too long (HTTP {status}): {message}",
                code=ErrorCode.CONTEXT_TOO_LONG,
            )
        if CONTENT_REFUSED_CODES.intersection(codes):
            return ProviderRejectedError(
                f"{label}: content refused (HTTP {status}): {message}",
                code=ErrorCode.CONTENT_REFUSED,
            )
        return ProviderRejectedError(f"{label}: request rejected (HTTP {status}): {message}")
    # An error event of unknown type inside a stream, or a status no API should send.
    return ProviderError(f"{label}: provider error (HTTP {status}): {message}")


def transport_error(
    label: str, cause: BaseException | None, *, timed_out: bool, api_key: str | None
) -> ProviderError:
    """The turngate error for a connection that failed, dropped or timed out under the SDK."""
    detail = ""
    if cause is not None and str(cause):
        detail = f" ({type(cause).__name__}: {provider_text(str(cause), api_key)})"
    if timed_out:
        return ProviderTimeoutError(f"{label}: request timed out{detail}")
    return ProviderError(f"{label}: connection failed{detail}")


def refused_error(label: str, why: str) -> ProviderRejectedError:
    """The model declined to answer (a refusal stop, or the provider's content filter)."""
    return ProviderRejectedError(f"{label}: content refused: {why}", code=ErrorCode.CONTENT_REFUSED)


def response_error(label: str, why: str, code: ErrorCode) -> ProviderResponseError:
    """An answer that is not a reply: cut off, empty, or unreadable (see the table above)."""
    return ProviderResponseError(f"{label}: {why}", code=code)


def bad_response(label: str, why: str) -> ProviderResponseError:
    """An answer that cannot be read: not an event stream, or an event of the wrong shape."""
    return response_error(label, why, ErrorCode.BAD_RESPONSE)


def check_finished(label: str, *, finished: bool, has_output: bool, stop_signal: str) -> None:
    """Refuse an answer that ended without the provider's ``stop_signal`` or without any
    output (text or a tool call).

    A reply is delivered only when the provider said it was complete: a body that just ends
    (a proxy's timeout, a crashed server) would otherwise pass part of an answer, or none,
    for the whole of it.
    """
    if not finished:
        why = f"the answer stopped before the model finished it (no {stop_signal})"
        raise response_error(label, why, ErrorCode.INCOMPLETE_RESPONSE)
    if not has_output:
        why = "the model finished without any text"
        raise response_error(label, why, ErrorCode.EMPTY_RESPONSE)


async def require_event_stream(label: str, response: httpx2.Response, api_key: str | None) -> None:
    """Refuse a ``200`` that is not an event stream, quoting the start of what it was.

    The SDKs would read, say, an HTML error page as a stream with no events in it: an empty
    answer that looks finished. The caller bounds this call (it may read the body).
    """
    content_type = response.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() == EVENT_STREAM:
        return
    peek = bytearray()
    async with aclosing(response.aiter_bytes()) as parts:
        async for part in parts:
            peek += part
            if len(peek) >= PEEK_BYTES_MAX:
                break
    text = provider_text(peek[:PEEK_BYTES_MAX].decode("utf-8", errors="replace"), api_key)
    kind = provider_text(content_type, api_key) if content_type else "none"
    why = f"the answer is not an event stream (HTTP {response.status_code}, content-type {kind})"
    raise bad_response(label, f"{why}: {text}")


async def next_event(label: str, events: AsyncIterator[T]) -> T | Literal[_End.END]:
    """The stream's next event as the SDK parsed it, or :data:`END`.

    The SDKs parse each event's data with ``json.loads`` and let its error through: that is
    the provider's malformed answer, not a bug of ours, so it becomes ``bad_response``.
    """
    try:
        return await anext(events, END)
    except json.JSONDecodeError as exc:
        raise bad_response(label, f"an event's data is not JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise bad_response(label, "an event is not UTF-8 text") from None


class CallDeadlines:
    """The two deadlines of one model call: its first token, and its end.

    Both are fixed when the call starts. Each await on the provider sits under
    :meth:`bounded`, which applies the first-token deadline until :meth:`token_arrived` and
    the total one after. A deadline is never held across a ``yield``: a timeout armed there
    would cancel whatever the consumer was doing between two deltas, not the provider.
    """

    def __init__(self, label: str, first_token_timeout_s: float, total_timeout_s: float) -> None:
        self.label = label
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        # asyncio.timeout() computes "now + delay" on the running loop's clock: the
        # simulator's virtual clock drives these deadlines, and no provider reads a clock.
        self._first_token_at = _deadline_in(first_token_timeout_s)
        self._total_at = _deadline_in(total_timeout_s)
        self._token_arrived = False

    def token_arrived(self) -> None:
        """The first token is here: from now on only the total deadline applies."""
        self._token_arrived = True

    @asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Bound one await on the provider; past its deadline, raise ProviderTimeoutError."""
        first = not self._token_arrived and self._first_token_at < self._total_at
        deadline = asyncio.timeout_at(self._first_token_at if first else self._total_at)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            if first:
                why = f"no first token within {self.first_token_timeout_s:g}s (first_token_timeout)"
            else:
                why = f"not finished within {self.total_timeout_s:g}s (total_timeout)"
            raise ProviderTimeoutError(f"{self.label}: {why}") from None


def _deadline_in(delay_s: float) -> float:
    when = asyncio.timeout(delay_s).when()
    assert when is not None  # a timeout made from a number always has a deadline
    return when
