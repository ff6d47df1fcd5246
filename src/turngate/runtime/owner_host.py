"""What a session owner (and the runs it starts) needs of the engine that hosts it: a small
protocol, so that the owner depends on these and nothing else of the
:class:`~turngate.runtime.engine.Engine` (which builds and routes to owners)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from turngate.core.clock import Clock
from turngate.core.turn import Outcome, Turn
from turngate.errors import StaleEpochError
from turngate.runtime.claims import SessionClaims
from turngate.runtime.deltas import Delta
from turngate.runtime.engine_api import EngineSettings
from turngate.runtime.events import EventKind
from turngate.runtime.outbound import OutboundRouter
from turngate.store.base import Store
from turngate.types import Epoch, RunId, TurnId

if TYPE_CHECKING:
    from turngate.runtime.owner import Command, SessionOwner

T = TypeVar("T")


class OwnerHost(Protocol):
    """The engine as a session owner sees it."""

    @property
    def clock(self) -> Clock:
        """The time (monotonic for deadlines, wall for records)."""
        ...

    @property
    def store(self) -> Store:
        """Where the session's turns, lease and transcript are written."""
        ...

    @property
    def settings(self) -> EngineSettings:
        """The engine's limits and timeouts."""
        ...

    @property
    def claims(self) -> SessionClaims:
        """This process's claims on sessions (who runs which session)."""
        ...

    def announce_ended(self, session_key: str) -> None:
        """Tell the processes sharing the store that turns of ``session_key`` ended (some of
        their clients may wait for them)."""
        ...

    @property
    def outbound(self) -> OutboundRouter:
        """What a run's end owes chat platforms."""
        ...

    def emit(self, kind: EventKind, session_key: str, **fields: Any) -> None:
        """Report what the owner did (metrics, checkers, logs)."""
        ...

    def route(self, session_key: str, command: Command) -> None:
        """Hand a command to the session's owner (a run's progress, its end)."""
        ...

    def spawn_run(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start a run's task, supervised by the engine."""
        ...

    def publish_delta(self, turns: Iterable[Turn], run_id: RunId, delta: Delta) -> None:
        """Hand a run's delta to the clients streaming its turns."""
        ...

    def deliver(self, session_key: str, outcome: Outcome, lane: str) -> None:
        """Hand a turn's outcome to whoever waits for it."""
        ...

    def stale_write_refused(self, error: StaleEpochError, *, step: bool = False) -> None:
        """Report a write the store refused because the run lost its lease."""
        ...

    def storage_failed(
        self,
        session_key: str,
        detail: str,
        *,
        run_id: RunId | None = None,
        turn_id: TurnId | None = None,
    ) -> None:
        """Report a write that could not be made durable."""
        ...

    def owner_finished(self, owner: SessionOwner, epoch: Epoch | None = None) -> None:
        """The owner has nothing left to do and its lease is released; ``epoch`` is the
        session's, when every write of the owner is durable."""
        ...
