"""The answers of the OpenAI-compatible surface (see :mod:`turngate.gateway.openai_api`):
completions' usage, turn outcomes and refusals in OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse, Response

from turngate.core.turn import Outcome, TurnState, Usage
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    TurngateError,
    UnknownAgentError,
)
from turngate.gateway.frames import ERROR_HTTP_STATUS, TERMINAL_HTTP_STATUS

log = logging.getLogger("turngate.gateway")


MODEL_NOT_FOUND = "model_not_found"
"""The OpenAI code for an unknown ``model`` (this surface's own; not a turngate ErrorCode)."""


NO_RETRY = {"x-should-retry": "false"}
"""Tells OpenAI SDKs not to retry: the message was accepted, and a retry would resend it."""


def usage_body(usage: Usage | None) -> dict[str, int]:
    """OpenAI's ``usage`` object; zeros when the provider reported no usage."""
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def outcome_error_body(outcome: Outcome) -> dict[str, Any]:
    code = outcome.code or ErrorCode.INTERNAL
    message = outcome.message or f"turn {outcome.turn_id} ended {outcome.state}"
    return openai_error_body(TERMINAL_HTTP_STATUS[outcome.state], code, message)


def outcome_error(outcome: Outcome) -> Response:
    # A rejected turn left no trace, so the client's own retry policy applies; any other
    # outcome is final, and retrying would send the message again as a new turn.
    return JSONResponse(
        outcome_error_body(outcome),
        TERMINAL_HTTP_STATUS[outcome.state],
        headers={} if outcome.state is TurnState.REJECTED else NO_RETRY,
    )


def refusal(exc: TurngateError) -> Response:
    """A refused request in the OpenAI error shape."""
    if isinstance(exc, UnknownAgentError):
        return openai_error_response(404, MODEL_NOT_FOUND, exc.message, param="model")
    status = ERROR_HTTP_STATUS[exc.code]
    param = exc.field if isinstance(exc, InvalidFieldError) else None
    return openai_error_response(
        400 if status == 422 else status, exc.code, exc.message, param=param
    )


def openai_error_body(
    status: int, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param"}}``."""
    error = {"message": message, "type": _error_type(status), "code": str(code), "param": param}
    return {"error": error}


def openai_error_response(
    status: int, code: str, message: str, *, param: str | None = None, headers: Any = None
) -> Response:
    return JSONResponse(openai_error_body(status, code, message, param), status, headers=headers)


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"
