"""OpenAI-compatible chat completions, streamed, through the official ``openai`` SDK.

Works with OpenAI itself and with servers that speak its API (llama.cpp, Ollama, vLLM,
Groq, ...). The SDK's own retries are off: retrying, and moving to another model, is the
:class:`~turngate.providers.fallback.FallbackChain`'s job, with one policy for every provider.

A reply counts only when a ``finish_reason`` says the model finished it and it has text or
tool calls; a stream that just ends, an answer that is not an event stream, and chunks of the
wrong shape are provider errors (see :mod:`~turngate.providers.http_call`). Chunks are read
field by field by :mod:`~turngate.providers.openai_chunks`.

The request body is built here (:func:`request_body`), the JSON that
``chat.completions.create`` would send, and posted with the client's ``post``: ``create``
would spend a fraction of a millisecond per message of history re-checking the parameters
(see :meth:`OpenAICompatProvider._post`). Everything on the wire stays the SDK's.

Tools the request offers go in ``tools`` as ``function`` tools (:func:`request_tools`); the
model's calls come back as :class:`~turngate.providers.base.ToolCallDelta` pieces. A request
without tools sends no ``tools`` at all (some servers refuse an empty list).

A finished reply ends with a :class:`~turngate.providers.base.Finish`: the ``finish_reason``
of the stream (``stop``, ``length``, ``tool_calls``, ...) and the call's token usage.

Token usage: each call asks for it (``stream_options.include_usage``), and the stream's last
chunk (``choices == []``) carries it. OpenAI, vLLM, llama.cpp, Ollama and Groq honour the
option, and servers that do not know it mostly ignore it (then no usage is reported). A few
refuse it (older Azure OpenAI API versions, strict servers: a 400 or 422 naming
``stream_options``); the provider then sends the call again without it, once, and no longer
asks for usage. Usage that cannot be read is ignored: it is a report, never a reason to lose
a finished reply.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import httpx2
import openai
from openai import AsyncStream
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from turngate.config_providers import ProviderConfig
from turngate.errors import ProviderError
from turngate.providers.base import (
    ChatMessage,
    ProviderEvent,
    ProviderRequest,
    ToolDefinition,
)
from turngate.providers.endpoints import OPENAI_BASE_URL
from turngate.providers.http_call import (
    END,
    CallDeadlines,
    bad_response,
    next_event,
    provider_text,
    refused_error,
    require_event_stream,
    retry_after_s,
    status_error,
    transport_error,
)
from turngate.providers.openai_chunks import Answer, choices, chunk_usage

NO_API_KEY = "no-key"
"""Sent when no key is configured (local servers ignore it). The SDK refuses an empty key
and, given none, would read ``OPENAI_API_KEY`` and send a real OpenAI key to whatever server
this is."""
STREAM_OPTIONS_PARAM = "stream_options"
"""The request parameter that asks for usage; a refusal that names it is not the call's."""
OPTION_REFUSED_STATUSES = (400, 422)
CHAT_COMPLETIONS_PATH = "/chat/completions"
RawChunks = AsyncStream[object]
"""The SDK's event stream, its chunks left as the JSON objects it parsed (``cast_to`` is
``object``): the SDK would otherwise build a ``ChatCompletionChunk`` model for each one, which
costs more than everything else a chunk takes, and :mod:`~turngate.providers.openai_chunks`
checks every field it reads either way."""

log = logging.getLogger("turngate.providers")


