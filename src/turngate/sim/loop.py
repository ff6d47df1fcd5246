"""An asyncio event loop on virtual time.

When every task is blocked, the loop does not sleep: it jumps its clock to the next timer and
runs it. Ready callbacks always run before time moves (the ready queue is drained first), so
"the same tick" means the same thing on every run. A schedule of simulated hours runs in
milliseconds, and it runs identically every time.

The loop has no real I/O to wait for. If it has neither ready callbacks nor timers, every
task is waiting for something that will never come: it raises :class:`VirtualDeadlockError`
instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualDeadlockError(RuntimeError):
    """Every task is blocked and no timer is armed: nothing can ever happen again."""


class _JumpingSelector(selectors.DefaultSelector):
    """Polls real file descriptors without blocking; a blocking wait moves virtual time."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise VirtualDeadlockError(
                "every task is blocked and no timer is armed: the program can never continue"
            )
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` is virtual and jumps to the next timer when idle."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = start

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``."""
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop` and close it."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
