"""Storage failures, reported and watched.

Every write storage refused is reported (a WARNING naming the session and run, an event, a
metric); the first one starts a watcher that probes storage with a small write, at a doubling
pause up to a cap, until one commits, and then says storage works again. While a session's
owner is itself retrying a write, its retries are the test, and the watcher only waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from turngate.errors import ErrorCode, StorageUnavailableError
from turngate.runtime.events import EventKind
from turngate.store.base import Store
from turngate.types import RunId, TurnId

STORAGE_PROBE_FIRST_S = 0.5
STORAGE_PROBE_MAX_S = 5.0
"""While storage refuses writes, a small write is tried this often (doubling up to the cap),
so that /health says when it works again even if nothing else writes."""

Emit = Callable[..., None]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None] | None"]


class StorageWatch:
    """See the module docstring. ``emit`` is the engine's; ``blocked`` tells whether any
    session's owner is retrying a write; ``spawn`` starts a task of the engine's."""

    def __init__(
        self, store: Store, emit: Emit, *, blocked: Callable[[], bool], spawn: Spawn
    ) -> None:
        self.store = store
        self._emit = emit
        self._blocked = blocked
        self._spawn = spawn
        self._task: asyncio.Task[None] | None = None

    def failed(
        self,
        session_key: str,
        detail: str,
        *,
        run_id: RunId | None = None,
        turn_id: TurnId | None = None,
    ) -> None:
        """A write for ``session_key`` could not be made durable."""
        self._emit(
            EventKind.STORAGE_FAILED,
            session_key,
            run_id=run_id,
            turn_id=turn_id,
            code=ErrorCode.STORAGE_UNAVAILABLE,
            detail=detail,
        )
        if self._task is None:
            self._task = self._spawn(self._watch(), "storage")

    def stop(self) -> None:
        """Stop watching (the engine is stopping)."""
        if self._task is not None:
            self._task.cancel(msg="shutdown")

    async def _watch(self) -> None:
        """Probe storage until a write commits again, then say so."""
        pause_s = STORAGE_PROBE_FIRST_S
        try:
            while True:
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, STORAGE_PROBE_MAX_S)
                if self._blocked():
                    continue  # their own retries are the real test; wait for them
                if self.store.health().writable:
                    break
                try:
                    await self.store.probe()
                except StorageUnavailableError:
                    continue
                break
        finally:
            self._task = None
        failures = self.store.health().write_failures
        self._emit(
            EventKind.STORAGE_RECOVERED,
            "-",
            detail=f"storage takes writes again ({failures} writes failed since start)",
        )
