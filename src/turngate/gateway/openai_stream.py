"""A streamed completion (``"stream": true``): server-sent ``chat.completion.chunk`` events
built from the run's deltas, keep-alive comments while it waits, then ``[DONE]``."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from turngate.core.turn import Outcome
from turngate.errors import TurngateError
from turngate.gateway.frames import ERROR_HTTP_STATUS
from turngate.gateway.openai_answers import openai_error_body, outcome_error_body, usage_body
from turngate.gateway.turn_follow import KEEPALIVE, follow
from turngate.runtime.engine import Engine, Ticket

log = logging.getLogger("turngate.gateway")


DONE = "data: [DONE]\n\n"


async def _sse(
    engine: Engine, ticket: Ticket, model: str, created: int, *, include_usage: bool = False
) -> AsyncIterator[str]:
    """The server-sent events of a streamed completion (see the module docstring).

    With ``include_usage``, every chunk has ``usage: null`` and the last, after the one
    with the ``finish_reason``, has ``choices: []`` and the usage (OpenAI's rule).

    A quiet wait sends :data:`~turngate.gateway.turn_follow.KEEPALIVE`, then goes on.
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
    streamed: list[str] = []
    outcome: Outcome | None = None
    try:
        # A retry (same Idempotency-Key) of a turn under way joins its stream late, having
        # missed the deltas before: it waits and sends the whole reply at the end instead.
        steps = follow(engine, ticket, deltas=not ticket.duplicate)
        async with contextlib.aclosing(steps):
            async for step in steps:
                if step is None:
                    yield KEEPALIVE
                elif isinstance(step, Outcome):
                    outcome = step
                elif isinstance(step[1], str) and step[1]:  # tool calls are not the answer
                    streamed.append(step[1])
                    yield chunk({"content": step[1]})
    except TurngateError as failure:
        yield _event(
            openai_error_body(ERROR_HTTP_STATUS[failure.code], failure.code, failure.message)
        )
        yield DONE
        return
    assert outcome is not None  # the follower's last step, unless it raised
    if outcome.reply is None:
        yield _event(outcome_error_body(outcome))
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


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
