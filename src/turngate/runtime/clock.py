"""The runtime's clock: the running event loop's time.

This is the only module that reads ``loop.time()``. Because deadlines are armed on the same
loop, a virtual-time loop (the simulator's) moves every deadline and every ``now`` together.
"""

from __future__ import annotations

import asyncio
import time

from turngate.types import MonotonicS, WallS


class LoopClock:
    """Monotonic time from the running loop; wall time derived from it at a fixed offset."""

    def __init__(self, wall_at_zero: WallS | None = None) -> None:
        self._wall_at_zero = wall_at_zero

    def now(self) -> MonotonicS:
        return asyncio.get_running_loop().time()

    def wall(self) -> WallS:
        if self._wall_at_zero is None:
            self._wall_at_zero = time.time() - self.now()
        return self._wall_at_zero + self.now()
