"""OpenAI-compatible HTTP: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A completion is one turn, admitted and answered like ``POST /chat.send``; only the wire
shapes differ. What a client should know:

- ``model`` names an agent: ``turngate/<agentId>``, or OpenClaw's ``openclaw/<agentId>``
  (also ``openclaw:<agentId>``); bare ``turngate`` and ``openclaw`` mean agent ``main``.
- The session is the header ``X-Turngate-Session`` (or OpenClaw's ``x-openclaw-session-key``),
  a full key of the model's agent; else ``agent:<agentId>:openai:<user>`` from the OpenAI
  ``user`` field (characters outside the key grammar become ``-``; an over-long ``user`` is
  cut and suffixed with a digest of the whole); else ``agent:<agentId>:openai:default``.
- **Only the last user message is sent.** The gateway keeps each session's transcript itself
  and gives the model that history; the earlier ``messages`` a client re-sends (and its system
  messages) are not used. Content is a string or a list of parts whose ``text`` parts are
  joined with newlines. Other OpenAI parameters (``temperature``, ``tools``, ...) are ignored.
- ``Idempotency-Key`` makes a retry return the first request's outcome instead of a new turn.
- The answer is the turn's true outcome: a ``chat.completion`` (id ``chatcmpl-<runId>``) when
  it replied; otherwise an OpenAI error body with the status ``/chat.send`` would give and the
  turngate code as ``code``. Those carry ``x-should-retry: false`` (the message was accepted,
  and a blind retry would send it again) except ``rejected`` turns, which left no trace.
- Refusals use the OpenAI error shape; validation errors are 400 (OpenAI never answers 422),
  an unknown model is 404 ``model_not_found``, other statuses follow ``ERROR_HTTP_STATUS``.
- ``"stream": true`` answers with server-sent ``chat.completion.chunk`` events, built from the
  run's deltas, then ``[DONE]``; a turn that ends without a reply ends the stream with an
  ``error`` event. A client that disconnects does not cancel its turn. While a stream has
  nothing to send (its turn is queued behind another, or the model is thinking), it sends an
  SSE comment, ``: keep-alive``, every ``SSE_KEEPALIVE_S``, so that proxies and clients do
  not time it out; clients ignore comments.
- ``usage`` is the run's token usage as its provider reported it (a fallback chain counts
  the model that answered; a steered run, all its model calls; a merged turn, the whole run
  it shares). When the provider reported none (the offline echo model, a server that does
  not tell), the counts are zeros: OpenAI clients expect the key. A stream ends with a chunk
  that has ``choices: []`` and ``usage`` when the request asks for it with
  ``stream_options: {"include_usage": true}``, as OpenAI's does.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from turngate.config import GatewayConfig
from turngate.core.keys import SEGMENT_LEN_MAX, SessionKey, is_agent_id, parse_session_key
from turngate.core.turn import TurnState
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    TurngateError,
    UnknownAgentError,
)
from turngate.gateway.admission import Ask, admit, outcome_of
from turngate.gateway.app_state import engine_of
from turngate.gateway.chat_http import read_body
from turngate.gateway.frames import (
    ERROR_HTTP_STATUS,
    IDEMPOTENCY_KEY_PATTERN,
    parse_json,
    validate,
)
from turngate.gateway.openai_answers import (
    NO_RETRY,
    openai_error_response,
    outcome_error,
    refusal,
    usage_body,
)
from turngate.gateway.openai_stream import _sse
from turngate.runtime.engine import Engine

log = logging.getLogger("turngate.gateway")

LANE = "openai"
MODEL_PREFIXES = ("turngate/", "openclaw/", "openclaw:")
DEFAULT_AGENT_MODELS = frozenset({"turngate", "openclaw"})
SESSION_HEADERS = ("x-turngate-session", "x-openclaw-session-key")
MESSAGES_MAX = 10_000


_OUTSIDE_SEGMENT = re.compile(r"[^A-Za-z0-9_.@+=-]")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_DIGEST_CHARS = 16


class ChatMessageIn(BaseModel):
    """One entry of ``messages``; only ``role`` and ``content`` are read."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: StrictStr
    content: Any = None


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage`` is read."""

    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: StrictBool | None = None


class ChatCompletionsBody(BaseModel):
    """``POST /v1/chat/completions``: the fields turngate reads (others are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=MESSAGES_MAX)]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None


