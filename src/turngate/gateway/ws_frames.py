"""Wire shapes of the gateway WebSocket protocol (OpenClaw's, protocol 4), and the one
mapping from turngate's error codes to its error frames.

Frames are JSON objects: ``req`` from the client, ``res`` and ``event`` from the server.
See ../shared/openclaw-protocol.md. Where turngate differs, it is on purpose: every ``runId``
a client sends gets exactly one terminal ``chat`` event, carrying the true outcome.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode

PROTOCOL_VERSION = 4
PRE_HANDSHAKE_BYTES_MAX = 65_536

WS_ERROR_CLASS: dict[ErrorCode, str] = {
    ErrorCode.UNAUTHORIZED: "FORBIDDEN",
    ErrorCode.SHUTDOWN: "UNAVAILABLE",
    ErrorCode.RATE_LIMITED: "UNAVAILABLE",
    ErrorCode.STORE_ERROR: "UNAVAILABLE",
    ErrorCode.STORAGE_UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.INTERNAL: "UNAVAILABLE",
}
"""OpenClaw's error class for a code; anything not listed is ``INVALID_REQUEST``."""

RETRYABLE = frozenset(
    {
        ErrorCode.SHUTDOWN,
        ErrorCode.RATE_LIMITED,
        ErrorCode.STORE_ERROR,
        ErrorCode.STORAGE_UNAVAILABLE,
    }
)

ERROR_KIND: dict[ErrorCode, str] = {
    ErrorCode.CONTEXT_TOO_LONG: "context_length",
    ErrorCode.CONTENT_REFUSED: "refusal",
    ErrorCode.TURN_EXPIRED: "timeout",
    ErrorCode.PROVIDER_TIMEOUT: "timeout",
    ErrorCode.RUN_TIMEOUT: "timeout",
    ErrorCode.BUSY: "rate_limit",
    ErrorCode.QUEUE_FULL: "rate_limit",
}
"""``errorKind`` of a ``chat`` error event, by code (else ``unknown``)."""


class RequestFrame(BaseModel):
    """``{"type":"req","id","method","params"}``."""

    model_config = ConfigDict(extra="ignore")

    type: StrictStr
    id: StrictStr = Field(min_length=1, max_length=128)
    method: StrictStr = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class ConnectParams(BaseModel):
    """The ``connect`` request's params (fields turngate does not use are accepted)."""

    model_config = ConfigDict(extra="allow")

    minProtocol: StrictInt
    maxProtocol: StrictInt
    client: dict[str, Any] = Field(default_factory=dict)
    role: StrictStr = "operator"
    scopes: list[StrictStr] = Field(default_factory=list)
    auth: dict[str, Any] = Field(default_factory=dict)


class ChatSendParams(BaseModel):
    """``chat.send`` (and ``agent``) params. Unknown keys are refused, as OpenClaw does."""

    model_config = ConfigDict(extra="forbid")

    sessionKey: StrictStr = Field(min_length=1, max_length=512)
    message: StrictStr
    idempotencyKey: StrictStr = Field(min_length=1, max_length=128)
    queueMode: StrictStr | None = None
    timeoutMs: StrictInt | None = Field(default=None, ge=1, le=86_400_000)
    agentId: StrictStr | None = None
    attachments: list[Any] | None = None
    thinking: Any = None
    deliver: Any = None
    originatingChannel: Any = None
    replyToId: Any = None
    extraSystemPrompt: Any = None
    label: Any = None
    channel: Any = None
    to: Any = None
    expectFinal: Any = None


class AgentParams(ChatSendParams):
    """``agent`` params, as OpenClaw's CLI sends them (``timeout`` in seconds). The method
    has many options turngate does not act on; they are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    timeout: StrictInt | None = Field(default=None, ge=1, le=86_400)


class SessionParams(BaseModel):
    """Params naming a session, with optional paging (``chat.history``, ``chat.abort``)."""

    model_config = ConfigDict(extra="ignore")

    sessionKey: StrictStr
    runId: StrictStr | None = None
    limit: StrictInt | None = Field(default=None, ge=1, le=1000)


class ListParams(BaseModel):
    """``sessions.list``."""

    model_config = ConfigDict(extra="ignore")

    limit: StrictInt = Field(default=50, ge=1, le=1000)
    offset: StrictInt = Field(default=0, ge=0)
    activeOnly: bool = False


def response(request_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A successful ``res`` frame."""
    return {"type": "res", "id": request_id, "ok": True, "payload": payload}


def error_response(request_id: str, code: ErrorCode, message: str) -> dict[str, Any]:
    """A failed ``res`` frame; ``details.code`` carries turngate's stable code."""
    return {"type": "res", "id": request_id, "ok": False, "error": error_shape(code, message)}


def error_shape(code: ErrorCode, message: str) -> dict[str, Any]:
    """``{"code","message","details","retryable"}``."""
    return {
        "code": WS_ERROR_CLASS.get(code, "INVALID_REQUEST"),
        "message": message,
        "details": {"code": code.value},
        "retryable": code in RETRYABLE,
    }


def assistant_message(text: str, timestamp_ms: int) -> dict[str, Any]:
    """The ``message`` shape of chat events and history."""
    return {
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "timestamp": timestamp_ms,
    }


def terminal_chat(outcome: Outcome, session_key: str, timestamp_ms: int) -> dict[str, Any]:
    """The one terminal ``chat`` event payload of a run id (``seq`` is added by the caller)."""
    payload: dict[str, Any] = {"runId": outcome.turn_id, "sessionKey": session_key}
    if outcome.merged:
        payload["mergedInto"] = outcome.run_id
    if outcome.state is TurnState.REPLIED:
        assert outcome.reply is not None
        payload.update(
            state="final",
            message=assistant_message(outcome.reply, timestamp_ms),
            stopReason="stop",
        )
    elif outcome.state is TurnState.ABORTED:
        payload.update(
            state="aborted",
            errorMessage=outcome.message,
            stopReason=outcome.code.value if outcome.code else "aborted",
        )
    else:
        code = outcome.code or ErrorCode.INTERNAL
        payload.update(
            state="error",
            errorMessage=outcome.message,
            errorKind=ERROR_KIND.get(code, "unknown"),
            errorDetail={"code": code.value, "status": outcome.state.value},
        )
    return payload
