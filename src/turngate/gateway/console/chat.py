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

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from turngate.config import GatewayConfig
from turngate.core.turn import Outcome
from turngate.errors import TurngateError
from turngate.gateway.admission import Ask, admit
from turngate.gateway.chat_http import read_body
from turngate.gateway.console.sse import MEDIA_TYPE, STREAM_HEADERS, sse_event
from turngate.gateway.console.views import PREVIEW_CHARS_MAX
from turngate.gateway.frames import error_body, outcome_body, parse_json, validate
from turngate.gateway.turn_follow import KEEPALIVE, follow
from turngate.runtime.activity import ToolFinished, ToolStarted
from turngate.runtime.deltas import Delta
from turngate.runtime.engine import Engine, Ticket
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
    ask = Ask(body.sessionKey, body.message, "direct", queue_mode=body.queueMode, stream=True)
    ticket = await admit(engine, config, ask)
    return StreamingResponse(
        turn_events(engine, ticket), media_type=MEDIA_TYPE, headers=STREAM_HEADERS
    )


async def turn_events(engine: Engine, ticket: Ticket) -> AsyncIterator[str]:
    """The events of one streamed turn, keep-alives while it is quiet."""
    yield sse_event("accepted", {"runId": ticket.turn_id, "sessionKey": ticket.session_key})
    outcome: Outcome | None = None
    try:
        steps = follow(engine, ticket)
        async with contextlib.aclosing(steps):
            async for step in steps:
                if step is None:
                    yield KEEPALIVE
                elif isinstance(step, Outcome):
                    outcome = step
                else:
                    yield delta_event(*step)
    except TurngateError as failure:
        yield sse_event("error", error_body(failure.code, failure.message))
        return
    assert outcome is not None  # the follower's last step, unless it raised
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
