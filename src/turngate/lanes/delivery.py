"""What becomes of a lane turn's reply.

A reply that carries the agent's "nothing to report" token is recorded but not delivered
(``suppressed``). Any other outcome goes to the session's last active client connection, if
it is still open (``delivered``); otherwise it is kept in the store (``stored``), where
``turngate sessions show`` lists it. A channel's session is the exception: its reply went to
the outbox with the turn's end, and the channel's outbox worker records its delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from turngate.core.turn import Outcome, TurnState
from turngate.errors import StoreError, TurngateError
from turngate.runtime.engine import Engine, Ticket

log = logging.getLogger("turngate.lanes")

TARGETS_MAX = 10_000

Sink = Callable[[str, Outcome], bool]
"""Hands a lane outcome to a client; False when that client is gone."""


class DeliveryTargets:
    """The last active client connection of each session (bounded, most recent kept)."""

    def __init__(self) -> None:
        self._sinks: dict[str, Sink] = {}

    def register(self, session_key: str, sink: Sink) -> None:
        """``sink`` is now the session's last active client."""
        self._sinks.pop(session_key, None)
        self._sinks[session_key] = sink
        if len(self._sinks) > TARGETS_MAX:
            del self._sinks[next(iter(self._sinks))]

    def deliver(self, session_key: str, outcome: Outcome) -> bool:
        """Hand ``outcome`` to the session's last client; False if there is none (any more)."""
        sink = self._sinks.get(session_key)
        if sink is None:
            return False
        if sink(session_key, outcome):
            return True
        # That connection's generation is over: forget it, never act through it.
        if self._sinks.get(session_key) is sink:
            del self._sinks[session_key]
        return False


async def follow(
    engine: Engine, ticket: Ticket, ok_token: str | None, targets: DeliveryTargets | None
) -> str:
    """Wait for a lane turn's outcome (bounded by its deadline) and deliver or record it."""
    try:
        outcome = await ticket.wait()
    except (TimeoutError, TurngateError) as exc:
        log.warning(
            "session %s: lane turn %s has no outcome to deliver (%s)",
            ticket.session_key,
            ticket.turn_id,
            type(exc).__name__,
            extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
        )
        return "pending"
    if engine.outbound.serves(ticket.session_key):
        # A channel's session: its outbox sends the reply and records how that went.
        return "outbox"
    suppressed = (
        ok_token is not None
        and outcome.state is TurnState.REPLIED
        and outcome.reply is not None
        and ok_token in outcome.reply
    )
    if suppressed:
        delivery = "suppressed"
    elif targets is not None and targets.deliver(ticket.session_key, outcome):
        delivery = "delivered"
    else:
        delivery = "stored"
    try:
        await engine.store.set_delivery(ticket.turn_id, delivery)
    except StoreError as exc:
        # The outcome itself is stored; only this note on it is lost.
        log.warning(
            "session %s: lane turn %s: could not record its delivery (%s): %s",
            ticket.session_key,
            ticket.turn_id,
            delivery,
            exc.message,
            extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
        )
    return delivery
