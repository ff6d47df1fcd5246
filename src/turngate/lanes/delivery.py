"""What becomes of a lane turn's reply.

A reply that carries the agent's "nothing to report" token is recorded but not delivered
(``suppressed``). Any other outcome is delivered to the lane's target; with no target
configured it is kept in the store (``stored``), where ``turngate sessions show`` lists it.
"""

from __future__ import annotations

import asyncio
import logging

from turngate.core.turn import TurnState
from turngate.errors import TurngateError
from turngate.runtime.engine import Engine, Ticket

log = logging.getLogger("turngate.lanes")

FOLLOW_MARGIN_S = 5.0


async def follow(engine: Engine, ticket: Ticket, ok_token: str | None) -> str:
    """Wait for a lane turn's outcome (bounded by its deadline) and record its delivery."""
    try:
        async with asyncio.timeout_at(ticket.deadline + FOLLOW_MARGIN_S):
            outcome = await asyncio.shield(ticket.outcome)
    except (TimeoutError, TurngateError) as exc:
        log.warning(
            "session %s: lane turn %s has no outcome to deliver (%s)",
            ticket.session_key,
            ticket.turn_id,
            type(exc).__name__,
            extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
        )
        return "pending"
    suppressed = (
        ok_token is not None
        and outcome.state is TurnState.REPLIED
        and outcome.reply is not None
        and ok_token in outcome.reply
    )
    delivery = "suppressed" if suppressed else "stored"
    await engine.store.set_delivery(ticket.turn_id, delivery)
    return delivery
