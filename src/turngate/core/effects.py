"""What the core asks the runtime to do. Frozen values; the runtime carries them out in order.

The order inside one list matters: :class:`EndRun` (which releases the session) always comes
before the :class:`StartRun` of the next turn, and the runtime delivers the outcomes of an
:class:`EndRun` or :class:`EndTurns` to waiting clients only once that effect is durably
applied. That is how invariant I5 (release before reply) holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import AbortReason, Outcome, Turn
from turngate.types import Epoch, RunId, TurnId


@dataclass(frozen=True, slots=True)
class Enqueued:
    """Turns entered the session's queue (persist their ``queued`` state)."""

    turn_ids: tuple[TurnId, ...]


@dataclass(frozen=True, slots=True)
class StartRun:
    """Take the session's lease at ``epoch`` and start one run serving ``turns``."""

    run_id: RunId
    epoch: Epoch
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Steered:
    """``turn`` joins the running run ``run_id`` (queue mode ``steer``): hand its message to
    the run for its next model call, and persist the turn as running under ``epoch``."""

    run_id: RunId
    epoch: Epoch
    turn: Turn


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Cancel the task of a run; it will report back, or be fenced after the grace period."""

    run_id: RunId
    epoch: Epoch
    reason: AbortReason


@dataclass(frozen=True, slots=True)
class EndRun:
    """A run is over: release its lease, record its turns' outcomes and its exchange, atomically.

    ``fenced`` is true when the run never acknowledged cancellation: its task may still be
    alive, and its epoch is dead so anything it writes from now on is refused.
    """

    run_id: RunId
    epoch: Epoch
    outcomes: tuple[Outcome, ...]
    fenced: bool = False
    exchange: tuple[TranscriptItem, ...] = ()
    """Entries to append to the transcript: the run's user messages and its reply (with
    any tool calls and results in between) when it replied, nothing otherwise. Written in
    the same transaction as the release, so the transcript holds an exchange exactly when
    its turns replied."""


@dataclass(frozen=True, slots=True)
class EndTurns:
    """Turns that end without running (rejected, expired, superseded or aborted while queued)."""

    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True, slots=True)
class IgnoredStale:
    """A report from a run that no longer holds the session was ignored (invariant I6)."""

    run_id: RunId
    epoch: Epoch
    what: str


Effect = Enqueued | StartRun | Steered | CancelRun | EndRun | EndTurns | IgnoredStale
"""Everything the core can ask for."""
