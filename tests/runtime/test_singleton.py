"""Work one process at a time may do (a channel's connection), among processes sharing a
store: the second waits; it takes over when the first gives the lease up, or once the first,
cut off from the store, could not renew it; the first then stops its work. Virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from tests.runtime.test_session_claims import ProcessView
from turngate.runtime.clock import LoopClock
from turngate.runtime.singleton import SingletonLease
from turngate.sim.loop import run_virtual
from turngate.store.base import Store
from turngate.store.sqlite import SqliteStore

TTL_S = 6.0
POLL_S = 0.5


def lease(view: ProcessView, holder: str) -> SingletonLease:
    store = cast(Store, view)
    return SingletonLease(store, LoopClock(0.0), "channel:tg", holder, TTL_S, POLL_S)


class Work:
    """Records when each process's work ran (start, end) on the loop's clock."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float | None]] = []

    def of(self, holder: str, until: asyncio.Event) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            loop = asyncio.get_running_loop()
            index = len(self.spans)
            self.spans.append((holder, loop.time(), None))
            try:
                await until.wait()
            finally:
                self.spans[index] = (holder, self.spans[index][1], loop.time())

        return work


def test_the_second_process_waits_and_takes_over_when_the_first_gives_up(tmp_path: Path) -> None:
    work = Work()

    async def main() -> None:
        store = SqliteStore(tmp_path / "s.db")
        await store.open()
        try:
            never = asyncio.Event()
            first = asyncio.create_task(lease(ProcessView(store), "a").run(work.of("a", never)))
            await asyncio.sleep(1.0)
            second = asyncio.create_task(lease(ProcessView(store), "b").run(work.of("b", never)))
            await asyncio.sleep(10.0)
            first.cancel()  # a stops, and gives the lease up
            await asyncio.sleep(10.0)
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)
        finally:
            await store.close()

    run_virtual(main())
    # b started at its first poll after a let go (at 11.0), never beside a.
    (a, a_start, a_end), (b, b_start, b_end) = work.spans
    assert (a, a_start, a_end, b, b_end) == ("a", 0.0, 11.0, "b", 21.0)
    assert 11.0 <= b_start <= 11.0 + POLL_S


def test_a_process_cut_off_from_the_store_stops_its_work_before_another_starts(
    tmp_path: Path,
) -> None:
    work = Work()

    async def main() -> None:
        store = SqliteStore(tmp_path / "s.db")
        await store.open()
        try:
            never = asyncio.Event()
            cut_off = ProcessView(store)
            first = asyncio.create_task(lease(cut_off, "a").run(work.of("a", never)))
            second = asyncio.create_task(lease(ProcessView(store), "b").run(work.of("b", never)))
            await asyncio.sleep(1.0)
            cut_off.cut = True
            await asyncio.sleep(20.0)
            cut_off.cut = False
            await asyncio.sleep(5.0)
            first.cancel()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)
        finally:
            await store.close()

    run_virtual(main())
    (a, a_start, a_end), (b, b_start, _) = work.spans[:2]
    assert (a, b, a_start) == ("a", "b", 0.0)
    assert a_end is not None
    # a stopped once its lease could have expired (no renewal for a TTL), b started after.
    assert a_end <= b_start <= TTL_S + POLL_S
    assert len(work.spans) == 2  # a waits while b holds it
