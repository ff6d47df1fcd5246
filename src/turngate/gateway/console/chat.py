"""The console's chat pane: send a message to any session, and stream its turn as it runs.

``POST /console/api/chat`` ``{"sessionKey", "message", "queueMode"?}`` is validated like
``/chat.send`` and refused the same way (JSON errors, before any event). Once the turn is
stored the answer is a server-sent event stream:

- ``accepted`` ``{"runId", "sessionKey"}``: the turn is stored (it runs whatever the page does
  next; closing it does not cancel the turn);
- ``text`` ``{"runId", "text"}``: a piece of the reply, as the model produces it;
- ``tool`` ``{"runId", "phase": "start", "id", "name", "arguments"}``, then ``{"phase":
  "result", "id", "name", "isError", "result", "durationS"}``: a tool call beginning and
  returning;
- ``outcome``: the turn's outcome, as ``/chat.send`` answers it (``status``, ``reply`` or
  ``error``), with ``usage``; always the last event but for:
- ``error`` ``{"error": {"code", "message"}}``: no outcome came (the gateway is stopping, or
  the turn outlived its deadline); the turn is kept.

The outcome is the truth: the ``text`` events are the same reply, early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from turngate.config import GatewayConfig
from turngate.errors import TurngateError
from turngate.gateway.chat_http import WAIT_MARGIN_S, read_body
from turngate.gateway.console.sse import (
    KEEPALIVE,
    MEDIA_TYPE,
    STREAM_HEADERS,
    ready_or_keepalive,
    sse_event,
)
from turngate.gateway.console.views import PREVIEW_CHARS_MAX
from turngate.gateway.frames import (
    check_message,
    error_body,
    outcome_body,
    parse_json,
    parse_queue_mode,
    parse_session,
    validate,
)
from turngate.gateway.openai_answers import no_outcome
from turngate.runtime.activity import ToolFinished, ToolStarted
from turngate.runtime.deltas import Delta
from turngate.runtime.engine import Engine, SubmitRequest, Ticket
from turngate.types import RunId


class ConsoleChatBody(BaseModel):
    """``POST /console/api/chat``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sessionKey: StrictStr
    message: StrictStr
    queueMode: StrictStr | None = None


async def chat(request: Request) -> Response:
    """Submit the message as a turn (lane ``direct``), then stream it (see the module
    docstring)."""
    config: GatewayConfig = request.app.state.config
    engine: Engine = request.app.state.engine
    body = validate(ConsoleChatBody, parse_json(await read_body(request, config.body_bytes_max)))
    key = parse_session(body.sessionKey)
    mode = parse_queue_mode(body.queueMode, engine.agents.get(key.agent_id).queue_mode)
    check_message(body.message, config.message_chars_max)
    ticket = await engine.submit(
        SubmitRequest(key, body.message, mode=mode, lane="direct", stream=True)
    )
    return StreamingResponse(turn_events(ticket), media_type=MEDIA_TYPE, headers=STREAM_HEADERS)


async def turn_events(ticket: Ticket) -> AsyncIterator[str]:
    """The events of one streamed turn, each wait under the turn's deadline on its own (never
    around a ``yield``), keep-alives while it is quiet."""
    yield sse_event("accepted", {"runId": ticket.turn_id, "sessionKey": ticket.session_key})
    deadline = ticket.deadline + WAIT_MARGIN_S
    # The wait for the next delta outlives keep-alives, so it is a task, cancelled however
    # the stream ends.
    pending: asyncio.Future[tuple[RunId, Delta] | None] | None = None
    try:
        if ticket.deltas is not None:
            deltas = aiter(ticket.deltas)
            while True:
                pending = pending or asyncio.ensure_future(anext(deltas, None))
                if not await ready_or_keepalive(pending, deadline):
                    yield KEEPALIVE
                    continue
                item, pending = pending.result(), None
                if item is None:
                    break
                yield delta_event(*item)
        while not await ready_or_keepalive(ticket.outcome, deadline):
            yield KEEPALIVE
        outcome = ticket.outcome.result()
    except (TimeoutError, TurngateError) as exc:
        failure = exc if isinstance(exc, TurngateError) else no_outcome(ticket)
        yield sse_event("error", error_body(failure.code, failure.message))
        return
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    body = outcome_body(outcome, ticket.session_key)
    body["usage"] = (
        None
        if outcome.usage is None
        else {
            "promptTokens": outcome.usage.prompt_tokens,
            "completionTokens": outcome.usage.completion_tokens,
        }
    )
    yield sse_event("outcome", body)


def delta_event(run_id: RunId, delta: Delta) -> str:
    """One delta of the run as an event: a piece of text, or a tool call's start or result."""
    data: dict[str, Any] = {"runId": run_id}
    match delta:
        case str():
            return sse_event("text", {**data, "text": delta})
        case ToolStarted(call):
            data.update(phase="start", id=call.id, name=call.name, arguments=call.arguments)
        case ToolFinished(call, result, duration_s):
            data.update(
                phase="result",
                id=call.id,
                name=call.name,
                isError=result.is_error,
                result=result.content[:PREVIEW_CHARS_MAX],
                durationS=round(duration_s, 3),
            )
    return sse_event("tool", data)
