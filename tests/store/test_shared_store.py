"""A store several gateway processes share: PostgreSQL. Each process opens it under its own
instance name (a second process with the same name is refused at open); a notice one process
sends reaches every process listening, through a lost connection too. SQLite, which one
process uses at a time, is not shared: its notices never come.

The notice tests follow the listening connection in ``pg_stat_activity`` from a connection of
their own, so that they send only once the listener listens (a notice sent before is lost, by
design: processes also poll).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from turngate.core.turn import TurnState
from turngate.errors import StoreError
from turngate.store.base import Notice, NoticeKind, TurnRecord
from turngate.store.postgres import PostgresStore, safe_url
from turngate.store.sqlite import SqliteStore

KEY = "agent:main:shared"
LISTENING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND query = 'LISTEN turngate' AND state = 'idle' ORDER BY pid"
)
"""The backends listening for notices, idle (their LISTEN done)."""


@asynccontextmanager
async def opened(url: str, instance: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, instance=instance)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def watching(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the test's own, to see the listeners and send by hand."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watch:
        yield watch


async def listeners_once(watch: psycopg.AsyncConnection[Any], wanted: int) -> list[int]:
    """The listening backends' pids, once there are ``wanted`` of them (each look awaits the
    database, so the listener runs meanwhile); at most 5 s."""
    async with asyncio.timeout(5):
        while True:
            pids = [row[0] for row in await (await watch.execute(LISTENING)).fetchall()]
            if len(pids) == wanted:
                return pids


async def next_of(notices: AsyncIterator[Notice]) -> Notice:
    return await anext(notices)


@pytest.mark.asyncio
async def test_a_notice_one_process_sends_reaches_another_and_unreadable_ones_are_skipped(
    postgres_url: str,
) -> None:
    async with (
        opened(postgres_url, "a") as a,
        opened(postgres_url, "b") as b,
        watching(postgres_url) as watch,
    ):
        assert (a.shared, b.shared) == (True, True)
        heard = b.notices()
        waiting = asyncio.create_task(next_of(heard))
        await listeners_once(watch, 1)
        await a.notify(Notice(NoticeKind.TURN, KEY))
        assert await asyncio.wait_for(waiting, timeout=5) == Notice(NoticeKind.TURN, KEY)
        for payload in ("nonsense here", "turn", f"ended {KEY}"):
            await watch.execute("SELECT pg_notify('turngate', %s)", (payload,))
        assert await asyncio.wait_for(anext(heard), timeout=5) == Notice(NoticeKind.ENDED, KEY)
        assert isinstance(heard, AsyncGenerator)
        await heard.aclose()  # the caller is done: the connection closes
        await listeners_once(watch, 0)


@pytest.mark.asyncio
async def test_notices_resume_on_a_new_connection_when_theirs_is_lost_and_end_with_the_caller(
    postgres_url: str,
) -> None:
    async with opened(postgres_url, "a") as a, watching(postgres_url) as watch:
        heard = a.notices()
        waiting = asyncio.create_task(next_of(heard))
        (lost,) = await listeners_once(watch, 1)
        await watch.execute("SELECT pg_terminate_backend(%s)", (lost,))
        async with asyncio.timeout(5):
            while (await listeners_once(watch, 1)) == [lost]:
                pass
        await a.notify(Notice(NoticeKind.ENDED, KEY))
        assert await asyncio.wait_for(waiting, timeout=5) == Notice(NoticeKind.ENDED, KEY)
        # A caller cancelled while waiting ends the iteration and its connection.
        waiting = asyncio.create_task(next_of(heard))
        await listeners_once(watch, 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await listeners_once(watch, 0)
        with pytest.raises(StopAsyncIteration):
            await anext(heard)


@pytest.mark.asyncio
async def test_two_processes_claiming_a_session_at_once_take_turns_and_one_holds_it(
    postgres_url: str,
) -> None:
    async with opened(postgres_url, "a") as a, opened(postgres_url, "b") as b:
        turn = TurnRecord("t1", KEY, "main", "hi", "followup", TurnState.ACCEPTED, 1.0, 60.0)
        await a.accept_turn(turn)
        by_a, by_b = await asyncio.gather(
            a.claim_session(KEY, "a", at=2.0, ttl_s=10.0),
            b.claim_session(KEY, "b", at=2.0, ttl_s=10.0),
        )
        assert sorted([by_a.taken, by_b.taken]) == [False, True]
        winner = "a" if by_a.taken else "b"
        assert by_a.claim.holder == by_b.claim.holder == winner
        assert [len(c.open_turns) for c in (by_a, by_b)] == [int(by_a.taken), int(by_b.taken)]


@pytest.mark.asyncio
async def test_one_process_per_instance_name_and_any_number_of_names_per_database(
    postgres_url: str,
) -> None:
    async with opened(postgres_url, "gw-1"), opened(postgres_url, "gw-2"):
        twin = PostgresStore(postgres_url, instance="gw-1")
        with pytest.raises(StoreError) as refused:
            await twin.open()
        assert refused.value.message == (
            f"store {safe_url(postgres_url)}: another gateway process runs as instance 'gw-1'"
            " on this database; give each process its own instance (the instance setting)"
        )
    async with opened(postgres_url, "gw-1"):
        pass  # free again once its holder closed


@pytest.mark.asyncio
async def test_an_sqlite_store_is_not_shared_and_its_notices_never_come(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    try:
        assert not store.shared
        heard = store.notices()
        waiting = asyncio.create_task(next_of(heard))
        await store.notify(Notice(NoticeKind.TURN, KEY))
        for _ in range(10):
            await asyncio.sleep(0)  # let the iteration run: it has nothing to give
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await store.close()
