"""Anthropic's Messages API, streamed, through the official ``anthropic`` SDK.

System messages go to the ``system`` parameter (the API takes the conversation's instructions
there, not as a turn). The SDK's own retries are off: retrying, and moving to another model,
is the :class:`~turngate.providers.fallback.FallbackChain`'s job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
from anthropic.types import MessageParam

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

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
NO_API_KEY = "no-key"
"""Sent when no key is configured (a local proxy, say). Given none, the SDK would look for
credentials in the environment and in profile files, and send those instead."""
SYSTEM_SEPARATOR = "\n\n"


class AnthropicProvider:
    """One Claude model through the Messages API; yields the reply's text deltas."""

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

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str]:
        """Send the request's messages; yield each non-empty text delta in order."""
        deadlines = CallDeadlines(
            self.name, self.config.first_token_timeout, self.config.total_timeout
        )
        system = SYSTEM_SEPARATOR.join(m.content for m in request.messages if m.role == "system")
        messages = [_message(m) for m in request.messages if m.role != "system"]
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
                while True:
                    async with deadlines.bounded():
                        event = await anext(events, None)
                    if event is None:
                        # Read to the end of the body, past message_stop, like the OpenAI
                        # SDK past [DONE]: a connection left mid-body cannot be reused.
                        break
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            deadlines.token_arrived()
                            yield event.delta.text
                    elif event.type == "message_delta" and event.delta.stop_reason == "refusal":
                        raise refused_error(self.name, "the model declined (stop_reason refusal)")
        except (anthropic.AnthropicError, httpx2.RequestError) as exc:
            # `from None`: the SDK's exception may carry what the server echoed; the
            # translated message is the one that travels.
            raise self.translate(exc) from None

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
        if isinstance(exc, anthropic.APIError):
            return ProviderError(f"{self.name}: {provider_text(exc.message, self._api_key)}")
        return ProviderError(f"{self.name}: {provider_text(str(exc), self._api_key)}")


def _message(message: ChatMessage) -> MessageParam:
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}
