"""OpenAI-compatible chat completions, streamed, through the official ``openai`` SDK.

Works with OpenAI itself and with servers that speak its API (llama.cpp, Ollama, vLLM,
Groq, ...). The SDK's own retries are off: retrying, and moving to another model, is the
:class:`~turngate.providers.fallback.FallbackChain`'s job, with one policy for every provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from turngate.config import ProviderConfig
from turngate.errors import ProviderError
from turngate.providers.base import ChatMessage, ProviderRequest
from turngate.providers.http_call import (
    CallDeadlines,
    provider_text,
    refused_error,
    retry_after_s,
    status_error,
    transport_error,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_API_KEY = "no-key"
"""Sent when no key is configured (local servers ignore it). The SDK refuses an empty key
and, given none, would read ``OPENAI_API_KEY`` and send a real OpenAI key to whatever server
this is."""


class OpenAICompatProvider:
    """One model at an OpenAI-compatible endpoint; yields the reply's text deltas."""

    def __init__(self, config: ProviderConfig, model: str, api_key: str | None) -> None:
        self.config = config
        self.model = model
        self.name = f"{config.id}/{model}"
        self._api_key = api_key
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

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str]:
        """Send the request's messages; yield each non-empty ``delta.content`` in order."""
        deadlines = CallDeadlines(
            self.name, self.config.first_token_timeout, self.config.total_timeout
        )
        try:
            async with deadlines.bounded():
                chunks = await self._client.chat.completions.create(
                    model=self.model,
                    messages=[_message(m) for m in request.messages],
                    # max_completion_tokens, not max_tokens: OpenAI's reasoning models refuse
                    # the latter, and compatible servers that lack the former ignore it.
                    max_completion_tokens=self.config.max_tokens,
                    stream=True,
                )
            # The stream is closed on every way out, cancellation included, so that an
            # aborted turn hangs up on the server instead of leaving it generating.
            async with chunks:
                refusal: list[str] = []
                while True:
                    async with deadlines.bounded():
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    for choice in chunk.choices:
                        if choice.delta.refusal:
                            refusal.append(choice.delta.refusal)
                        if choice.finish_reason == "content_filter":
                            raise refused_error(self.name, "stopped by the content filter")
                        if choice.delta.content:
                            deadlines.token_arrived()
                            yield choice.delta.content
                if refusal:
                    raise refused_error(self.name, provider_text("".join(refusal), self._api_key))
        except (openai.OpenAIError, httpx2.RequestError) as exc:
            # `from None`: the SDK's exception may carry what the server echoed (a key, the
            # prompt); the translated message is the one that travels.
            raise self.translate(exc) from None

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
        if isinstance(exc, openai.APIError):
            # An error event inside a 200 stream: no status, but a type such as server_error.
            return status_error(
                self.name, 200, provider_text(_own_message(exc), self._api_key), codes=_codes(exc)
            )
        if isinstance(exc, openai.ContentFilterFinishReasonError):
            return refused_error(self.name, "stopped by the content filter")
        return ProviderError(f"{self.name}: {provider_text(str(exc), self._api_key)}")


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


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
