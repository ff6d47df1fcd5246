"""A run's view of its session's owner (:class:`~turngate.runtime.run.RunHost`), and what the
owner keeps of a running run's activity.

Progress goes through the owner's inbox like every report of a run, so that the core decides
whether it renews the lease. A step is written by the run's own task, fenced by its epoch and
tried again while storage is unavailable, as every write of the owner. Steered messages are
asked of the owner, which moves them from the queue into the run and writes that before it
answers: a message the run takes is always recorded as part of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Turn, Usage
from turngate.errors import StaleEpochError
from turngate.runtime.activity import ToolFinished, ToolStarted
from turngate.runtime.events import EventKind
from turngate.runtime.run import RunProgress
from turngate.types import Epoch, MonotonicS, RunId

if TYPE_CHECKING:
    from turngate.runtime.owner import SessionOwner

T = TypeVar("T")


@dataclass(slots=True)
class RunActivity:
    """What a running run is doing: its model step, and its tool calls under way (by call id:
    the tool's name and when the call began)."""

    step: int = 1
    tools: dict[str, tuple[str, MonotonicS]] = field(default_factory=dict)

    def saw(self, progress: RunProgress, now: MonotonicS) -> None:
        """Take in one report of the run."""
        self.step = progress.step
        match progress.activity:
            case ToolStarted(call):
                self.tools[call.id] = (call.name, now)
            case ToolFinished(call):
                self.tools.pop(call.id, None)
            case None:
                pass

    def running(self, now: MonotonicS) -> tuple[tuple[str, float], ...]:
        """The tools under way: each one's name and how long it has run, oldest first."""
        return tuple((name, now - since) for name, since in self.tools.values())


@dataclass(frozen=True, slots=True)
class TakeSteered:
    """An owner command: a run is about to make its next model step; ``done`` receives the
    steered turns that join it, once they are written as running in it (none for a run that
    no longer holds its session)."""

    run_id: RunId
    epoch: Epoch
    done: asyncio.Future[list[Turn]]


class OwnerRunHost:
    """The :class:`~turngate.runtime.run.RunHost` of one run, ``(run_id, epoch)``."""

    def __init__(self, owner: SessionOwner, run_id: RunId, epoch: Epoch) -> None:
        self._owner = owner
        self._run_id = run_id
        self._epoch = epoch

    def now(self) -> MonotonicS:
        """The engine's clock."""
        return self._owner.engine.clock.now()

    def progress(self, progress: RunProgress) -> None:
        """Post the report to the owner."""
        owner = self._owner
        owner.engine.route(owner.session_key, progress)

    def model_answered(self, model: str, usage: Usage | None) -> None:
        """An event for the metrics: which model answered, with how many tokens."""
        owner = self._owner
        owner.engine.emit(
            EventKind.MODEL_ANSWERED,
            owner.session_key,
            run_id=self._run_id,
            epoch=self._epoch,
            detail=model,
            usage=usage,
        )

    async def write_steps(self, items: Sequence[TranscriptItem]) -> None:
        """Write the step, fenced; a refusal is counted and raised to the run."""
        owner = self._owner
        engine = owner.engine
        # Marked before the write: whatever of it commits, the run's end looks for open calls.
        owner.wrote_steps.add((self._run_id, self._epoch))
        try:
            await owner.durably(
                "write a run's step",
                self._run_id,
                lambda: engine.store.write_steps(
                    owner.session_key, self._run_id, self._epoch, items, engine.clock.wall()
                ),
            )
        except StaleEpochError as exc:
            engine.stale_write_refused(exc, step=True)
            raise

    async def read(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """A read of the store for the run, tried again while storage is unavailable."""
        return await self._owner.durably(what, self._run_id, attempt)

    async def take_steered(self) -> list[Turn]:
        """Ask the owner for the steered turns at the head of the queue."""
        owner = self._owner
        done: asyncio.Future[list[Turn]] = asyncio.get_running_loop().create_future()
        owner.engine.route(owner.session_key, TakeSteered(self._run_id, self._epoch, done))
        return await done