def routes() -> list[Route]:
    """The OpenAI-compatible routes, to add to the gateway's route list."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]


# -- handlers ---------------------------------------------------------------------------------


async def list_models(request: Request) -> Response:
    """One model per agent, ``turngate/<agentId>`` (just ``turngate/main`` for an open gateway)."""
    engine = engine_of(request)
    created = int(engine.clock.wall())
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": f"turngate/{agent_id}",
                    "object": "model",
                    "created": created,
                    "owned_by": "turngate",
                }
                for agent_id in engine.agents.ids or ["main"]
            ],
        }
    )


async def chat_completions(request: Request) -> Response:
    """Run the last user message as a turn; answer with a completion, a stream, or an error."""
    try:
        return await _chat_completions(request)
    except TurngateError as exc:
        return refusal(exc)


async def _chat_completions(request: Request) -> Response:
    config: GatewayConfig = request.app.state.config
    engine = engine_of(request)
    body = validate(
        ChatCompletionsBody, parse_json(await read_body(request, config.body_bytes_max))
    )
    agent_id = resolve_agent(engine, body.model)
    key = _session(request, agent_id, body.user)
    index, message = last_user_message(body.messages)
    ask = Ask(
        str(key),
        message,
        LANE,
        _idempotency_key(request),
        stream=bool(body.stream),
        message_field=f"messages.{index}.content",
    )
    ticket = await admit(engine, config, ask)
    created = int(engine.clock.wall())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(engine, ticket, body.model, created, include_usage=include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        outcome = await outcome_of(engine, ticket)
    except TurngateError as exc:
        status = ERROR_HTTP_STATUS[exc.code]
        return openai_error_response(
            status, exc.code, exc.message, headers=NO_RETRY
        )  # turn is kept
    if outcome.state is not TurnState.REPLIED:
        return outcome_error(outcome)
    assert outcome.reply is not None
    return JSONResponse(
        {
            "id": f"chatcmpl-{ticket.turn_id}",
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": outcome.reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage_body(outcome.usage),
        }
    )


# -- request parsing --------------------------------------------------------------------------


def resolve_agent(engine: Engine, model: str) -> str:
    """The agent id ``model`` names; :class:`UnknownAgentError` (``model_not_found``) if none."""
    agent_id: str | None = "main" if model in DEFAULT_AGENT_MODELS else None
    for prefix in MODEL_PREFIXES:
        if model.startswith(prefix):
            agent_id = model[len(prefix) :]
    if agent_id is not None and is_agent_id(agent_id):
        try:
            engine.agents.get(agent_id)
        except UnknownAgentError:
            pass
        else:
            return agent_id
    served = ", ".join(f"turngate/{a}" for a in engine.agents.ids or ["main"])
    shown = model if len(model) <= 80 else model[:77] + "..."
    raise UnknownAgentError(
        f"model: {shown!r} is not served by this gateway; models name an agent,"
        f" e.g. {served} (GET /v1/models lists them)"
    )


def user_session_segment(user: str) -> str:
    """``user`` as one session key segment: other characters become ``-``, length bounded."""
    segment = _OUTSIDE_SEGMENT.sub("-", user)
    if len(segment) <= SEGMENT_LEN_MAX:
        return segment
    # Cut, but keep users that share a long prefix apart.
    digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{segment[: SEGMENT_LEN_MAX - _DIGEST_CHARS - 1]}-{digest}"


def _session(request: Request, agent_id: str, user: str | None) -> SessionKey:
    given = [(name, request.headers[name]) for name in SESSION_HEADERS if name in request.headers]
    if len({value for _, value in given}) > 1:
        raise InvalidFieldError(
            " and ".join(name for name, _ in given),
            "name different sessions; send one of them",
            code=ErrorCode.INVALID_SESSION_KEY,
        )
    if given:
        header, text = given[0]
        if not text.startswith("agent:"):
            # OpenClaw clients send bare names ("linkedin-invitations"): a session of the agent.
            return parse_session_key(f"agent:{agent_id}:{user_session_segment(text)}")
        try:
            key = parse_session_key(text)
        except TurngateError as exc:
            raise InvalidFieldError(header, exc.message, code=exc.code) from None
        if key.agent_id != agent_id:
            raise InvalidFieldError(
                header,
                f"session {key} belongs to agent {key.agent_id!r}, but model names agent"
                f" {agent_id!r}; use model turngate/{key.agent_id} or a session of {agent_id!r}",
                code=ErrorCode.INVALID_SESSION_KEY,
            )
        return key
    rest = user_session_segment(user) if user else "default"
    return parse_session_key(f"agent:{agent_id}:openai:{rest}")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidFieldError(
            "Idempotency-Key", "must be 1-128 characters of A-Z, a-z, 0-9 or . _ : @ + = -"
        )
    return key


def last_user_message(messages: list[ChatMessageIn]) -> tuple[int, str]:
    """The index and text of the last ``user`` message (its text is checked on admission)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index, _text_of(messages[index].content, f"messages.{index}.content")
    raise InvalidFieldError("messages", "needs a message with role 'user'")


def _text_of(content: Any, field: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidFieldError(
            field, f"expected a string or a list of parts, got {type(content).__name__}"
        )
    texts: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidFieldError(f"{field}.{i}", "expected an object like {type, text}")
        if part.get("type") != "text":
            continue  # images, audio, files: this gateway passes text only
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidFieldError(f"{field}.{i}.text", "a text part needs a string 'text'")
        texts.append(text)
    return "\n".join(texts)


# -- answers ----------------------------------------------------------------------------------