class OpenAICompatProvider:
    """One model at an OpenAI-compatible endpoint; yields the reply's text and tool-call
    deltas, then its :class:`~turngate.providers.base.Finish`."""

    def __init__(self, config: ProviderConfig, model: str, api_key: str | None) -> None:
        self.config = config
        self.model = model
        self.name = f"{config.id}/{model}"
        self._api_key = api_key
        self.asks_usage = True
        """False once the server refused ``stream_options``: later calls go without it."""
        self._client = openai.AsyncOpenAI(
            # Explicit, so that OPENAI_BASE_URL in the environment cannot redirect the calls.
            base_url=config.base_url or OPENAI_BASE_URL,
            api_key=api_key or NO_API_KEY,
            max_retries=0,
            # The SDK's socket timeouts are a backstop; the call's real deadlines are ours
            # (CallDeadlines), set on the loop's clock.
            timeout=openai.Timeout(config.total_timeout, connect=config.connect_timeout),
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider({self.name!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        """Close the client's connection pool (at shutdown)."""
        await self._client.close()

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Send the request's messages and tools; yield each non-empty ``delta.content``
        and each tool-call piece in order, then the answer's
        :class:`~turngate.providers.base.Finish`.

        Raise :class:`~turngate.errors.ProviderResponseError` for an answer that is not a
        finished reply (after its output so far, if the stream was cut off).
        """
        deadlines = CallDeadlines(
            self.name, self.config.first_token_timeout, self.config.total_timeout
        )
        answer = Answer(self.name)
        try:
            async with deadlines.bounded():
                chunks = await self._create(request)
            # The stream is closed on every way out, cancellation included, so that an
            # aborted turn hangs up on the server instead of leaving it generating.
            async with chunks:
                async with deadlines.bounded():
                    await require_event_stream(self.name, chunks.response, self._api_key)
                while True:
                    async with deadlines.bounded():
                        chunk = await next_event(self.name, chunks)
                    if chunk is END:
                        break
                    answer.usage = chunk_usage(chunk) or answer.usage
                    for choice in choices(self.name, chunk):
                        for event in answer.take(choice):
                            deadlines.token_arrived()
                            yield event
                answer.check(self._api_key)
        except (openai.OpenAIError, httpx2.RequestError) as exc:
            # `from None`: the SDK's exception may carry what the server echoed (a key, the
            # prompt); the translated message is the one that travels.
            raise self.translate(exc) from None
        # Only a finished answer has a Finish, yielded once the response is closed: a failed
        # call's token count is not a reply's.
        yield answer.finish()

    async def _create(self, request: ProviderRequest) -> RawChunks:
        """Start the streamed call; without ``stream_options`` if the server refuses it."""
        body = request_body(self.model, request, self.config.max_tokens, asks_usage=self.asks_usage)
        try:
            return await self._post(body)
        except openai.APIStatusError as exc:
            if not (self.asks_usage and _refuses_stream_options(exc)):
                raise
        # The refusal was of the option, not of the call: no text went out, so sending the
        # call again is safe; once, since the next attempt no longer carries the option.
        self.asks_usage = False
        log.warning(
            "%s refused %s; calls go without it, and its token usage is not reported",
            self.name,
            STREAM_OPTIONS_PARAM,
            extra={"run_id": request.run_id, "session_key": request.session_key},
        )
        del body[STREAM_OPTIONS_PARAM]
        return await self._post(body)

    async def _post(self, body: dict[str, object]) -> RawChunks:
        """POST ``body`` as ``chat.completions.create(stream=True)`` does, minus its work on
        the parameters.

        ``create`` passes its parameters through the SDK's ``async_maybe_transform``, which
        walks every message against the TypedDicts of the API (a fraction of a millisecond
        per message, on the event loop); the body built here is already the JSON the API
        takes, so it goes straight to the client's ``post``, the method ``create`` itself
        ends in. Everything else stays the SDK's: the URL, headers and bearer auth, the JSON
        encoding, the timeouts, the status errors (``APIStatusError`` and its subclasses),
        and the event stream (SSE parsing, ``error`` events, ``[DONE]``).
        """
        return await self._client.post(
            CHAT_COMPLETIONS_PATH,
            cast_to=object,
            body=body,
            # What `create` asks of the client besides the body: the API key as a bearer token.
            options={"security": {"bearer_auth": True}},
            stream=True,
            stream_cls=RawChunks,
        )

    def translate(self, exc: openai.OpenAIError | httpx2.RequestError) -> ProviderError:
        """The one place an ``openai`` SDK (or transport) exception becomes a turngate error."""
        if isinstance(exc, httpx2.RequestError):
            # Not expected (the SDK wraps them), but a transport failure is never a bug of ours.
            return transport_error(
                self.name,
                exc,
                timed_out=isinstance(exc, httpx2.TimeoutException),
                api_key=self._api_key,
            )
        if isinstance(exc, openai.APIStatusError):
            return status_error(
                self.name,
                exc.status_code,
                provider_text(_own_message(exc), self._api_key),
                codes=_codes(exc),
                retry_after=retry_after_s(exc.response.headers),
            )
        if isinstance(exc, openai.APIConnectionError):
            return transport_error(
                self.name,
                exc.__cause__,
                timed_out=isinstance(exc, openai.APITimeoutError),
                api_key=self._api_key,
            )
        if isinstance(exc, openai.APIResponseValidationError):
            # Only with strict validation on (it is off): a chunk the SDK itself refused.
            return bad_response(self.name, "a chunk of the wrong shape")
        if isinstance(exc, openai.APIError):
            # An error event inside a 200 stream: no status, but a type such as server_error.
            return status_error(
                self.name, 200, provider_text(_own_message(exc), self._api_key), codes=_codes(exc)
            )
        if isinstance(exc, openai.ContentFilterFinishReasonError):
            return refused_error(self.name, "stopped by the content filter")
        return ProviderError(f"{self.name}: {provider_text(str(exc), self._api_key)}")


def _refuses_stream_options(exc: openai.APIStatusError) -> bool:
    """True for a refusal of the ``stream_options`` parameter itself (the server does not
    know it), as opposed to a refusal of the call.

    Read from the error's own fields only (its ``param``, its ``message``, or the ``loc`` of
    a FastAPI-style ``detail``), never from the whole body: some servers echo the request
    in their errors, and the request always names ``stream_options``.
    """
    if exc.status_code not in OPTION_REFUSED_STATUSES or not isinstance(exc.body, dict):
        return False
    body = exc.body
    message = body.get("message")
    if body.get("param") == STREAM_OPTIONS_PARAM or (
        isinstance(message, str) and STREAM_OPTIONS_PARAM in message
    ):
        return True
    detail = body.get("detail")
    return isinstance(detail, list) and any(
        isinstance(item, dict)
        and isinstance(item.get("loc"), list)
        and STREAM_OPTIONS_PARAM in item["loc"]
        for item in detail
    )


def _own_message(exc: openai.APIError) -> str:
    """The provider's own message (``error.message``) rather than the SDK's wrapping of it."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return exc.message


def _codes(exc: openai.APIError) -> tuple[str, ...]:
    return tuple(c for c in (exc.code, exc.type) if c)


def request_body(
    model: str, request: ProviderRequest, max_tokens: int, *, asks_usage: bool
) -> dict[str, object]:
    """The JSON body of a streamed chat completions call, as ``chat.completions.create``
    would send it for the same arguments (same keys, same order).

    ``max_completion_tokens``, not ``max_tokens``: OpenAI's reasoning models refuse the
    latter, and compatible servers that lack the former ignore it. ``stream_options`` asks
    for usage unless the server refused it; ``tools`` is left out when there are none (some
    servers refuse an empty list).
    """
    body: dict[str, object] = {
        "model": model,
        "stream": True,
        "messages": request_messages(request.messages),
        "max_completion_tokens": max_tokens,
    }
    if asks_usage:
        body[STREAM_OPTIONS_PARAM] = {"include_usage": True}
    if request.tools:
        body["tools"] = request_tools(request.tools)
    return body


def request_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """The ``messages`` of a chat completions request: one per message, in order.

    An assistant message's tool calls go in its ``tool_calls`` (its ``content`` is null when
    it said nothing with them), and a tool result is a ``tool`` message naming its call. The
    API has no field for a failed call: the result's content says so.
    """
    return [_message(message) for message in messages]


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "tool":
        assert message.tool_call_id is not None  # a tool message names its call (ChatMessage)
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def request_tools(tools: Sequence[ToolDefinition]) -> list[ChatCompletionFunctionToolParam]:
    """The ``tools`` of a chat completions request: one ``function`` tool per definition.

    ``parallel_tool_calls`` is left to the API's default (on where the server has it): the
    caller runs every call of an answer.
    """
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": dict(tool.parameters),
            },
        }
        for tool in tools
    ]
