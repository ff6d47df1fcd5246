"""Anthropic's Messages API, streamed, through the official ``anthropic`` SDK.

System messages go to the ``system`` parameter (the API takes the conversation's instructions
there, not as a turn). Tool calls and results take the API's block shapes
(:func:`request_messages`). The SDK's own retries are off: retrying, and moving to another model,
is the :class:`~turngate.providers.fallback.FallbackChain`'s job.

A reply counts only when the stream reached ``message_stop`` and had text; a stream that just
ends, an answer that is not an event stream, and events of the wrong shape are provider
errors (see :mod:`~turngate.providers.http_call`). The SDK builds events without validating
them, so the fields read here are checked one by one.

A finished reply ends with a :class:`~turngate.providers.base.Finish`: the ``stop_reason`` of
its ``message_delta`` in OpenAI's words (:data:`STOP_REASONS`), and the call's token usage.

Token usage comes in ``message_start`` (``message.usage``) and ``message_delta`` (``usage``),
whose counts are running totals: the last value of each counter is the call's. The prompt's
tokens are ``input_tokens`` plus the cache's (``cache_creation_input_tokens``,
``cache_read_input_tokens``), as OpenAI's ``prompt_tokens`` counts cached tokens too. A count
that cannot be read is ignored: usage is a report, never a reason to lose a finished reply.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

import anthropic
import httpx2
from anthropic.types import (
    MessageParam,
    TextBlockParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)

from turngate.config import ProviderConfig
from turngate.errors import ProviderError
from turngate.providers.base import (
    ChatMessage,
    Finish,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    Usage,
)
from turngate.providers.endpoints import ANTHROPIC_BASE_URL
from turngate.providers.http_call import (
    END,
    CallDeadlines,
    bad_response,
    check_finished,
    next_event,
    provider_text,
    refused_error,
    require_event_stream,
    retry_after_s,
    status_error,
    transport_error,
)

NO_API_KEY = "no-key"
"""Sent when no key is configured (a local proxy, say). Given none, the SDK would look for
credentials in the environment and in profile files, and send those instead."""
SYSTEM_SEPARATOR = "\n\n"
STOP_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
"""Anthropic's stop reasons that have an OpenAI name, which a Finish carries; any other
(``pause_turn``, ...) is passed on as Anthropic said it."""


class AnthropicProvider:
    """One Claude model through the Messages API; yields the reply's text deltas, then its
    :class:`~turngate.providers.base.Finish`."""

    def __init__(self, config: ProviderConfig, model: str, api_key: str | None) -> None:
        self.config = config
        self.model = model
        self.name = f"{config.id}/{model}"
        self._api_key = api_key
        self._client = anthropic.AsyncAnthropic(
            # Explicit, so that ANTHROPIC_BASE_URL in the environment cannot redirect calls.
            base_url=config.base_url or ANTHROPIC_BASE_URL,
            api_key=api_key or NO_API_KEY,
            max_retries=0,
            # The SDK's socket timeouts are a backstop; the call's real deadlines are ours.
            timeout=anthropic.Timeout(config.total_timeout, connect=config.connect_timeout),
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider({self.name!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the client's connection pool (at shutdown)."""
        await self._client.close()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Send the request's messages; yield each non-empty text delta in order, then the
        answer's :class:`~turngate.providers.base.Finish`."""
        deadlines = CallDeadlines(
            self.name, self.config.first_token_timeout, self.config.total_timeout
        )
        system, messages = request_messages(request.messages)
        answer = _Answer()
        try:
            async with deadlines.bounded():
                events = await self._client.messages.create(
                    model=self.model,
                    max_tokens=self.config.max_tokens,
                    messages=messages,
                    system=system or anthropic.omit,
                    stream=True,
                )
            # Closed on every way out, cancellation included: an aborted turn hangs up.
            async with events:
                async with deadlines.bounded():
                    await require_event_stream(self.name, events.response, self._api_key)
                while True:
                    async with deadlines.bounded():
                        event = await next_event(self.name, events)
                    if event is END:
                        # Read to the end of the body, past message_stop, like the OpenAI
                        # SDK past [DONE]: a connection left mid-body cannot be reused.
                        break
                    if text := answer.take(self.name, event):
                        deadlines.token_arrived()
                        yield TextDelta(text)
                answer.check(self.name)
        except (anthropic.AnthropicError, httpx2.RequestError) as exc:
            # `from None`: the SDK's exception may carry what the server echoed; the
            # translated message is the one that travels.
            raise self.translate(exc) from None
        # Only a finished answer has a Finish, yielded once the response is closed: a failed
        # call's token count is not a reply's.
        yield answer.finish()

    def translate(self, exc: anthropic.AnthropicError | httpx2.RequestError) -> ProviderError:
        """The one place an ``anthropic`` SDK (or transport) exception becomes a turngate error."""
        if isinstance(exc, httpx2.RequestError):
            # Inside a stream the SDK lets transport errors through untranslated.
            return transport_error(
                self.name,
                exc,
                timed_out=isinstance(exc, httpx2.TimeoutException),
                api_key=self._api_key,
            )
        if isinstance(exc, anthropic.APIStatusError):
            # An `error` event inside a stream arrives as a status error of the 200 response;
            # its type (overloaded_error, ...) then says what it is.
            return status_error(
                self.name,
                exc.status_code,
                provider_text(exc.api_message or exc.message, self._api_key),
                codes=(exc.type,) if exc.type else (),
                retry_after=retry_after_s(exc.response.headers),
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return transport_error(
                self.name,
                exc.__cause__,
                timed_out=isinstance(exc, anthropic.APITimeoutError),
                api_key=self._api_key,
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            # Only with strict validation on (it is off): an event the SDK itself refused.
            return bad_response(self.name, "an event of the wrong shape")
        if isinstance(exc, anthropic.APIError):
            return ProviderError(f"{self.name}: {provider_text(exc.message, self._api_key)}")
        return ProviderError(f"{self.name}: {provider_text(str(exc), self._api_key)}")


_NO_FIELD = object()
"""What ``getattr`` gives for a field an event does not have at all."""
USAGE_COUNTERS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
"""The counters of an event's ``usage`` that make up a call's :class:`Usage`."""


@dataclass
class _Answer:
    """What the stream has said so far: whether it had text, why and whether it stopped,
    and the usage it reported."""

    has_text: bool = False
    stopped: bool = False
    stop_reason: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    """The last value of each usage counter the stream reported (they are running totals)."""

    def take(self, label: str, event: object) -> str | None:
        """Note ``event``; its text, if any, to pass on.

        Event types this code does not know are skipped: Anthropic adds new ones and asks
        clients to ignore them. An event without a type, or a known one with fields of the
        wrong type, is ``bad_response``.
        """
        kind = getattr(event, "type", None)
        if not isinstance(kind, str):
            raise bad_response(label, "an event without a type")
        if kind == "content_block_delta":
            text = _text(label, getattr(event, "delta", None))
            self.has_text = self.has_text or bool(text)
            return text
        if kind == "message_start":
            self._note_usage(getattr(getattr(event, "message", None), "usage", None))
        elif kind == "message_delta":
            self._note_usage(getattr(event, "usage", None))
            stop_reason = getattr(getattr(event, "delta", None), "stop_reason", _NO_FIELD)
            if stop_reason is _NO_FIELD or not isinstance(stop_reason, str | None):
                raise bad_response(label, "a message_delta without a stop_reason")
            if stop_reason == "refusal":
                raise refused_error(label, "the model declined (stop_reason refusal)")
            self.stop_reason = stop_reason or self.stop_reason
        elif kind == "message_stop":
            # After "max_tokens" too: an answer cut by the output budget is finished.
            self.stopped = True
        return None

    def check(self, label: str) -> None:
        """At the end of the stream: refuse a cut-off or an empty answer."""
        check_finished(
            label, finished=self.stopped, has_text=self.has_text, stop_signal="message_stop"
        )

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

    def _note_usage(self, usage: object) -> None:
        for name in USAGE_COUNTERS:
            # Counters a given event does not carry, or carries as null, keep their value.
            value = getattr(usage, name, None)
            if _is_count(value):
                self.counters[name] = value


def _is_count(value: object) -> TypeGuard[int]:
    # bool is an int to Python, never a count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(label: str, delta: object) -> str | None:
    """The text of a content block's delta; None for other deltas (thinking, tool input)."""
    delta_type = getattr(delta, "type", None)
    if not isinstance(delta_type, str):
        raise bad_response(label, "a content_block_delta without a typed delta")
    if delta_type != "text_delta":
        return None
    text = getattr(delta, "text", None)
    if not isinstance(text, str):
        raise bad_response(label, "a text_delta whose text is not text")
    return text


def request_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[MessageParam]]:
    """The ``system`` text and the ``messages`` of a Messages API request.

    The system messages are joined into ``system``. An assistant message's tool calls are
    ``tool_use`` blocks after its text; their ``input`` is the call's arguments as a JSON
    object, or ``{}`` when the model's arguments were not one (the API takes nothing else;
    the call's result says what was wrong with them). Tool results are ``tool_result``
    blocks of a *user* message, the consecutive ones in one message: the API wants every
    result of an assistant message in the user message right after it. Other consecutive
    messages of one role are sent as they are, which the API joins into one turn.
    """
    system = SYSTEM_SEPARATOR.join(m.content for m in messages if m.role == "system")
    params: list[MessageParam] = []
    chat = (m for m in messages if m.role != "system")
    for are_results, run in itertools.groupby(chat, key=lambda m: m.role == "tool"):
        if are_results:
            params.append({"role": "user", "content": [_tool_result(m) for m in run]})
        else:
            params.extend(_message(m) for m in run)
    return system, params


def _message(message: ChatMessage) -> MessageParam:
    if message.role == "assistant" and message.tool_calls:
        blocks: list[TextBlockParam | ToolUseBlockParam] = []
        if message.content:  # the API refuses an empty text block
            blocks.append({"type": "text", "text": message.content})
        blocks.extend(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": call.arguments_object() or {},
            }
            for call in message.tool_calls
        )
        return {"role": "assistant", "content": blocks}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _tool_result(message: ChatMessage) -> ToolResultBlockParam:
    assert message.tool_call_id is not None  # a tool message names its call (ChatMessage)
    return {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "content": message.content,
        "is_error": message.is_error,
    }
