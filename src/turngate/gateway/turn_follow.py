"""A turn followed as it runs, for the surfaces that stream it as server-sent events (the
OpenAI surface's streamed completions, the console's chat pane).

:func:`follow` yields the run's deltas as they come, ``None`` each time it has been quiet
for :data:`SSE_KEEPALIVE_S` (time for the surface to send :data:`KEEPALIVE`), and the
turn's :class:`Outcome` last; it raises :class:`TurngateError` when no outcome comes (the
gateway stopping, or the wait running out: :func:`~turngate.gateway.admission.no_outcome`).

Each wait sits under the deadline on its own, never around a ``yield``, so the timeout fires
in a wait of the follower and never inside the surface's send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from turngate.core.turn import Outcome
from turngate.gateway.admission import no_outcome
from turngate.runtime.deltas import Delta
from turngate.runtime.engine import Engine, Ticket
from turngate.types import RunId

SSE_KEEPALIVE_S = 15.0
"""A stream with nothing to send for this long sends :data:`KEEPALIVE` (proxies commonly
drop a response that is silent for 30 to 60 s)."""

KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment: it keeps the connection alive, and clients skip it."""

Step = tuple[RunId, Delta] | Outcome | None
"""What :func:`follow` yields: a delta of the run, its outcome (last), or ``None`` (quiet)."""


async def follow(
    engine: Engine, ticket: Ticket, *, deltas: bool = True
) -> AsyncGenerator[Step, None]:
    """The ticket's turn as it runs (see the module docstring); without ``deltas``, only
    the keep-alives and the outcome. Close it (``contextlib.aclosing``) when done early."""
    deadline = ticket.wait_deadline
    # The wait for the next delta outlives keep-alives (cancelling it would end the stream),
    # so it is a task, cancelled however the follower ends.
    pending: asyncio.Future[tuple[RunId, Delta] | None] | None = None
    try:
        if deltas and ticket.deltas is not None:
            stream = aiter(ticket.deltas)
            while True:
                pending = pending or asyncio.ensure_future(anext(stream, None))
                if not await ready_or_keepalive(pending, deadline):
                    yield None
                    continue
                item, pending = pending.result(), None
                if item is None:
                    break
                yield item
        while not await ready_or_keepalive(ticket.outcome, deadline):
            yield None
        outcome = ticket.outcome.result()
    except TimeoutError:
        raise no_outcome(engine, ticket) from None
    finally:
        if pending is not None and not pending.done():
            # Bounded by the delta stream itself, which ends at once when cancelled.
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
    yield outcome


async def ready_or_keepalive(waited: asyncio.Future[Any], deadline: float) -> bool:
    """True once ``waited`` is done; False after :data:`SSE_KEEPALIVE_S` without it (time
    for a keep-alive). Raises :class:`TimeoutError` at ``deadline`` (loop time); never
    cancels ``waited``, so the next call waits on for it."""
    async with asyncio.timeout_at(deadline):
        done, _ = await asyncio.wait({waited}, timeout=SSE_KEEPALIVE_S)
    return bool(done)
