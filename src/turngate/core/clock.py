"""The clock protocol the core and runtime are written against, and a manual clock for tests."""

from __future__ import annotations

from typing import Protocol

from turngate.types import MonotonicS, WallS


class Clock(Protocol):
    """Where time comes from. Core code takes ``now`` values; only runtimes hold a Clock."""

    def now(self) -> MonotonicS:
        """Monotonic seconds, for deadlines and ages."""
        ...

    def wall(self) -> WallS:
        """Unix seconds, for records people read and for deadlines that must survive a restart."""
        ...


class ManualClock:
    """A clock that moves only when told to. For tests of the core."""

    def __init__(self, start: MonotonicS = 0.0, wall_start: WallS = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start

    def now(self) -> MonotonicS:
        return self._now

    def wall(self) -> WallS:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> MonotonicS:
        """Move time forward by ``seconds`` (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError(f"seconds: cannot move a clock backward ({seconds})")
        self._now += seconds
        return self._now
