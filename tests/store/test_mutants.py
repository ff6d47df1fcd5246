"""Tests written for the mutation run (`make mutants`, docs/mutants.md) over the store.

Each kills mutants the engine's tests let survive, because no test under core/, store/ or
runtime/ read them back: the state-directory lock, the store's reads (sessions, transcripts,
turns of a session, cron jobs), steered turns joining a run, deliveries, the probe write.
docs/mutants.md lists which.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import time
from pathlib import Path

import pytest

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Outcome, TurnState
from turngate.errors import (
    ErrorCode,
    StaleEpochError,
    StateDirError,
    StorageUnavailableError,
    StoreError,
)
from turngate.store.base import CronJobState, SessionRecord, StoreHealth, TurnRecord
from turngate.store.sqlite import SqliteStore
from turngate.store.statedir import LOCK_FILE, StateDirLock, describe_holder

KEY = "agent:main:main"
ADDRESS = "http://127.0.0.1:18789"


# --- the state directory belongs to one gateway at a time ---


def test_the_state_dir_lock_is_taken_once_refused_to_a_second_holder_and_free_after_release(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "not" / "yet" / "there"
    first = StateDirLock(state_dir)
    assert not first.held
    first.acquire(ADDRESS)
    assert first.held
    first.acquire("http://elsewhere")  # already held: nothing changes
    note = json.loads((state_dir / LOCK_FILE).read_text())
    assert note["pid"] == os.getpid()
    assert note["address"] == ADDRESS
    assert abs(note["since"] - time.time()) < 60

    second = StateDirLock(state_dir)
    with pytest.raises(StateDirError) as refused:
        second.acquire("http://127.0.0.1:18790")
    assert refused.value.code is ErrorCode.STATE_DIR_IN_USE
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(note["since"]))
    assert refused.value.message == (
        f"state dir {state_dir} is in use by another turngate gateway"
        f" (pid {os.getpid()}, serving {ADDRESS}, since {since});"
        " stop that one, or give this one its own --state-dir"
    )
    assert not second.held

    first.release()
    assert not first.held
    assert (state_dir / LOCK_FILE).read_text() == ""
    first.release()  # twice is harmless
    second.acquire(None)
    try:
        assert second.held
        assert json.loads((state_dir / LOCK_FILE).read_text())["address"] is None
    finally:
        second.release()


def test_the_lock_holder_can_update_the_address_it_serves_at(tmp_path: Path) -> None:
    lock = StateDirLock(tmp_path)
    lock.record(ADDRESS)  # not held: writes nothing
    assert not (tmp_path / LOCK_FILE).exists()
    lock.acquire(None)
    try:
        first = json.loads((tmp_path / LOCK_FILE).read_text())
        lock.record(ADDRESS)
        lines = (tmp_path / LOCK_FILE).read_text().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0]) == {**first, "address": ADDRESS}
    finally:
        lock.release()


def test_a_state_dir_that_cannot_be_created_is_refused_saying_how_to_choose_another(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("not a directory")
    state_dir = tmp_path / "file" / "state"
    with pytest.raises(StateDirError) as refused:
        StateDirLock(state_dir).acquire(ADDRESS)
    assert refused.value.code is ErrorCode.STATE_DIR_UNUSABLE
    assert refused.value.message == (
        f"state dir {state_dir}: cannot use it (Not a directory); give a writable"
        " directory with --state-dir or TURNGATE_STATE_DIR"
    )


def test_a_lock_note_is_described_by_whatever_it_tells_of_its_holder() -> None:
    since = calendar.timegm((2026, 12, 1, 14, 2, 11, 0, 0, 0))
    whole = {"pid": 4242, "address": ADDRESS, "since": since}
    assert describe_holder(json.dumps(whole)) == (
        f"pid 4242, serving {ADDRESS}, since 2026-12-01 14:02:11 UTC"
    )
    assert describe_holder(json.dumps({"address": ADDRESS})) == f"serving {ADDRESS}"
    assert describe_holder(json.dumps({"since": since + 0.5})) == ("since 2026-12-01 14:02:11 UTC")
    assert describe_holder(json.dumps({"pid": "4242", "address": 1, "since": "x"})) == (
        "holder unknown"
    )
    for text in ("", "not json", "[4242]", "{}"):
        assert describe_holder(text) == "holder unknown"


# --- the store's reads and its less travelled writes ---


def record(turn_id: str, key: str = KEY, at: float = 0.0, message: str = "hi") -> TurnRecord:
    agent = key.split(":")[1]
    return TurnRecord(turn_id, key, agent, message, "followup", TurnState.ACCEPTED, at, 60.0)


async def opened(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    return store


@pytest.mark.asyncio
async def test_sessions_are_listed_most_recently_updated_first_with_their_lease_and_turn_counts(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    try:
        assert await store.count_sessions() == 0
        assert await store.sessions(10) == []
        await store.accept_turn(record("a1", "agent:alpha:main", at=1.0))
        await store.accept_turn(record("b1", "agent:beta:main", at=2.0))
        await store.accept_turn(record("c1", "agent:gamma:main", at=2.0))
        await store.accept_turn(record("a2", "agent:alpha:main", at=3.0))
        await store.start_run("agent:alpha:main", "a1", 1, ["a1"], at=4.0)
        assert await store.count_sessions() == 3
        listed = await store.sessions(10)
        assert [s.key for s in listed] == [
            "agent:alpha:main",
            "agent:beta:main",
            "agent:gamma:main",
        ]
        assert [s.key for s in await store.sessions(1, offset=1)] == ["agent:beta:main"]
        assert [s.key for s in await store.sessions(5, offset=2)] == ["agent:gamma:main"]
        alpha = await store.session("agent:alpha:main")
        assert (
            alpha
            == listed[0]
            == SessionRecord(
                key="agent:alpha:main",
                agent_id="alpha",
                epoch=1,
                lease_run_id="a1",
                lease_granted_wall=4.0,
                created_wall=1.0,
                updated_wall=4.0,
                turns_total=2,
                turns_open=2,
            )
        )
        outcome = Outcome("a1", TurnState.REPLIED, "a1", reply="ok")
        await store.end_run("agent:alpha:main", "a1", 1, [outcome], [], at=5.0)
        alpha = await store.session("agent:alpha:main")
        assert alpha is not None
        assert (alpha.lease_run_id, alpha.lease_granted_wall, alpha.updated_wall) == (
            None,
            None,
            5.0,
        )
        assert (alpha.turns_total, alpha.turns_open) == (2, 1)
        assert await store.session("agent:nobody:main") is None
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_sessions_last_turns_and_transcript_lines_are_read_oldest_first(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    try:
        for n in range(1, 5):
            await store.accept_turn(record(f"t{n}", at=float(n), message=f"message {n}"))
        await store.accept_turn(record("other", "agent:beta:main", at=9.0))
        turns = await store.session_turns(KEY, 3)
        assert [(t.turn_id, t.message, t.seq) for t in turns] == [
            ("t2", "message 2", 2),
            ("t3", "message 3", 3),
            ("t4", "message 4", 4),
        ]
        await store.start_run(KEY, "t1", 1, ["t1"], at=10.0)
        exchange = [
            TranscriptItem.user("message 1"),
            TranscriptItem.assistant("one"),
            TranscriptItem.user("more"),
            TranscriptItem.assistant("two"),
        ]
        outcome = Outcome("t1", TurnState.REPLIED, "t1", reply="two")
        await store.end_run(KEY, "t1", 1, [outcome], exchange, at=11.0)
        last = await store.transcript(KEY, 3)
        assert [e.item for e in last] == exchange[1:]
        assert {(e.session_key, e.run_id, e.epoch, e.at_wall) for e in last} == {
            (KEY, "t1", 1, 11.0)
        }
        assert [e.seq for e in last] == sorted(e.seq for e in last)
        assert await store.transcript("agent:beta:main", 10) == []
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_steered_turn_joins_only_the_run_that_holds_the_lease(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        await store.accept_turn(record("a"))
        await store.accept_turn(record("b"))
        await store.accept_turn(record("c"))
        await store.start_run(KEY, "a", 1, ["a"], at=1.0)
        await store.join_run(KEY, "b", "a", 1, at=2.0)
        joined = await store.get_turn("b")
        assert joined is not None
        assert (joined.state, joined.run_id, joined.epoch, joined.started_wall) == (
            TurnState.RUNNING,
            "a",
            1,
            2.0,
        )
        for run_id, epoch in (("a", 2), ("x", 1)):
            with pytest.raises(StaleEpochError) as refused:
                await store.join_run(KEY, "c", run_id, epoch, at=3.0)
            assert (refused.value.session_key, refused.value.run_id, refused.value.epoch) == (
                KEY,
                run_id,
                epoch,
            )
        untouched = await store.get_turn("c")
        assert untouched is not None
        assert (untouched.state, untouched.run_id) == (TurnState.ACCEPTED, None)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_turn_ended_without_running_keeps_its_outcome_and_when_and_its_delivery(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    try:
        await store.accept_turn(record("a"))
        await store.mark_queued(["a"])
        queued = await store.get_turn("a")
        assert queued is not None
        assert queued.state is TurnState.QUEUED
        expired = Outcome(
            "a", TurnState.EXPIRED, "a", code=ErrorCode.TURN_EXPIRED, message="waited too long"
        )
        await store.end_turns([expired], at=7.0)
        await store.set_delivery("a", "suppressed")
        stored = await store.get_turn("a")
        assert stored is not None
        assert stored.outcome() == expired
        assert (stored.ended_wall, stored.delivery) == (7.0, "suppressed")
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_cron_jobs_state_is_saved_replaced_and_read_back_by_job_id(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert await store.cron_jobs() == []
        nightly = CronJobState("nightly", "main", "0 3 * * *", 100.0)
        hourly = CronJobState("hourly", "ops", "0 * * * *", 50.0, last_fire_wall=40.0)
        await store.save_cron_job(nightly)
        await store.save_cron_job(hourly)
        assert await store.cron_jobs() == [hourly, nightly]
        moved = CronJobState("nightly", "other", "0 4 * * *", 200.0, last_fire_wall=100.0)
        await store.save_cron_job(moved)
        assert await store.cron_jobs() == [hourly, moved]
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_the_storage_probe_writes_and_leaves_the_store_healthy(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert store.health() == StoreHealth(True, "", 0)
        await store.probe()
        await store.probe()
        assert store.health().writable
        assert store.db.execute("SELECT n FROM probe WHERE id = 1").fetchone() == (2,)
    finally:
        await store.close()
    with pytest.raises(StoreError, match="used before open"):
        await store.probe()


@pytest.mark.asyncio
async def test_a_store_abandoned_mid_write_loses_that_write_and_tells_its_writer(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    writing = asyncio.create_task(store.accept_turn(record("lost")))
    await asyncio.sleep(0)  # the write is done, its commit not yet
    store.abandon()
    with pytest.raises(StoreError, match="went away"):
        await writing
    again = await opened(tmp_path)
    try:
        assert await again.get_turn("lost") is None
        async with asyncio.timeout(2.0):  # the abandoned connection holds no lock
            assert await again.accept_turn(record("kept")) is None
    finally:
        await again.close()


# --- failed writes: what the writer and the store's health say ---

BIG = "x" * 50_000
"""A message that needs new database pages."""


@pytest.mark.asyncio
async def test_a_full_disk_is_named_to_the_writer_and_counted_until_writes_succeed_again(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    try:
        await store.accept_turn(record("before"))
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        for attempt in (1, 2):
            with pytest.raises(StorageUnavailableError) as refused:
                await store.accept_turn(record("big", message=BIG))
            assert refused.value.message.startswith(
                f"storage {store.path}: could not store the turn: "
            )
            assert refused.value.message.endswith(" [SQLITE_FULL]")
            assert store.health() == StoreHealth(False, refused.value.message, attempt)
        store.db.execute("PRAGMA max_page_count = 1073741823")
        assert await store.accept_turn(record("big", message=BIG)) is None
        assert store.health() == StoreHealth(True, "", 2)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_stale_write_is_undone_alone_and_the_writes_beside_it_are_kept(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    try:
        await store.accept_turn(record("a"))
        kept, stale = await asyncio.gather(
            store.accept_turn(record("b")),
            store.start_run(KEY, "a", 5, ["a"], at=1.0),
            return_exceptions=True,
        )
        assert kept is None
        assert isinstance(stale, StaleEpochError)
        assert (stale.session_key, stale.run_id, stale.epoch) == (KEY, "a", 5)
        assert await store.get_turn("b") is not None
        untouched = await store.get_turn("a")
        assert untouched is not None
        assert untouched.state is TurnState.ACCEPTED
        assert await store.session_epoch(KEY) == 0
        assert store.health() == StoreHealth(True, "", 0)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_turn_is_read_back_exactly_as_it_was_written_at_each_step(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    key = "agent:ops:chat:thread-7"
    written = TurnRecord(
        "t1", key, "ops", "hello", "collect", TurnState.ACCEPTED, 10.0, 30.0, lane="cron"
    )
    try:
        assert await store.accept_turn(written) is None
        assert await store.get_turn("t1") == TurnRecord(
            "t1", key, "ops", "hello", "collect", TurnState.ACCEPTED, 10.0, 30.0, seq=1, lane="cron"
        )
        # A second accept of the same id stores nothing and returns what is stored.
        assert await store.accept_turn(written) == await store.get_turn("t1")
        await store.start_run(key, "t1", 1, ["t1"], at=11.0)
        running = await store.get_turn("t1")
        assert running is not None
        assert (running.state, running.run_id, running.epoch, running.started_wall) == (
            TurnState.RUNNING,
            "t1",
            1,
            11.0,
        )
        assert await store.get_turn("missing") is None
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_run_ends_only_under_the_epoch_that_holds_the_lease(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert await store.session_epoch(KEY) == 0  # never run, not even known
        await store.accept_turn(record("a"))
        assert await store.session_epoch(KEY) == 0
        await store.start_run(KEY, "a", 1, ["a"], at=1.0)
        assert await store.session_epoch(KEY) == 1
        replied = Outcome("a", TurnState.REPLIED, "a", reply="ok")
        for run_id, epoch in (("a", 2), ("b", 1)):
            with pytest.raises(StaleEpochError) as refused:
                await store.end_run(
                    KEY, run_id, epoch, [replied], [TranscriptItem.user("hi")], at=2.0
                )
            assert (refused.value.session_key, refused.value.run_id, refused.value.epoch) == (
                KEY,
                run_id,
                epoch,
            )
        running = await store.get_turn("a")
        assert running is not None
        assert running.state is TurnState.RUNNING
        assert await store.transcript(KEY, 10) == []
        await store.end_run(KEY, "a", 1, [replied], [TranscriptItem.user("hi")], at=2.0)
        ended = await store.get_turn("a")
        assert ended is not None
        assert (ended.state, ended.ended_wall) == (TurnState.REPLIED, 2.0)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_closing_the_store_commits_the_writes_still_waiting_for_their_commit(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path)
    writing = asyncio.create_task(store.accept_turn(record("last")))
    await asyncio.sleep(0)  # the write is done, its commit not yet
    await store.close()
    assert await writing is None
    again = await opened(tmp_path)
    try:
        assert await again.get_turn("last") is not None
    finally:
        await again.close()
