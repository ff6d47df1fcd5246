"""Recovery after a crash (I7): the turns a previous process accepted and did not end.

Each open turn either runs again, behind the others of its session in acceptance order, or
ends explicitly: ``failed`` / ``unknown_agent`` for an agent no longer configured, ``failed``
/ ``interrupted`` after ``restart_attempts_max`` restarts, ``expired`` when its deadline passed
while the gateway was down. A client that resends the turn's idempotency key gets its outcome.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from turngate.core.queue import QueueMode
from turngate.core.turn import Outcome, Turn, TurnEvent, TurnState, next_turn_state
from turngate.errors import ErrorCode, UnknownAgentError
from turngate.runtime.events import EventKind
from turngate.runtime.owner import Resume, Submit
from turngate.store.base import TurnRecord

if TYPE_CHECKING:
    from turngate.runtime.engine import Engine

log = logging.getLogger("turngate.runtime")


async def recover(engine: Engine) -> None:
    """After a crash: every turn not yet ended runs again, in acceptance order, or ends
    explicitly (see :func:`end_on_restart`); clients that resend get the outcome (I7)."""
    wall = engine.clock.wall()
    records = await engine.store.recover(wall)
    now = engine.clock.now()
    given_up: list[TurnRecord] = []
    outcomes: list[Outcome] = []
    # The turns one run served resume as one batch (its earlier attempt wrote their messages
    # together): keyed by that run, the others each on their own.
    batches: dict[tuple[str, str], list[Turn]] = {}
    for record in records:
        ended = end_on_restart(engine, record, wall)
        if ended is not None:
            given_up.append(record)
            outcomes.append(ended)
            continue
        remaining = record.accepted_wall + record.timeout_s - wall
        engine.expect_outcome(record.turn_id)
        turn = Turn(
            record.turn_id,
            record.session_key,
            record.message,
            now,
            now + remaining,
            restarts=record.attempts,
        )
        engine.emit(
            EventKind.RECOVERED,
            record.session_key,
            turn_id=record.turn_id,
            lane="recovery",
            detail=f"resumed after a restart (restarts so far: {record.attempts})",
        )
        batches.setdefault((record.session_key, record.run_id or record.turn_id), []).append(turn)
    for (session_key, _), turns in batches.items():
        if len(turns) == 1:
            engine.route(session_key, Submit(turns[0], QueueMode.FOLLOWUP, "recovery"))
        else:
            engine.route(session_key, Resume(tuple(turns)))
    if outcomes:
        orders = [
            order
            for record, outcome in zip(given_up, outcomes, strict=True)
            for order in engine.outbound.orders(record.session_key, [outcome])
        ]
        await engine.store.end_turns(outcomes, wall, orders)
        for record, outcome in zip(given_up, outcomes, strict=True):
            engine.deliver(record.session_key, outcome, "recovery")
    resumed = len(records) - len(given_up)
    if records:
        log.warning(
            "recovered %d open turns after restart: %d resumed, %d ended",
            len(records),
            resumed,
            len(given_up),
        )


def end_on_restart(engine: Engine, record: TurnRecord, wall: float) -> Outcome | None:
    """The outcome of an open turn that cannot resume after a restart, or None. After
    ``recover`` every open turn is queued (or accepted, its enqueue unwritten), so it ends
    the way the table ends a queued turn."""
    key, turn_id = record.session_key, record.turn_id
    try:
        engine.agents.get(record.agent_id)
    except UnknownAgentError as exc:
        event, code, message = TurnEvent.FAIL, exc.code, f"turn {turn_id}: {exc.message}"
    else:
        if record.attempts >= engine.settings.restart_attempts_max:
            event, code = TurnEvent.FAIL, ErrorCode.INTERRUPTED
            message = (
                f"session {key}: turn {turn_id} was interrupted by {record.attempts}"
                " gateway restarts; giving up"
            )
        elif record.accepted_wall + record.timeout_s <= wall:
            event, code = TurnEvent.EXPIRE, ErrorCode.TURN_EXPIRED
            message = (
                f"session {key}: turn {turn_id} reached its deadline while the gateway was down"
            )
        else:
            return None
    state = next_turn_state(TurnState.QUEUED, event)
    return Outcome(turn_id, state, turn_id, code=code, message=message)
