"""Taking over a session's open turns (I7): after a crash, after another process died or lost
the session, or turns another process accepted for a session held here.

When a process claims a session (:meth:`~turngate.store.base.Store.claim_session`), the store
hands it every turn of the session not yet ended, the running ones queued again. Each runs
again, behind the others of its session in acceptance order, or ends explicitly: ``failed`` /
``interrupted`` after ``restart_attempts_max`` restarts, ``expired`` when its deadline passed
meanwhile; every turn of a session whose agent is no longer configured ends ``failed`` /
``unknown_agent``. A client that resends the turn's idempotency key gets its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from turngate.core.queue import QueueMode
from turngate.core.turn import Outcome, Turn, TurnEvent, TurnState, next_turn_state
from turngate.errors import ErrorCode, TurngateError
from turngate.runtime.events import EventKind
from turngate.store.base import TurnRecord

if TYPE_CHECKING:
    from turngate.runtime.owner import Command
    from turngate.runtime.owner_host import OwnerHost


@dataclass(slots=True)
class Adoption:
    """What a session's owner does with turns it took from the store."""

    commands: list[Command] = field(default_factory=list)
    """The turns that run, in acceptance order (those of one interrupted run as one batch)."""
    ended: list[Outcome] = field(default_factory=list)
    """The turns that cannot run again, with why."""


def adopt(host: OwnerHost, records: list[TurnRecord], *, taken_over: bool) -> Adoption:
    """Commands for a session's owner from ``records`` (its open turns, acceptance order).
    ``taken_over``: the session was just claimed, so these turns are resumed (``recovery``
    lane, reported); otherwise they are turns another process accepted. The turns of a run
    that was interrupted come back as one batch."""
    from turngate.runtime.owner import Resume, Submit  # the owner imports this module

    wall, now = host.clock.wall(), host.clock.now()
    adoption = Adoption()
    batches: dict[str, list[Turn]] = {}
    modes: dict[str, tuple[QueueMode, str] | None] = {}
    for record in records:
        ended = end_on_restart(host, record, wall)
        if ended is not None:
            adoption.ended.append(ended)
            continue
        remaining = record.accepted_wall + record.timeout_s - wall
        lane = "recovery" if taken_over else record.lane
        if taken_over:
            host.emit(
                EventKind.RECOVERED,
                record.session_key,
                turn_id=record.turn_id,
                lane="recovery",
                detail=f"taken over (restarts so far: {record.attempts})",
            )
        turn = Turn(
            record.turn_id,
            record.session_key,
            record.message,
            now,
            now + remaining,
            restarts=record.attempts,
        )
        batch = record.run_id or record.turn_id
        batches.setdefault(batch, []).append(turn)
        # A turn only accepted comes with its queue mode (refused if busy or full, ...); one
        # a holder queued or ran before is owed its run: it resumes, whatever the queue.
        fresh = not taken_over and record.state is TurnState.ACCEPTED
        modes.setdefault(batch, (_mode(record.queue_mode), lane) if fresh else None)
    for batch, turns in batches.items():
        submitted = modes[batch]
        if submitted is not None:
            adoption.commands.append(Submit(turns[0], *submitted))
        else:
            lane = "recovery" if taken_over else "direct"
            adoption.commands.append(Resume(tuple(turns), lane))
    return adoption


def _mode(stored: str) -> QueueMode:
    try:
        return QueueMode(stored)
    except ValueError:
        return QueueMode.FOLLOWUP


def end_on_restart(host: OwnerHost, record: TurnRecord, wall: float) -> Outcome | None:
    """The outcome of an open turn that cannot run again, or None. Every open turn handed
    over is queued (or accepted, its enqueue unwritten), so it ends the way the table ends a
    queued turn."""
    key, turn_id = record.session_key, record.turn_id
    if record.attempts >= host.settings.restart_attempts_max:
        event, code = TurnEvent.FAIL, ErrorCode.INTERRUPTED
        message = (
            f"session {key}: turn {turn_id} was interrupted by {record.attempts}"
            " gateway restarts; giving up"
        )
    elif record.accepted_wall + record.timeout_s <= wall:
        event, code = TurnEvent.EXPIRE, ErrorCode.TURN_EXPIRED
        message = f"session {key}: turn {turn_id} reached its deadline before it could run"
    else:
        return None
    return Outcome(
        turn_id, next_turn_state(TurnState.QUEUED, event), turn_id, code=code, message=message
    )


def refused(records: list[TurnRecord], error: TurngateError) -> list[Outcome]:
    """Outcomes ending ``records`` because their session cannot run (its agent is gone)."""
    state = next_turn_state(TurnState.QUEUED, TurnEvent.FAIL)
    return [
        Outcome(
            r.turn_id,
            state,
            r.turn_id,
            code=error.code,
            message=f"turn {r.turn_id}: {error.message}",
        )
        for r in records
    ]
