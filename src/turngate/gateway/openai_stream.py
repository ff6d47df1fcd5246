"""A streamed completion (``"stream": true``): server-sent ``chat.completion.chunk`` events
built from the run's deltas, keep-alive comments while it waits, then ``[DONE]``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from turngate.errors import (
    TurngateError,
)
from turngate.gateway.chat_http import WAIT_MARGIN_S
from turngate.gateway.frames import ERROR_HTTP_STATUS
from turngate.gateway.openai_answers import (
    no_outcome,
    openai_error_body,
    outcome_error_body,
    usage_body,
)
from turngate.runtime.deltas import Delta
from turngate.runtime.engine import Ticket

log = logging.getLogger("turngate.gateway")


DONE = "data: [DONE]\n\n"


SSE_KEEPALIVE_S = 15.0
"""A stream with nothing to send for this long sends :data:`KEEPALIVE` (proxies commonly
drop a response that is silent for 30 to 60 s)."""


KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment: it keeps the connection alive, and clients skip it."""


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
    pending: asyncio.Task[tuple[str, Delta] | None] | None = None
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
                delta = item[1]
                if isinstance(delta, str) and delta:  # tool calls are not part of the answer
                    streamed.append(delta)
                    yield chunk({"content": delta})
        while not await _ready_or_keepalive(ticket.outcome, deadline):
            yield KEEPALIVE
        outcome = ticket.outcome.result()
    except (TimeoutError, TurngateError) as exc:
        failure = exc if isinstance(exc, TurngateError) else no_outcome(ticket)
        yield _event(
            openai_error_body(ERROR_HTTP_STATUS[failure.code], failure.code, failure.message)
        )
        yield DONE
        return
    finally:
        if pending is not None:
            await _cancelled(pending)
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
