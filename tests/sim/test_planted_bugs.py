"""Proof that the simulator can fail: four bugs of the field reports, and two of a full disk,
planted one at a time.

Each fixture patches the real runtime the way a plausible mistake would, for this test only.
The simulator must find a violating seed within 1,000 seeds, and name the invariant the bug
breaks. The seed found is printed (``pytest -s``) so it can be replayed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from turngate.core.effects import Effect, EndRun
from turngate.core.lease import Lease, LeaseState
from turngate.core.session import SessionCore
from turngate.runtime.owner import SessionOwner
from turngate.sim.runner import SimResult, run_seed
from turngate.store.sqlite_commit import GroupCommits, _GroupCommit
from turngate.types import Epoch, MonotonicS, RunId

T = TypeVar("T")

SEEDS_MAX = 1000


def first_failure() -> SimResult:
    for seed in range(SEEDS_MAX):
        result = run_seed(seed)
        if not result.ok:
            print(f"found by seed {seed}: {result.violations[:1] or result.error[-300:]}")
            return result
    pytest.fail(f"no seed in 0..{SEEDS_MAX - 1} found the planted bug")


@pytest.fixture
def reply_before_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeds 000/001: the outcome reaches the client before the session's hold is released."""
    original = SessionOwner._apply

    async def apply(self: SessionOwner, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, EndRun):
                for outcome in effect.outcomes:
                    self.engine.deliver(self.session_key, outcome, "direct")
        await original(self, effects)

    monkeypatch.setattr(SessionOwner, "_apply", apply)


@pytest.fixture
def wait_without_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 002: the owner waits for its next command with no deadline, so nothing expires."""

    async def wait(self: SessionOwner, deadline: MonotonicS) -> bool:
        del deadline
        self._wake.clear()
        await self._wake.wait()
        return True

    monkeypatch.setattr(SessionOwner, "_wait", wait)


@pytest.fixture
def recovery_without_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 003: recovery frees a stuck session at once, not waiting for the run to end."""
    original = Lease.deadline

    def deadline(self: Lease) -> MonotonicS | None:
        if self.state is LeaseState.REVOKING:
            return self.revoked_at
        return original(self)

    monkeypatch.setattr(Lease, "deadline", deadline)


@pytest.fixture
def callback_without_generation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004: a finished run's callback is acted upon without checking its generation."""

    def holds(self: SessionCore, run_id: RunId, epoch: Epoch) -> bool:
        del run_id, epoch
        return self.active is not None

    monkeypatch.setattr(SessionCore, "_holds", holds)


@pytest.fixture
def failed_commit_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the group commit acknowledges its writers even when COMMIT failed (the
    issue's "ROLLBACK inside the callback" class: waiters told the wrong thing)."""

    def commit(self: GroupCommits, group: _GroupCommit) -> None:
        if group.lost is not None:
            return
        if self._group is group:
            self._group = None
        with contextlib.suppress(sqlite3.Error):
            self.connection.execute("COMMIT")
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(None)

    monkeypatch.setattr(GroupCommits, "_commit", commit)


@pytest.fixture
def storage_failure_ends_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the session's owner gives up on a failed write instead of trying again
    (seed 002's silent session: its turns wait for a restart)."""

    async def durably(
        self: SessionOwner, what: str, run_id: RunId | None, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        del what, run_id
        return await attempt()

    monkeypatch.setattr(SessionOwner, "_durably", durably)


@pytest.mark.usefixtures("failed_commit_acknowledged")
def test_the_simulator_finds_writes_acknowledged_that_a_full_disk_lost() -> None:
    # Its state and the store's part ways: a lease the store still shows (I5), a turn
    # acknowledged but not stored (I7), or an outcome the store does not have (I1).
    assert first_failure().violations[0].invariant in {"I1", "I5", "I7"}


@pytest.mark.usefixtures("storage_failure_ends_the_owner")
def test_the_simulator_finds_a_session_silenced_by_a_full_disk() -> None:
    invariants = {violation.invariant for violation in first_failure().violations}
    assert invariants & {"I1", "I4"}


@pytest.mark.usefixtures("reply_before_release")
def test_the_simulator_finds_a_reply_delivered_before_release() -> None:
    assert first_failure().violations[0].invariant == "I5"


@pytest.mark.usefixtures("wait_without_deadline")
def test_the_simulator_finds_a_wait_with_no_deadline() -> None:
    assert first_failure().violations[0].invariant == "I4"


@pytest.mark.usefixtures("recovery_without_release")
def test_the_simulator_finds_recovery_that_does_not_wait_for_release() -> None:
    assert first_failure().violations[0].invariant == "I3"


@pytest.mark.usefixtures("callback_without_generation_check")
def test_the_simulator_finds_a_stale_callback_acted_upon() -> None:
    assert first_failure().violations[0].invariant == "I6"


def test_without_planted_bugs_the_same_seeds_pass() -> None:
    for seed in range(50):
        result = run_seed(seed)
        assert result.ok, (seed, result.violations[:3], result.error[-500:])
