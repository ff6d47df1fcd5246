"""Wire shapes of the gateway WebSocket protocol (OpenClaw's, protocol 4), and the one
mapping from turngate's error codes to its error frames.

Frames are JSON objects: ``req`` from the client, ``res`` and ``event`` from the server.
See docs/websocket-protocol.md. Where turngate differs, it is on purpose: every ``runId``
a client sends gets exactly one terminal ``chat`` event, carrying the true outcome.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from turngate.core.keys import SessionKey, check_agent, parse_session_key
from turngate.core.transcript import EntryKind, ToolCall
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, InvalidFieldError, InvalidSessionKeyError
from turngate.gateway.frames import IDEMPOTENCY_KEY_PATTERN, TIMEOUT_MS_MAX
from turngate.runtime.activity import ToolActivity, ToolStarted
from turngate.store.base import SessionRecord, TranscriptEntry

PROTOCOL_VERSION = 4
PRE_HANDSHAKE_BYTES_MAX = 65_536
PROTOCOL_NUMBER_MAX = 65_535
"""Highest ``minProtocol``/``maxProtocol`` a client may name (turngate speaks 4)."""
PAGE_ROWS_MAX = 1000
"""Most rows one ``limit`` may ask for (``chat.history``, ``sessions.list``)."""
SESSIONS_OFFSET_MAX = 1_000_000_000
"""Furthest ``sessions.list`` may page: past any real session count, and well inside the
store's 64-bit integers (an unbounded offset overflowed SQLite)."""
AGENT_TIMEOUT_S_MAX = TIMEOUT_MS_MAX // 1000
"""The ``agent`` method's ``timeout`` (seconds) has the same ceiling as ``timeoutMs``."""

ProtocolNumber = Annotated[StrictInt, Field(ge=1, le=PROTOCOL_NUMBER_MAX)]

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


