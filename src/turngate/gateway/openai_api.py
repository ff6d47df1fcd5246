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

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from turngate.config import GatewayConfig
from turngate.core.keys import SEGMENT_LEN_MAX, SessionKey, parse_session_key
from turngate.core.turn import Outcome, TurnState, Usage
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    PayloadTooLargeError,
    TurngateError,
    UnavailableError,
    UnknownAgentError,
)
from turngate.gateway.chat_http import WAIT_MARGIN_S, read_body
from turngate.gateway.frames import (
    ERROR_HTTP_STATUS,
    IDEMPOTENCY_KEY_PATTERN,
    TERMINAL_HTTP_STATUS,
    parse_json,
    validate,
)
from turngate.runtime.engine import Engine, SubmitRequest, Ticket

log = logging.getLogger("turngate.gateway")

LANE = "openai"
MODEL_PREFIXES = ("turngate/", "openclaw/", "openclaw:")
DEFAULT_AGENT_MODELS = frozenset({"turngate", "openclaw"})
SESSION_HEADERS = ("x-turngate-session", "x-openclaw-session-key")
MODEL_NOT_FOUND = "model_not_found"
"""The OpenAI code for an unknown ``model`` (this surface's own; not a turngate ErrorCode)."""
MESSAGES_MAX = 10_000
NO_RETRY = {"x-should-retry": "false"}
"""Tells OpenAI SDKs not to retry: the message was accepted, and a retry would resend it."""
DONE = "data: [DONE]\n\n"
SSE_KEEPALIVE_S = 15.0
"""A stream with nothing to send for this long sends :data:`KEEPALIVE` (proxies commonly
drop a response that is silent for 30 to 60 s)."""
KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment: it keeps the connection alive, and clients skip it."""

_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
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
    engine = _engine(request)
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
        return _refusal(exc)


async def _chat_completions(request: Request) -> Response:
    config: GatewayConfig = request.app.state.config
    engine = _engine(request)
    body = validate(
        ChatCompletionsBody, parse_json(await read_body(request, config.body_bytes_max))
    )
    agent_id = resolve_agent(engine, body.model)
    key = _session(request, agent_id, body.user)
    message = last_user_message(body.messages, config.message_chars_max)
    ticket = await engine.submit(
        SubmitRequest(
            key,
            message,
            _idempotency_key(request),
            engine.agents.get(agent_id).queue_mode,
            lane=LANE,
            stream=bool(body.stream),
        )
    )
    created = int(engine.clock.wall())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(ticket, body.model, created, include_usage=include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        outcome = await _outcome(ticket)
    except TurngateError as exc:
        status = ERROR_HTTP_STATUS[exc.code]
        return _error_response(status, exc.code, exc.message, headers=NO_RETRY)  # turn is kept
    if outcome.state is not TurnState.REPLIED:
        return _outcome_error(outcome)
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
    if agent_id is not None and _AGENT_ID.fullmatch(agent_id):
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


def last_user_message(messages: list[ChatMessageIn], chars_max: int) -> str:
    """The text of the last ``user`` message, refused (naming it) if empty or too long."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            break
    else:
        raise InvalidFieldError("messages", "needs a message with role 'user'")
    field = f"messages.{index}.content"
    text = _text_of(messages[index].content, field)
    if not text.strip():
        raise InvalidFieldError(field, "the last user message has no text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFieldError(field, "is not valid Unicode text (unpaired surrogate)") from None
    if len(text) > chars_max:
        raise PayloadTooLargeError(
            f"{field}: {len(text)} characters, over the limit of {chars_max}",
            code=ErrorCode.MESSAGE_TOO_LARGE,
        )
    return text


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


def usage_body(usage: Usage | None) -> dict[str, int]:
    """OpenAI's ``usage`` object; zeros when the provider reported no usage."""
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


async def _outcome(ticket: Ticket) -> Outcome:
    """The ticket's outcome, waited for up to its deadline plus a margin.

    Raises :class:`UnavailableError`: ``shutdown`` (or a store failure), or ``turn_expired``
    if the engine gave no outcome in time (a backstop: the engine ends turns by then).
    """
    try:
        async with asyncio.timeout_at(ticket.deadline + WAIT_MARGIN_S):
            return await asyncio.shield(ticket.outcome)
    except TimeoutError:
        raise _no_outcome(ticket) from None


def _no_outcome(ticket: Ticket) -> UnavailableError:
    log.warning(
        "session %s: turn %s has no outcome past its deadline; answering an error",
        ticket.session_key,
        ticket.turn_id,
        extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
    )
    return UnavailableError(
        f"session {ticket.session_key}: turn {ticket.turn_id} has no outcome past its"
        f" deadline; GET /turns/{ticket.turn_id} will show it",
        code=ErrorCode.TURN_EXPIRED,
    )


async def _sse(
    ticket: Ticket, model: str, created: int, *, include_usage: bool = False
) -> AsyncIterator[str]:
    """The server-sent events of a streamed completion (see the module docstring).

    With ``include_usage``, every chunk has ``usage: null`` and the last, after the one
    with the ``finish_reason``, has ``choices: []`` and the usage (OpenAI's rule).

    Each wait sits under the deadline on its own, never around a ``yield``, so the timeout
    fires in a wait of this generator and never inside the response's send. A wait that
    lasts :data:`SSE_KEEPALIVE_S` ends early to send :data:`KEEPALIVE`, then goes on.
    """
    frame: dict[str, Any] = {
        "id": f"chatcmpl-{ticket.turn_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    if include_usage:
        frame["usage"] = None

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _event({**frame, "choices": [choice]})

    yield chunk({"role": "assistant"})
    deadline = ticket.deadline + WAIT_MARGIN_S
    streamed: list[str] = []
    # The wait for the next delta outlives keep-alives (cancelling it would end the stream),
    # so it is a task, and this generator cancels it however it ends.
    pending: asyncio.Task[tuple[str, str] | None] | None = None
    try:
        # A retry (same Idempotency-Key) of a turn under way joins its stream late, having
        # missed the deltas before: it waits and sends the whole reply at the end instead.
        if ticket.deltas is not None and not ticket.duplicate:
            deltas = aiter(ticket.deltas)
            while True:
                pending = pending or asyncio.ensure_future(anext(deltas, None))
                if not await _ready_or_keepalive(pending, deadline):
                    yield KEEPALIVE
                    continue
                item, pending = pending.result(), None
                if item is None:
                    break
                if item[1]:
                    streamed.append(item[1])
                    yield chunk({"content": item[1]})
        while not await _ready_or_keepalive(ticket.outcome, deadline):
            yield KEEPALIVE
        outcome = ticket.outcome.result()
    except (TimeoutError, TurngateError) as exc:
        failure = exc if isinstance(exc, TurngateError) else _no_outcome(ticket)
        yield _event(_error_body(ERROR_HTTP_STATUS[failure.code], failure.code, failure.message))
        yield DONE
        return
    finally:
        if pending is not None:
            await _cancelled(pending)
    if outcome.reply is None:
        yield _event(_outcome_error_body(outcome))
        yield DONE
        return
    # Deltas can be dropped (a client far behind) or not streamed (a retry): the recorded
    # reply is the truth, so send whatever the client has not had.
    sent = "".join(streamed)
    if not outcome.reply.startswith(sent):
        log.warning(
            "session %s: turn %s streamed text that is not a prefix of its reply",
            ticket.session_key,
            ticket.turn_id,
            extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
        )
    elif len(outcome.reply) > len(sent):
        yield chunk({"content": outcome.reply[len(sent) :]})
    yield chunk({}, "stop")
    if include_usage:
        yield _event({**frame, "choices": [], "usage": usage_body(outcome.usage)})
    yield DONE


async def _ready_or_keepalive(waited: asyncio.Future[Any], deadline: float) -> bool:
    """True once ``waited`` is done; False after :data:`SSE_KEEPALIVE_S` without it (time
    for a keep-alive). Raises :class:`TimeoutError` at ``deadline``; never cancels ``waited``
    (``asyncio.wait`` leaves it running, so the next call picks it up again)."""
    async with asyncio.timeout_at(deadline):
        done, _ = await asyncio.wait({waited}, timeout=SSE_KEEPALIVE_S)
    return bool(done)


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end; the wait is bounded by the task itself (it
    only waits on a delta stream, which ends at once when cancelled)."""
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _outcome_error_body(outcome: Outcome) -> dict[str, Any]:
    code = outcome.code or ErrorCode.INTERNAL
    message = outcome.message or f"turn {outcome.turn_id} ended {outcome.state}"
    return _error_body(TERMINAL_HTTP_STATUS[outcome.state], code, message)


def _outcome_error(outcome: Outcome) -> Response:
    # A rejected turn left no trace, so the client's own retry policy applies; any other
    # outcome is final, and retrying would send the message again as a new turn.
    return JSONResponse(
        _outcome_error_body(outcome),
        TERMINAL_HTTP_STATUS[outcome.state],
        headers={} if outcome.state is TurnState.REJECTED else NO_RETRY,
    )


def _refusal(exc: TurngateError) -> Response:
    """A refused request in the OpenAI error shape."""
    if isinstance(exc, UnknownAgentError):
        return _error_response(404, MODEL_NOT_FOUND, exc.message, param="model")
    status = ERROR_HTTP_STATUS[exc.code]
    param = exc.field if isinstance(exc, InvalidFieldError) else None
    return _error_response(400 if status == 422 else status, exc.code, exc.message, param=param)


def _error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "code", "param"}}``."""
    error = {"message": message, "type": _error_type(status), "code": str(code), "param": param}
    return {"error": error}


def _error_response(
    status: int, code: str, message: str, *, param: str | None = None, headers: Any = None
) -> Response:
    return JSONResponse(_error_body(status, code, message, param), status, headers=headers)


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine
