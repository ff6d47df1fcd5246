"""Leases: a session's hold by one run, with a deadline, renewed only by progress.

A lock with a timeout is not a lease: a long model call outlives a fixed TTL, and an abandoned
hold outlives everything. Here a run holds its session under a :class:`Lease` whose deadline is
the earliest of (last progress + ``stall_timeout_s``), (start + ``run_timeout_s``) and the
turn's own deadline. Progress moves only the first. When the deadline passes, the lease is
*revoked*: the run is cancelled and given ``abort_grace_s`` to end. A run that does not end by
then is *fenced*: the lease is gone, its epoch is dead, its writes are refused.

Transitions, the one table::

    held --renew--> held
    held --revoke--> revoking      (deadline passed, superseded, user abort)
    held --release--> released     (the run ended)
    revoking --release--> released (the run ended after cancellation)
    revoking --fence--> fenced     (the grace period passed; the run is abandoned)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from turngate.core.turn import AbortReason
from turngate.errors import IllegalTransitionError
from turngate.types import Epoch, MonotonicS, RunId


class LeaseState(enum.StrEnum):
    """Where a lease is in its life."""

    HELD = "held"
    REVOKING = "revoking"
    RELEASED = "released"
    FENCED = "fenced"


class LeaseEvent(enum.StrEnum):
    """What can happen to a lease."""

    RENEW = "renew"
    REVOKE = "revoke"
    RELEASE = "release"
    FENCE = "fence"


LEASE_TRANSITIONS: dict[tuple[LeaseState, LeaseEvent], LeaseState] = {
    (LeaseState.HELD, LeaseEvent.RENEW): LeaseState.HELD,
    (LeaseState.HELD, LeaseEvent.REVOKE): LeaseState.REVOKING,
    (LeaseState.HELD, LeaseEvent.RELEASE): LeaseState.RELEASED,
    (LeaseState.REVOKING, LeaseEvent.RELEASE): LeaseState.RELEASED,
    (LeaseState.REVOKING, LeaseEvent.FENCE): LeaseState.FENCED,
}
"""The one table of legal lease transitions."""


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """How long a run may hold its session."""

    stall_timeout_s: float
    run_timeout_s: float
    abort_grace_s: float


@dataclass(slots=True)
class Lease:
    """One run's hold on one session."""

    run_id: RunId
    epoch: Epoch
    terms: LeaseTerms
    granted_at: MonotonicS
    hard_deadline: MonotonicS
    last_progress_at: MonotonicS
    state: LeaseState = LeaseState.HELD
    revoked_at: MonotonicS | None = None
    revoke_reason: AbortReason | None = None

    @classmethod
    def grant(
        cls,
        run_id: RunId,
        epoch: Epoch,
        terms: LeaseTerms,
        now: MonotonicS,
        hard_deadline: MonotonicS,
    ) -> Lease:
        """A new lease held by ``run_id`` from ``now``."""
        return cls(run_id, epoch, terms, now, hard_deadline, last_progress_at=now)

    def _move(self, event: LeaseEvent) -> None:
        try:
            self.state = LEASE_TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalTransitionError("lease", self.state.value, event.value) from None

    def expiry(self) -> tuple[MonotonicS, AbortReason]:
        """When a held lease expires unless renewed, and the reason it would then be revoked."""
        stall_at = self.last_progress_at + self.terms.stall_timeout_s
        run_at = min(self.granted_at + self.terms.run_timeout_s, self.hard_deadline)
        if stall_at < run_at:
            return stall_at, AbortReason.STALLED
        return run_at, AbortReason.RUN_TIMEOUT

    def deadline(self) -> MonotonicS | None:
        """The next instant this lease needs attention, or None once it is over."""
        if self.state is LeaseState.HELD:
            return self.expiry()[0]
        if self.state is LeaseState.REVOKING:
            assert self.revoked_at is not None
            return self.revoked_at + self.terms.abort_grace_s
        return None

    def restart(self, now: MonotonicS) -> None:
        """The run really started at ``now`` (its start waited for storage): both its clocks
        start from there. The turn's own deadline does not move."""
        if self.state is LeaseState.HELD:
            self._move(LeaseEvent.RENEW)
            self.granted_at = max(self.granted_at, now)
            self.last_progress_at = max(self.last_progress_at, now)

    def renew(self, now: MonotonicS) -> None:
        """Record progress: the stall deadline moves, the run deadline does not."""
        if self.state is LeaseState.HELD:
            self._move(LeaseEvent.RENEW)
            self.last_progress_at = max(self.last_progress_at, now)

    def revoke(self, reason: AbortReason, now: MonotonicS) -> None:
        """Start taking the lease back: the run is being cancelled for ``reason``."""
        self._move(LeaseEvent.REVOKE)
        self.revoked_at = now
        self.revoke_reason = reason

    def cancel_sent(self, now: MonotonicS) -> None:
        """The cancellation really reached the run at ``now`` (it waited behind a write for
        storage): its grace runs from there, never from when the revoke was decided."""
        if self.state is LeaseState.REVOKING:
            assert self.revoked_at is not None
            self.revoked_at = max(self.revoked_at, now)

    def release(self) -> None:
        """The run ended; the session is free."""
        self._move(LeaseEvent.RELEASE)

    def fence(self) -> None:
        """The run ignored cancellation past its grace period; its epoch is dead."""
        self._move(LeaseEvent.FENCE)
