"""What the engine's callers hand it and get back: its settings, a message to admit, the
ticket of an admitted turn, and the figures of a snapshot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from turngate.core.keys import SessionKey
from turngate.core.lease import LeaseTerms
from turngate.core.queue import QueueMode
from turngate.core.session import SessionPolicy
from turngate.core.turn import Outcome
from turngate.runtime.deltas import DeltaStream
from turngate.store.base import StoreHealth
from turngate.types import MonotonicS, RunId, TurnId


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Limits and timeouts of the coordination runtime."""

    queue_turns_max: int = 100
    stall_timeout_s: float = 60.0
    run_timeout_s: float = 600.0
    abort_grace_s: float = 5.0
    turn_timeout_s: float = 900.0
    history_entries_max: int = 40
    restart_attempts_max: int = 3
    shutdown_grace_s: float = 5.0
    system_prompt: str | None = None
    process_name: str = "local"
    """This process's name among those sharing the store (its claims' holder)."""
    claim_ttl_s: float = 10.0
    """How long a claim on a session lasts unless renewed."""
    claim_poll_s: float = 1.0
    """How often the process looks for sessions to run and turns run elsewhere."""

    def policy(self) -> SessionPolicy:
        """The session policy these settings describe."""
        return SessionPolicy(
            queue_turns_max=self.queue_turns_max,
            lease_terms=LeaseTerms(
                stall_timeout_s=self.stall_timeout_s,
                run_timeout_s=self.run_timeout_s,
                abort_grace_s=self.abort_grace_s,
            ),
        )

    def __post_init__(self) -> None:
        for name in ("stall_timeout_s", "run_timeout_s", "turn_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.abort_grace_s < 0:
            raise ValueError(f"abort_grace_s: must be >= 0, got {self.abort_grace_s}")
        if self.queue_turns_max < 1:
            raise ValueError(f"queue_turns_max: must be >= 1, got {self.queue_turns_max}")
        if self.history_entries_max < 0:
            raise ValueError(f"history_entries_max: must be >= 0, got {self.history_entries_max}")


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """A message to admit as a turn."""

    session_key: SessionKey
    message: str
    turn_id: TurnId | None = None
    mode: QueueMode = QueueMode.FOLLOWUP
    timeout_s: float | None = None
    lane: str = "direct"
    stream: bool = False
    """Also hand back the run's deltas as they come (:attr:`Ticket.deltas`)."""


OUTCOME_WAIT_MARGIN_S = 5.0
"""How long past a turn's own deadline whoever waits for its outcome holds on: the engine
ends every turn by its deadline plus the abort grace, so this is only a backstop."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted turn: its id, whether it was a retry, and where its outcome will appear."""

    turn_id: TurnId
    session_key: str
    duplicate: bool
    deadline: MonotonicS
    outcome: asyncio.Future[Outcome]
    deltas: DeltaStream | None = None
    """The run's text as it is produced, when the request asked to stream."""

    @property
    def wait_deadline(self) -> float:
        """The loop time until which a wait for the outcome holds on."""
        return self.deadline + OUTCOME_WAIT_MARGIN_S

    async def wait(self) -> Outcome:
        """The turn's outcome, waited for until :attr:`wait_deadline` (then
        :class:`TimeoutError`); the engine's own failure (``shutdown``, the store) as it gave
        it. Cancelling the wait leaves the turn alone."""
        if self.outcome.done():
            return self.outcome.result()
        async with asyncio.timeout_at(self.wait_deadline):
            return await asyncio.shield(self.outcome)


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One held lease, as /health shows it."""

    session_key: str
    run_id: RunId
    epoch: int
    state: str
    age_s: float
    since_progress_s: float
    stall_timeout_s: float
    run_timeout_s: float
    step: int = 1
    """The run's model step (the first, or the one after its latest tool results)."""
    tools: tuple[tuple[str, float], ...] = ()
    """The tool calls under way: each tool's name and how long it has run."""

    @property
    def stalled(self) -> bool:
        """Being cancelled, or without progress for half its stall timeout or more."""
        return self.state != "held" or self.since_progress_s >= self.stall_timeout_s / 2

    @property
    def slow(self) -> bool:
        """Older than half its run timeout."""
        return self.age_s >= self.run_timeout_s / 2


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """Figures for /health and /metrics."""

    active_sessions: int
    running_turns: int
    queued_turns: int
    leases: tuple[LeaseView, ...]
    storage: StoreHealth
    storage_blocked: tuple[str, ...] = ()
    """Sessions whose next write waits for storage to take writes again."""
    commands_pending: int = 0
    """Commands posted to session owners and not yet taken (a turn just accepted, say)."""
    sessions_held: int = 0
    """Sessions this process holds the claim of (it runs their turns)."""

    @property
    def degraded(self) -> bool:
        """Storage refuses writes, or a session still waits for it to take one."""
        return not self.storage.writable or bool(self.storage_blocked)

    @property
    def settled(self) -> bool:
        """Nothing running, queued, about to be taken, or waiting to be written down."""
        return not (
            self.running_turns or self.queued_turns or self.storage_blocked or self.commands_pending
        )

    @property
    def oldest_lease_age_s(self) -> float:
        """Age of the oldest held lease (0 when none)."""
        return max((lease.age_s for lease in self.leases), default=0.0)
