"""Wire shapes of the HTTP API, and the one mapping from error codes to HTTP statuses.

A request body is validated into a :class:`ChatSendBody`; every refusal names the field and
carries a stable code. An :class:`~turngate.core.turn.Outcome` becomes a response body here and
nowhere else.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from turngate.core.keys import IDEMPOTENCY_KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from turngate.core.keys import SessionKey, parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.turn import Outcome, TurnState
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    RequestError,
)

ERROR_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_FIELD: 422,
    ErrorCode.MISSING_FIELD: 422,
    ErrorCode.UNKNOWN_FIELD: 422,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.INVALID_SESSION_KEY: 422,
    ErrorCode.UNKNOWN_AGENT: 422,
    ErrorCode.INVALID_QUEUE_MODE: 422,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
    ErrorCode.BUSY: 429,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.SUPERSEDED: 409,
    ErrorCode.STALLED: 409,
    ErrorCode.RUN_TIMEOUT: 409,
    ErrorCode.USER_ABORT: 409,
    ErrorCode.SHUTDOWN: 503,
    ErrorCode.TURN_EXPIRED: 504,
    ErrorCode.INTERRUPTED: 502,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.PROVIDER_TIMEOUT: 502,
    ErrorCode.PROVIDER_AUTH: 502,
    ErrorCode.PROVIDER_REJECTED: 502,
    ErrorCode.CONTEXT_TOO_LONG: 502,
    ErrorCode.CONTENT_REFUSED: 502,
    ErrorCode.ALL_MODELS_FAILED: 502,
    ErrorCode.INCOMPLETE_RESPONSE: 502,
    ErrorCode.EMPTY_RESPONSE: 502,
    ErrorCode.BAD_RESPONSE: 502,
    ErrorCode.MAX_STEPS: 502,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.STALE_EPOCH: 502,
    ErrorCode.ILLEGAL_TRANSITION: 500,
    ErrorCode.STORE_ERROR: 500,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.STATE_DIR_IN_USE: 503,
    ErrorCode.STATE_DIR_UNUSABLE: 503,
    ErrorCode.CHANNEL_UNAVAILABLE: 502,
    ErrorCode.DELIVERY_REFUSED: 502,
    ErrorCode.CHANNEL_REFUSED: 502,
    ErrorCode.INTERNAL: 500,
}
"""Status for a refused request with this code (every code has one; a test checks)."""

TERMINAL_HTTP_STATUS: dict[TurnState, int] = {
    TurnState.REPLIED: 200,
    TurnState.FAILED: 502,
    TurnState.ABORTED: 409,
    TurnState.REJECTED: 429,
    TurnState.EXPIRED: 504,
}
"""Status of ``/chat.send`` for each terminal state of its turn."""

WIRE_STATUS: dict[TurnState, str] = {
    TurnState.ACCEPTED: "accepted",
    TurnState.QUEUED: "queued",
    TurnState.RUNNING: "running",
    TurnState.REPLIED: "ok",
    TurnState.FAILED: "failed",
    TurnState.ABORTED: "aborted",
    TurnState.REJECTED: "rejected",
    TurnState.EXPIRED: "expired",
}
"""The ``status`` a client sees for each turn state."""

M = TypeVar("M", bound=BaseModel)

TIMEOUT_MS_MAX = 86_400_000
"""Longest turn deadline a request may ask for (a day), in ``timeoutMs``."""
JSON_INT_DIGITS_MAX = 4300
"""Longest integer a body or frame may spell. No field takes more than a few digits; this
is Python's default int-string limit, made ours."""


class ChatSendBody(BaseModel):
    """``POST /chat.send``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sessionKey: StrictStr
    message: StrictStr
    idempotencyKey: Annotated[StrictStr, Field(pattern=IDEMPOTENCY_KEY_PATTERN)] | None = None
    queueMode: StrictStr | None = None
    wait: StrictBool = True
    timeoutMs: Annotated[StrictInt, Field(ge=1, le=TIMEOUT_MS_MAX)] | None = None


class ChatAbortBody(BaseModel):
    """``POST /chat.abort``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sessionKey: StrictStr
    runId: StrictStr | None = None


class SessionBody(BaseModel):
    """A request that names one session (``POST /sessions/unstick``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sessionKey: StrictStr


class CronRunBody(BaseModel):
    """``POST /cron/run``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    job: StrictStr


def parse_json(raw: bytes | str, what: str = "body") -> Any:
    """Parse an HTTP body or a WebSocket frame (``what`` names it in errors).

    Every way the text can fail to be JSON we accept (bad syntax, not UTF-8, nested too
    deeply, an integer over :data:`JSON_INT_DIGITS_MAX` digits) is a :class:`RequestError`
    with ``invalid_json``; nothing else escapes.
    """
    try:
        return json.loads(raw, parse_int=_bounded_int)
    except RecursionError:
        raise RequestError(f"{what}: JSON nested too deeply", code=ErrorCode.INVALID_JSON) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _bounded_int's refusal
        raise RequestError(f"{what}: not valid JSON ({exc})", code=ErrorCode.INVALID_JSON) from exc


def _bounded_int(text: str) -> int:
    # Our own limit, so the answer does not depend on the interpreter's int-string limit
    # (PYTHONINTMAXSTRDIGITS may lift it, and then parsing gets quadratic).
    digits = len(text) - text.startswith("-")
    if digits > JSON_INT_DIGITS_MAX:
        raise ValueError(f"an integer of {digits} digits; at most {JSON_INT_DIGITS_MAX}")
    return int(text)


def validate(model: type[M], data: Any) -> M:
    """Validate ``data`` as ``model``; the first problem becomes an error naming its field."""
    if not isinstance(data, dict):
        raise RequestError(
            f"body: expected a JSON object, got {type(data).__name__}",
            code=ErrorCode.INVALID_JSON,
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        kind = error["type"]
        if kind == "missing":
            raise InvalidFieldError(field, "required", code=ErrorCode.MISSING_FIELD) from None
        if kind == "extra_forbidden":
            raise InvalidFieldError(
                field, "unknown field; see the API reference", code=ErrorCode.UNKNOWN_FIELD
            ) from None
        raise InvalidFieldError(field, error["msg"]) from None


def parse_session(text: str) -> SessionKey:
    """The session key of a request (errors name ``sessionKey``)."""
    return parse_session_key(text)


def parse_queue_mode(text: str | None, default: QueueMode) -> QueueMode:
    """The queue mode of a request, or ``default``."""
    if text is None:
        return default
    try:
        return QueueMode(text)
    except ValueError:
        modes = ", ".join(mode.value for mode in QueueMode)
        raise InvalidFieldError(
            "queueMode",
            f"unknown mode {text[:40]!r}; one of {modes}",
            code=ErrorCode.INVALID_QUEUE_MODE,
        ) from None


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    """``{"error": {"code", "message"}}``."""
    return {"error": {"code": code.value, "message": message}}


def outcome_body(outcome: Outcome, session_key: str) -> dict[str, Any]:
    """The response body of a turn that ended."""
    body: dict[str, Any] = {
        "runId": outcome.turn_id,
        "sessionKey": session_key,
        "status": WIRE_STATUS[outcome.state],
    }
    if outcome.merged:
        body["mergedInto"] = outcome.run_id
    if outcome.reply is not None:
        body["reply"] = outcome.reply
    if outcome.code is not None:
        body.update(error_body(outcome.code, outcome.message))
    return body
