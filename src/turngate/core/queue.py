"""The per-session queue of accepted turns waiting for the session, and its modes.

The queue holds *batches*: one batch becomes one run. A batch has one turn, except in
``collect`` mode, where messages that arrive while a turn runs merge into the next batch.
A ``steer`` batch at the head of the queue may instead be taken into the running run, at its
next model step (:meth:`SessionQueue.take_steered`). The queue is bounded by the number of
turns it holds, not batches.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from turngate.core.turn import Turn
from turngate.types import MonotonicS, RunId


class QueueMode(enum.StrEnum):
    """What a message does when its session is busy."""

    FOLLOWUP = "followup"
    """Queue behind the running turn; its own turn and reply, in order (the default)."""
    COLLECT = "collect"
    """Merge with the other messages that arrive while a turn runs into one next turn."""
    INTERRUPT = "interrupt"
    """Abort the running turn and everything queued before it (``superseded``), then run."""
    STEER = "steer"
    """Inject into the running turn before its next model step; when it takes none (it
    answered), run as ``followup``."""
    REJECT = "reject"
    """Refuse with ``busy`` while a turn runs or waits."""


@dataclass(slots=True)
class Batch:
    """Turns that will be served by one run, in acceptance order."""

    turns: list[Turn]
    collect: bool
    steer: bool = False

    @property
    def run_id(self) -> RunId:
        """A batch's run takes the id of its first turn."""
        return self.turns[0].turn_id


@dataclass(slots=True)
class SessionQueue:
    """A bounded FIFO of batches."""

    turns_max: int
    _batches: deque[Batch] = field(default_factory=deque)
    _turn_count: int = 0

    def __len__(self) -> int:
        return self._turn_count

    @property
    def is_full(self) -> bool:
        """True when one more turn would exceed the bound."""
        return self._turn_count >= self.turns_max

    def turns(self) -> Iterator[Turn]:
        """Every queued turn, in order."""
        for batch in self._batches:
            yield from batch.turns

    def append(self, turn: Turn, *, collect: bool = False, steer: bool = False) -> None:
        """Add ``turn`` at the tail; a collect turn joins a collect batch already at the tail."""
        tail = self._batches[-1] if self._batches else None
        if collect and tail is not None and tail.collect:
            tail.turns.append(turn)
        else:
            self._batches.append(Batch([turn], collect=collect, steer=steer))
        self._turn_count += 1

    def append_batch(self, turns: list[Turn]) -> None:
        """Add ``turns`` at the tail as one batch: they will be served by one run."""
        self._batches.append(Batch(list(turns), collect=False))
        self._turn_count += len(turns)

    def take_steered(self) -> list[Turn]:
        """Remove and return the turns of the ``steer`` batches at the head, in order: only
        those, so that no turn is served before one accepted earlier."""
        taken: list[Turn] = []
        while self._batches and self._batches[0].steer:
            batch = self._batches.popleft()
            self._turn_count -= len(batch.turns)
            taken.extend(batch.turns)
        return taken

    def pop(self) -> Batch | None:
        """The batch at the head, removed; None when empty."""
        if not self._batches:
            return None
        batch = self._batches.popleft()
        self._turn_count -= len(batch.turns)
        return batch

    def take_all(self) -> list[Turn]:
        """Remove and return every queued turn, in order."""
        taken = list(self.turns())
        self._batches.clear()
        self._turn_count = 0
        return taken

    def take(self, turn_id: str) -> Turn | None:
        """Remove one queued turn by id; None if it is not queued here."""
        for batch in self._batches:
            for turn in batch.turns:
                if turn.turn_id == turn_id:
                    batch.turns.remove(turn)
                    self._turn_count -= 1
                    if not batch.turns:
                        self._batches.remove(batch)
                    return turn
        return None

    def take_expired(self, now: MonotonicS) -> list[Turn]:
        """Remove and return the turns whose deadline is at or before ``now``."""
        expired = [turn for turn in self.turns() if turn.deadline <= now]
        for turn in expired:
            self.take(turn.turn_id)
        return expired

    def next_deadline(self) -> MonotonicS | None:
        """The earliest deadline of a queued turn."""
        return min((turn.deadline for turn in self.turns()), default=None)
