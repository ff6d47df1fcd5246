"""The one way a client's message becomes a turn, whatever surface it came by (``POST
/chat.send``, the WebSocket protocol's ``chat.send`` and ``agent``, the OpenAI surface, the
console's chat): its checks, its submission, and the wait for its outcome.

A surface reads its own wire shape into an :class:`Ask`; :func:`admit` checks it the same
way for all of them and returns once the turn is durable (the acknowledgement);
:func:`outcome_of` waits for the turn's end (:meth:`Ticket.wait`) and tells what a client
is told when none came in time (:func:`no_outcome`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from turngate.config import GatewayConfig
from turngate.core.keys import check_agent, parse_session_key
from turngate.core.message import check_message
from turngate.core.turn import Outcome
from turngate.errors import ErrorCode, UnavailableError
from turngate.gateway.frames import parse_queue_mode
from turngate.runtime.engine import Engine, SubmitRequest, Ticket

log = logging.getLogger("turngate.gateway")


@dataclass(frozen=True, slots=True)
class Ask:
    """A client's message for a session, as its surface read it (not yet checked)."""

    session_key: str
    message: str
    lane: str
    idempotency_key: str | None = None
    queue_mode: str | None = None
    """The mode's name; the agent's own mode when absent."""
    timeout_s: float | None = None
    agent_id: str | None = None
    """The agent the client means, when it says so: it must be the session key's."""
    stream: bool = False
    message_field: str = "message"
    """The field a refused message is named by (the OpenAI surface's is in ``messages``)."""


async def admit(engine: Engine, config: GatewayConfig, ask: Ask) -> Ticket:
    """Check ``ask`` and submit it as a turn; returns once the turn is stored.

    Refused, naming the field, for a bad session key, an agent id that is not the key's, an
    unknown agent, an unknown queue mode, or a message that is empty, not Unicode or too long.
    """
    key = parse_session_key(ask.session_key)
    check_agent(key, ask.agent_id)
    agent = engine.agents.get(key.agent_id)
    mode = parse_queue_mode(ask.queue_mode, agent.queue_mode)
    check_message(ask.message, config.message_chars_max, ask.message_field)
    request = SubmitRequest(
        key, ask.message, ask.idempotency_key, mode, ask.timeout_s, ask.lane, ask.stream
    )
    return await engine.submit(request)


async def outcome_of(engine: Engine, ticket: Ticket) -> Outcome:
    """The ticket's outcome (:meth:`Ticket.wait`).

    Raises :class:`UnavailableError`: ``shutdown`` (or a store failure) as the engine gave
    it, or :func:`no_outcome`'s when the wait ran out.
    """
    try:
        return await ticket.wait()
    except TimeoutError:
        raise no_outcome(engine, ticket) from None


def no_outcome(engine: Engine, ticket: Ticket) -> UnavailableError:
    """What a client is told when the wait for its turn's outcome ran out: the turn is kept,
    and where its outcome will show. ``storage_unavailable`` when the store cannot write its
    end yet, else ``turn_expired``."""
    log.warning(
        "session %s: turn %s has no outcome past its deadline",
        ticket.session_key,
        ticket.turn_id,
        extra={"session_key": ticket.session_key, "run_id": ticket.turn_id},
    )
    where = f"GET /turns/{ticket.turn_id} will show it, or retry with the same idempotencyKey"
    storage = engine.store.health()
    if not storage.writable:
        return UnavailableError(
            f"session {ticket.session_key}: turn {ticket.turn_id} is kept, but its outcome"
            f" cannot be stored yet ({storage.reason}); {where}",
            code=ErrorCode.STORAGE_UNAVAILABLE,
        )
    return UnavailableError(
        f"session {ticket.session_key}: turn {ticket.turn_id} has no outcome past its"
        f" deadline; {where}",
        code=ErrorCode.TURN_EXPIRED,
    )