class ConnectAuth(BaseModel):
    """``connect``'s ``auth``: the gateway's shared secret, as ``token`` or ``password``.

    Typed, so that a secret that is not valid text (JSON can spell a lone surrogate) is
    refused here, naming the field, rather than failing the comparison."""

    model_config = ConfigDict(extra="allow")

    token: StrictStr | None = None
    password: StrictStr | None = None

    @field_validator("token", "password")
    @classmethod
    def _unicode_text(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("not valid Unicode text (an unpaired surrogate)") from None
        return value

    @property
    def secret(self) -> str | None:
        """The secret presented, if any."""
        return self.token or self.password


class ConnectParams(BaseModel):
    """The ``connect`` request's params (fields turngate does not use are accepted)."""

    model_config = ConfigDict(extra="allow")

    minProtocol: ProtocolNumber
    maxProtocol: ProtocolNumber
    client: dict[str, Any] = Field(default_factory=dict)
    role: StrictStr = "operator"
    scopes: list[StrictStr] = Field(default_factory=list)
    auth: ConnectAuth = Field(default_factory=ConnectAuth)


class ChatSendParams(BaseModel):
    """``chat.send`` (and ``agent``) params. Unknown keys are refused, as OpenClaw does."""

    model_config = ConfigDict(extra="forbid")

    sessionKey: StrictStr = Field(min_length=1, max_length=512)
    message: StrictStr
    idempotencyKey: StrictStr = Field(pattern=IDEMPOTENCY_KEY_PATTERN)
    """Validated as HTTP's is: it becomes the ``runId``."""
    queueMode: StrictStr | None = None
    timeoutMs: StrictInt | None = Field(default=None, ge=1, le=TIMEOUT_MS_MAX)
    agentId: StrictStr | None = None
    sessionId: Any = None
    """OpenClaw's id of a session's lifecycle; a session here is its key alone."""
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

    timeout: StrictInt | None = Field(default=None, ge=1, le=AGENT_TIMEOUT_S_MAX)


class SessionParams(BaseModel):
    """Params naming a session, with optional paging (``chat.history``, ``chat.abort``); a
    ``limit`` above :data:`PAGE_ROWS_MAX` is clamped to it."""

    model_config = ConfigDict(extra="ignore")

    sessionKey: StrictStr
    runId: StrictStr | None = None
    limit: StrictInt | None = Field(default=None, ge=1)

    @field_validator("limit")
    @classmethod
    def _clamped(cls, value: int | None) -> int | None:
        return None if value is None else min(value, PAGE_ROWS_MAX)


class ListParams(BaseModel):
    """``sessions.list`` (and the list of ``sessions.subscribe``). A ``limit`` above
    :data:`PAGE_ROWS_MAX` is clamped to it: clients ask for "everything" with a large one."""

    model_config = ConfigDict(extra="ignore")

    limit: StrictInt = Field(default=50, ge=1)
    offset: StrictInt = Field(default=0, ge=0, le=SESSIONS_OFFSET_MAX)
    activeOnly: bool = False
    agentId: StrictStr | None = None
    """Only the sessions of this agent."""
    spawnedBy: StrictStr | None = None
    """Only the sessions this one spawned: turngate's sessions spawn none."""

    @field_validator("limit")
    @classmethod
    def _clamped(cls, value: int) -> int:
        return min(value, PAGE_ROWS_MAX)


MAIN_SESSION = "agent:main:main"
"""What OpenClaw's clients mean by the session ``"main"``."""


def client_session(text: str, field: str = "sessionKey") -> SessionKey:
    """The session a client names in ``field``: a session key, or ``"main"``
    (:data:`MAIN_SESSION`); refused naming ``field``."""
    try:
        return parse_session_key(MAIN_SESSION if text == "main" else text)
    except InvalidSessionKeyError as exc:
        if field == "sessionKey":
            raise
        raise InvalidSessionKeyError(exc.message.replace("sessionKey", field, 1)) from None


class AgentScopeParams(BaseModel):
    """Params naming an agent, or a session of one (``agent.identity.get``, ``models.list``,
    ``chat.metadata``); neither is the default agent, ``main``."""

    model_config = ConfigDict(extra="ignore")

    agentId: StrictStr | None = Field(default=None, min_length=1, max_length=64)
    sessionKey: StrictStr | None = Field(default=None, min_length=1, max_length=512)

    def agent_id(self) -> str:
        """The agent meant: ``agentId``, else the agent of ``sessionKey``, else ``main``."""
        if self.sessionKey is not None:
            key = client_session(self.sessionKey)
            check_agent(key, self.agentId)
            return key.agent_id
        return self.agentId or "main"


CRON_PAGE_MAX = 200
"""Cron jobs or fires per page (OpenClaw's own bound); a larger ``limit`` is taken as this."""


class CronPageParams(BaseModel):
    """A page of cron jobs or fires: ``limit`` (clamped to :data:`CRON_PAGE_MAX`) from
    ``offset``, of one agent's jobs or all."""

    model_config = ConfigDict(extra="ignore")

    agentId: StrictStr | None = None
    limit: StrictInt = Field(default=50, ge=1)
    offset: StrictInt = Field(default=0, ge=0)

    @field_validator("limit")
    @classmethod
    def _clamped(cls, value: int) -> int:
        return min(value, CRON_PAGE_MAX)


class CronListParams(CronPageParams):
    """``cron.list``: a page of jobs; OpenClaw's other filters (schedule kinds, triggers,
    run statuses) select nothing turngate's jobs lack, so they are ignored."""

    query: StrictStr | None = None
    enabled: Literal["all", "enabled", "disabled"] = "all"
    sortBy: Literal["nextRunAtMs", "updatedAtMs", "name"] = "nextRunAtMs"
    sortDir: Literal["asc", "desc"] = "asc"
    compact: bool = False


class CronRunParams(BaseModel):
    """``cron.run``: the job to fire now, as ``id`` or ``jobId``."""

    model_config = ConfigDict(extra="ignore")

    id: StrictStr | None = None
    jobId: StrictStr | None = None

    def job_id(self) -> str:
        """The job named; refused, naming ``id``, when neither field is given."""
        job_id = self.id or self.jobId
        if not job_id:
            raise InvalidFieldError("id", "name the cron job to run")
        return job_id


class CronRunsParams(CronPageParams):
    """``cron.runs``: a page of past fires, of one job (``id``/``jobId``) or all."""

    id: StrictStr | None = None
    jobId: StrictStr | None = None
    status: Literal["all", "ok", "error", "skipped"] = "all"
    sortDir: Literal["asc", "desc"] = "desc"


class ObserverParams(BaseModel):
    """``sessions.observer.visibility``: whether the client shows the sessions' activity."""

    model_config = ConfigDict(extra="ignore")

    visible: bool


class KeyParams(BaseModel):
    """Params naming a session by ``key`` (``sessions.describe``,
    ``sessions.messages.subscribe``); ``"main"`` is the default agent's main session."""

    model_config = ConfigDict(extra="ignore")

    key: StrictStr = Field(min_length=1, max_length=512)

    def session_key(self) -> SessionKey:
        """The session ``key`` names (refused, naming ``key``, if it names none)."""
        return client_session(self.key, "key")


def model_defaults(model_ref: str) -> dict[str, Any]:
    """The ``defaults`` of a session list or a chat's start (OpenClaw's shape): the model an
    agent's sessions use, and that a session's model is chosen per session."""
    provider, _, model = model_ref.partition("/")
    return {
        "modelProvider": provider,
        "model": model,
        "contextTokens": None,
        "modelSelectionTarget": "session",
    }


def session_row(record: SessionRecord) -> dict[str, Any]:
    """A session as ``sessions.list``, ``sessions.describe`` and ``sessions.subscribe`` show
    it."""
    return {
        "key": record.key,
        "kind": "direct",
        "agentId": record.agent_id,
        "updatedAt": int(record.updated_wall * 1000),
        "createdAt": int(record.created_wall * 1000),
        "hasActiveRun": record.lease_run_id is not None,
        "activeRunIds": [record.lease_run_id] if record.lease_run_id else [],
        "turns": record.turns_total,
        "openTurns": record.turns_open,
    }


def encode_frame(frame: dict[str, Any]) -> str:
    """``frame`` as JSON text that can go on the wire. Text can hold a lone surrogate that
    UTF-8 cannot carry (a model's stream may split a pair across two deltas; JSON can spell
    one): such a frame is sent ASCII-escaped instead of failing the writer."""
    text = json.dumps(frame, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(frame)
    return text


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


def history_message(entry: TranscriptEntry) -> dict[str, Any]:
    """A transcript entry as ``chat.history`` shows it, in the shapes OpenClaw's Control UI
    reads: user and assistant text as ``{role, content: [text block]}``; tool calls as an
    assistant message of ``toolCall`` blocks; a tool result as a ``toolResult`` message."""
    item = entry.item
    if item.kind is EntryKind.TOOL_CALLS:
        body: dict[str, Any] = {
            "role": "assistant",
            "content": [_tool_call_block(call) for call in item.tool_calls],
        }
    elif item.kind is EntryKind.TOOL_RESULT:
        body = {
            "role": "toolResult",
            "toolCallId": item.call_id,
            "toolName": item.tool_name,
            "content": [{"type": "text", "text": item.text}],
            "isError": item.is_error,
        }
    else:
        body = {"role": item.kind.value, "content": [{"type": "text", "text": item.text}]}
    body["timestamp"] = int(entry.at_wall * 1000)
    body["runId"] = entry.run_id
    # What OpenClaw's clients key a message by, so that the history they reload after a run
    # and the run they watched are one message, not two.
    stamp: dict[str, Any] = {"id": str(entry.seq), "seq": entry.seq, "runId": entry.run_id}
    if item.kind is EntryKind.USER:
        stamp["idempotencyKey"] = item.turn_id or entry.run_id
    body["__openclaw"] = stamp
    return body


def _tool_call_block(call: ToolCall) -> dict[str, Any]:
    """One ``toolCall`` block: its arguments as a JSON object, or as the model's text when
    they are not one."""
    arguments = call.arguments_object()
    return {
        "type": "toolCall",
        "id": call.id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
    }


def tool_event(
    run_id: str, session_key: str, activity: ToolActivity, timestamp_ms: int
) -> dict[str, Any]:
    """An ``agent`` event payload (``stream: "tool"``) for a tool call beginning (``phase:
    "start"``, with its arguments) or returning (``phase: "result"``, with its result and
    ``isError``), in the shape OpenClaw's clients read."""
    call = activity.call
    data: dict[str, Any] = {"toolCallId": call.id, "name": call.name}
    if isinstance(activity, ToolStarted):
        arguments = call.arguments_object()
        data.update(phase="start", args=call.arguments if arguments is None else arguments)
    else:
        data.update(
            phase="result",
            result={"content": [{"type": "text", "text": activity.result.content}]},
            isError=activity.result.is_error,
            durationMs=round(activity.duration_s * 1000),
        )
    return {
        "runId": run_id,
        "sessionKey": session_key,
        "stream": "tool",
        "ts": timestamp_ms,
        "data": data,
    }


def pending_chat(run_id: str, session_key: str, code: ErrorCode, message: str) -> dict[str, Any]:
    """The terminal ``chat`` error payload of a run whose outcome this connection cannot
    relay (shutting down, no outcome in time, a turngate bug); the turn itself goes on and
    ``GET /turns/{runId}`` shows how it ends."""
    return {
        "runId": run_id,
        "sessionKey": session_key,
        "state": "error",
        "errorMessage": message,
        "errorKind": "unknown",
        "errorDetail": {"code": code.value, "status": "pending"},
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
