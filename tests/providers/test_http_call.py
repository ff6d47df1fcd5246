"""Every failure either SDK can raise becomes a turngate ProviderError, by one table."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.secrets import LIVE_LOOKING_KEY as KEY
from turngate.config_providers import ProviderConfig
from turngate.errors import (
    ErrorCode,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderTimeoutError,
)
from turngate.providers.anthropic_messages import AnthropicProvider
from turngate.providers.http_call import (
    PROVIDER_TEXT_CHARS_MAX,
    provider_text,
    retry_after_s,
    status_error,
)
from turngate.providers.openai_compat import OpenAICompatProvider

REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")

# (status, provider message, codes) -> (error class, code)
TABLE: list[tuple[int, str, tuple[str, ...], type[ProviderError], ErrorCode]] = [
    (429, "slow down", (), ProviderError, ErrorCode.PROVIDER_ERROR),
    (500, "oops", (), ProviderError, ErrorCode.PROVIDER_ERROR),
    (502, "bad gateway", (), ProviderError, ErrorCode.PROVIDER_ERROR),
    (503, "unavailable", (), ProviderError, ErrorCode.PROVIDER_ERROR),
    (529, "Overloaded", ("overloaded_error",), ProviderError, ErrorCode.PROVIDER_ERROR),
    (409, "conflict", (), ProviderError, ErrorCode.PROVIDER_ERROR),
    (408, "too slow", (), ProviderTimeoutError, ErrorCode.PROVIDER_TIMEOUT),
    (401, "bad key", (), ProviderAuthError, ErrorCode.PROVIDER_AUTH),
    (403, "forbidden", (), ProviderAuthError, ErrorCode.PROVIDER_AUTH),
    (400, "bad request", (), ProviderRejectedError, ErrorCode.PROVIDER_REJECTED),
    (404, "no such model", (), ProviderRejectedError, ErrorCode.PROVIDER_REJECTED),
    (422, "unprocessable", (), ProviderRejectedError, ErrorCode.PROVIDER_REJECTED),
    (400, "too many tokens", ("context_length_exceeded",), ProviderRejectedError,
     ErrorCode.CONTEXT_TOO_LONG),
    (400, "the request exceeds the available context size", (), ProviderRejectedError,
     ErrorCode.CONTEXT_TOO_LONG),
    (400, "prompt is too long: 210000 tokens > 200000 maximum", ("invalid_request_error",),
     ProviderRejectedError, ErrorCode.CONTEXT_TOO_LONG),
    (400, "This model's maximum context length is 8192 tokens", (), ProviderRejectedError,
     ErrorCode.CONTEXT_TOO_LONG),
    (400, "refused", ("content_policy_violation",), ProviderRejectedError,
     ErrorCode.CONTENT_REFUSED),
    # Error events inside a 200 stream: the type stands for the status.
    (200, "Overloaded", ("overloaded_error",), ProviderError, ErrorCode.PROVIDER_ERROR),
    (200, "prompt is too long", ("invalid_request_error",), ProviderRejectedError,
     ErrorCode.CONTEXT_TOO_LONG),
    (200, "something odd", ("mystery",), ProviderError, ErrorCode.PROVIDER_ERROR),
]  # fmt: skip


@pytest.mark.parametrize(("status", "message", "codes", "cls", "code"), TABLE)
def test_each_status_becomes_its_turngate_error(
    status: int, message: str, codes: tuple[str, ...], cls: type[ProviderError], code: ErrorCode
) -> None:
    error = status_error("p/m", status, message, codes=codes)
    assert type(error) is cls
    assert error.code is code
    assert error.message.startswith("p/m: ")
    assert error.message.endswith(message)


def test_the_provider_s_text_is_one_bounded_line_without_the_key() -> None:
    text = provider_text(f"bad key {KEY}\n\n  try   again " + "x" * 1000, KEY)
    assert KEY not in text
    assert text.startswith("bad key [redacted] try again x")
    assert len(text) == PROVIDER_TEXT_CHARS_MAX
    # A short placeholder is no secret: blanking it would garble the message.
    assert provider_text("no-key is not a valid key", "no-key") == "no-key is not a valid key"
    assert provider_text("  ", KEY) == "(no message)"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-1"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds_or_milliseconds(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_s(headers) == seconds


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, json=body, headers=headers, request=REQUEST)


def _openai_status(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    body = {"message": f"said {KEY}", "type": "x", "code": None}
    return cls(f"Error code: {status}", response=_response(status, body), body=body)


OpenAIFailure = openai.OpenAIError | httpx2.RequestError
OPENAI_ERRORS: list[tuple[OpenAIFailure, type[ProviderError]]] = [
    (_openai_status(openai.BadRequestError, 400), ProviderRejectedError),
    (_openai_status(openai.AuthenticationError, 401), ProviderAuthError),
    (_openai_status(openai.PermissionDeniedError, 403), ProviderAuthError),
    (_openai_status(openai.NotFoundError, 404), ProviderRejectedError),
    (_openai_status(openai.ConflictError, 409), ProviderError),
    (_openai_status(openai.UnprocessableEntityError, 422), ProviderRejectedError),
    (_openai_status(openai.RateLimitError, 429), ProviderError),
    (_openai_status(openai.InternalServerError, 500), ProviderError),
    (_openai_status(openai.InternalServerError, 503), ProviderError),
    (openai.APIConnectionError(request=REQUEST), ProviderError),
    (openai.APITimeoutError(request=REQUEST), ProviderTimeoutError),
    (openai.APIError(f"stream said {KEY}", REQUEST, body={"type": "server_error"}), ProviderError),
    (openai.ContentFilterFinishReasonError(), ProviderRejectedError),
    (openai.OpenAIError(f"anything else {KEY}"), ProviderError),
    (httpx2.ReadTimeout("read timed out", request=REQUEST), ProviderTimeoutError),
    (httpx2.RemoteProtocolError("peer closed", request=REQUEST), ProviderError),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("exc", "cls"), OPENAI_ERRORS)
async def test_every_openai_sdk_error_is_translated(
    exc: OpenAIFailure, cls: type[ProviderError]
) -> None:
    provider = OpenAICompatProvider(ProviderConfig(id="o", kind="openai"), "m", KEY)
    try:
        error = provider.translate(exc)
    finally:
        await provider.aclose()
    assert type(error) is cls
    assert error.message.startswith("o/m: ")
    assert KEY not in error.message


def _anthropic_status(
    cls: type[anthropic.APIStatusError], status: int, kind: str
) -> anthropic.APIStatusError:
    body = {"type": "error", "error": {"type": kind, "message": f"said {KEY}"}}
    return cls(f"Error code: {status}", response=_response(status, body), body=body)


AnthropicFailure = anthropic.AnthropicError | httpx2.RequestError
ANTHROPIC_ERRORS: list[tuple[AnthropicFailure, type[ProviderError]]] = [
    (_anthropic_status(anthropic.BadRequestError, 400, "invalid_request_error"),
     ProviderRejectedError),
    (_anthropic_status(anthropic.AuthenticationError, 401, "authentication_error"),
     ProviderAuthError),
    (_anthropic_status(anthropic.PermissionDeniedError, 403, "permission_error"),
     ProviderAuthError),
    (_anthropic_status(anthropic.NotFoundError, 404, "not_found_error"), ProviderRejectedError),
    (_anthropic_status(anthropic.ContentTooLargeError, 413, "request_too_large"),
     ProviderRejectedError),
    (_anthropic_status(anthropic.RateLimitError, 429, "rate_limit_error"), ProviderError),
    (_anthropic_status(anthropic.InternalServerError, 500, "api_error"), ProviderError),
    (_anthropic_status(anthropic.GatewayTimeoutError, 504, "timeout_error"), ProviderError),
    (_anthropic_status(anthropic.OverloadedError, 529, "overloaded_error"), ProviderError),
    (_anthropic_status(anthropic.APIStatusError, 200, "overloaded_error"), ProviderError),
    (anthropic.APIConnectionError(request=REQUEST), ProviderError),
    (anthropic.APITimeoutError(request=REQUEST), ProviderTimeoutError),
    (anthropic.AnthropicError(f"anything else {KEY}"), ProviderError),
    (httpx2.ReadTimeout("read timed out", request=REQUEST), ProviderTimeoutError),
    (httpx2.RemoteProtocolError("peer closed", request=REQUEST), ProviderError),
]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize(("exc", "cls"), ANTHROPIC_ERRORS)
async def test_every_anthropic_sdk_error_is_translated(
    exc: AnthropicFailure, cls: type[ProviderError]
) -> None:
    provider = AnthropicProvider(ProviderConfig(id="a", kind="anthropic"), "m", KEY)
    try:
        error = provider.translate(exc)
    finally:
        await provider.aclose()
    assert type(error) is cls
    assert error.message.startswith("a/m: ")
    assert KEY not in error.message
