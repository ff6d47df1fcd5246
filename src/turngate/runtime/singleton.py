"""Work that one gateway process at a time may do, among the processes sharing a store: a
channel's platform connection (Telegram refuses a second poller of one bot token; a second
Discord or WebSocket connection would take every message twice).

:meth:`SingletonLease.run` waits until this process holds the named lease
(:meth:`~turngate.store.base.Store.hold_singleton`), runs the work while it renews the lease
every third of its time to live, and gives the lease up when the work ends. A lease found
taken by another process (this one was paused, or cut off from the store, past its expiry)
stops the work at once, and the process waits to take the lease again: the work then runs in
the other process meanwhile, never in both for longer than one renewal period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from turngate.core.clock import Clock
from turngate.errors import StoreError
from turngate.store.base import Store
from turngate.types import MonotonicS

log = logging.getLogger("turngate.runtime")


class SingletonLease:
    """See the module docstring. ``holder`` is this process's name; ``poll_s`` how often a
    process waiting for the lease tries to take it."""

    def __init__(
        self, store: Store, clock: Clock, name: str, holder: str, ttl_s: float, poll_s: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.held = False
        """Whether this process holds the lease now (for ``/health``)."""

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` while holding the lease (see the module docstring); return when it
        returns."""
        try:
            while True:
                await self._take()
                if await self._work_while_held(work):
                    return
                log.warning(
                    "%s: another gateway process took it over (this one could not renew its"
                    " lease in time); stopped here, waiting to take it again",
                    self.name,
                )
        finally:
            if self.held:
                self.held = False
                with contextlib.suppress(StoreError):
                    await self.store.release_singleton(self.name, self.holder)

    async def _take(self) -> None:
        while True:
            with contextlib.suppress(StoreError):
                if await self.store.hold_singleton(
                    self.name, self.holder, self.clock.wall(), self.ttl_s
                ):
                    self.held = True
                    return
            await asyncio.sleep(self.poll_s)

    async def _work_while_held(self, work: Callable[[], Awaitable[None]]) -> bool:
        """True when the work ended by itself; False when the lease was lost (and the work
        stopped)."""
        job = asyncio.ensure_future(work())
        keeper = asyncio.ensure_future(self._keep())
        try:
            await asyncio.wait({job, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (job, keeper):
                task.cancel()
            for task in (job, keeper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if job.done() and not job.cancelled() and keeper.cancelled():
            job.result()  # the work's own error, if any
            return True
        self.held = False
        return False

    async def _keep(self) -> None:
        """Renew until the lease is lost (returns), or until cancelled."""
        renewed_at: MonotonicS = self.clock.now()
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                kept = await self.store.hold_singleton(
                    self.name, self.holder, self.clock.wall(), self.ttl_s
                )
            except StoreError:
                # Not renewed: once the lease may have expired, another may hold it.
                if self.clock.now() - renewed_at >= self.ttl_s:
                    return
                continue
            if not kept:
                return
            renewed_at = self.clock.now()
