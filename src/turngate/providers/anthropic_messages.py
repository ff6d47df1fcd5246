"""Anthropic's Messages API, streamed, through the official ``anthropic`` SDK.

System messages go to the ``system`` parameter (the API takes the conversation's instructions
there, not as a turn). Tool calls and results take the API's block shapes
(:func:`request_messages`). The SDK's own retries are off: retrying, and moving to another model,
is the :class:`~turngate.providers.fallback.FallbackChain`'s job.

A reply counts only when the stream reached ``message_stop`` and had text or tool calls; a
stream that just ends, an answer that is not an event stream, and events of the wrong shape
are provider errors (see :mod:`~turngate.providers.http_call`). Events are read, and their
fields checked, by :mod:`~turngate.providers.anthropic_events`.

Tools the request offers go in ``tools`` (:func:`request_tools`); the model's ``tool_use``
blocks come back as :class:`~turngate.providers.base.ToolCallDelta` pieces. A request without
tools sends no ``tools`` at all.

A finished reply ends with a :class:`~turngate.providers.base.Finish`: the ``stop_reason`` of
its ``message_delta`` in OpenAI's words (``tool_use`` is ``tool_calls``), and the call's
token usage.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence

import anthropic
import httpx2
from anthropic.types import (
    MessageParam,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)

from turngate.config_providers import ProviderConfig
from turngate.errors import ProviderError
from turngate.providers.anthropic_events import Answer
from turngate.providers.base import (
    ChatMessage,
    ProviderEvent,
    ProviderRequest,
    ToolDefinition,
)
from turngate.providers.endpoints import ANTHROPIC_BASE_URL
from turngate.providers.http_call import (
    END,
    CallDeadlines,
    bad_response,
    next_event,
    provider_text,
    require_event_stream,
    retry_after_s,
    status_error,
    transport_error,
)

RawEvents = anthropic.AsyncStream[object]
"""The SDK's event stream, its events left as the JSON objects it parsed (see
:meth:`AnthropicProvider._create`)."""
NO_API_KEY = "no-key"
"""Sent when no key is configured (a local proxy, say). Given none, the SDK would look for
credentials in the environment and in profile files, and send those instead."""
SYSTEM_SEPARATOR = "\n\n"


class AnthropicProvider:
    """One Claude model through the Messages API; yields the reply's text and tool-call
    deltas, then its :class:`~turngate.providers.base.Finish`."""

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
        """Send the request's messages and tools; yield each non-empty text delta and each
        tool-call piece in order, then the answer's :class:`~turngate.providers.base.Finish`."""
        deadlines = CallDeadlines(
            self.name, self.config.first_token_timeout, self.config.total_timeout
        )
        answer = Answer(self.name)
        try:
            async with deadlines.bounded():
                events = await self._create(request)
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
                    for output in answer.take(event):
                        deadlines.token_arrived()
                        yield output
                answer.check()
        except (anthropic.AnthropicError, httpx2.RequestError) as exc:
            # `from None`: the SDK's exception may carry what the server echoed; the
            # translated message is the one that travels.
            raise self.translate(exc) from None
        # Only a finished answer has a Finish, yielded once the response is closed: a failed
        # call's token count is not a reply's.
        yield answer.finish()

    async def _create(self, request: ProviderRequest) -> RawEvents:
        """Start the streamed call: ``messages.create``, its events left as parsed JSON.

        Through ``with_raw_response``, whose ``parse(to=...)`` chooses what the events become:
        plain ``create`` would validate each one into a pydantic model of the
        ``RawMessageStreamEvent`` union, the largest cost of a call after the HTTP client's
        own, and :mod:`~turngate.providers.anthropic_events` checks every field it reads
        either way. The call is otherwise ``create``'s: its body, headers, auth, errors and
        tracing span, and the SDK's SSE parsing (``ping`` skipped, ``error`` events raised
        as status errors). The one difference on the wire is the SDK's own
        ``x-stainless-raw-response`` header, which every ``with_raw_response`` call sends.
        """
        system, messages = request_messages(request.messages)
        response = await self._client.messages.with_raw_response.create(
            model=self.model,
            max_tokens=self.config.max_tokens,
            messages=messages,
            system=system or anthropic.omit,
            tools=request_tools(request.tools) or anthropic.omit,
            stream=True,
        )
        try:
            # For an event stream this only wraps the response; nothing is read yet.
            return await response.parse(to=RawEvents)
        except BaseException:
            await response.close()
            raise

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


def request_tools(tools: Sequence[ToolDefinition]) -> list[ToolParam]:
    """The ``tools`` of a Messages API request: one per definition, its JSON schema as the
    ``input_schema``."""
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "input_schema": dict(tool.parameters),
        }
        for tool in tools
    ]
