"""Who waits for each turn's outcome, and who streams its run: the engine's outcome registry.

Each turn a client submitted has one future (its :class:`~turngate.runtime.engine_api.Ticket`
holds it) until the turn's outcome settles it, and the delta streams of the clients that
asked to see the run as it goes. The registry holds them in memory only: a turn's outcome is
in the store, and a client that lost its future asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from turngate.core.turn import Outcome, Turn
from turngate.errors import UnavailableError
from turngate.runtime.deltas import Delta, DeltaStream
from turngate.types import RunId, TurnId


class OutcomeRegistry:
    """See the module docstring."""

    def __init__(self) -> None:
        self._waiters: dict[TurnId, asyncio.Future[Outcome]] = {}
        self._streams: dict[TurnId, list[DeltaStream]] = {}

    def waiter(self, turn_id: TurnId) -> tuple[asyncio.Future[Outcome], bool]:
        """The future of ``turn_id``'s outcome, and whether it is new (no one waited yet)."""
        waiter = self._waiters.get(turn_id)
        if waiter is not None:
            return waiter, False
        waiter = self._waiters[turn_id] = asyncio.get_running_loop().create_future()
        return waiter, True

    def waiting(self, turn_id: TurnId) -> bool:
        """Whether someone here still waits for ``turn_id``'s outcome."""
        waiter = self._waiters.get(turn_id)
        return waiter is not None and not waiter.done()

    def forget(self, turn_id: TurnId) -> None:
        """No one waits for ``turn_id`` any more (it was not stored, or it is a retry)."""
        self._waiters.pop(turn_id, None)

    def open_stream(self, turn_id: TurnId) -> DeltaStream:
        """A stream of the deltas of the run that serves ``turn_id``."""
        stream = DeltaStream()
        self._streams.setdefault(turn_id, []).append(stream)
        return stream

    def publish(self, turns: Iterable[Turn], run_id: RunId, delta: Delta) -> None:
        """Hand a run's delta to every client streaming one of the turns it serves."""
        for turn in turns:
            for stream in self._streams.get(turn.turn_id, ()):
                stream.put(run_id, delta)

    def settle(self, outcome: Outcome) -> None:
        """The turn ended: its streams end, and whoever waits gets its outcome."""
        for stream in self._streams.pop(outcome.turn_id, ()):
            stream.close()
        waiter = self._waiters.pop(outcome.turn_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def fail(self, turn_ids: Iterable[TurnId], why: Callable[[TurnId], str]) -> None:
        """Tell those waiting for these turns that no outcome is coming now (``why`` says it
        of each)."""
        for turn_id in turn_ids:
            for stream in self._streams.pop(turn_id, ()):
                stream.close()
            waiter = self._waiters.pop(turn_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(UnavailableError(why(turn_id)))
                waiter.exception()  # a waiter nobody awaits must not warn at exit

    def fail_all(self, why: Callable[[TurnId], str]) -> None:
        """:meth:`fail` every turn waited for or streamed."""
        self.fail([*self._waiters, *self._streams], why)
