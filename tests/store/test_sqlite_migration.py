"""The SQLite file across versions: a file an older turngate wrote opens with its data intact,
for writing (migrated in place, the outbox added, the transcript typed, sessions claimable) and
read-only (as it is, with no deliveries, its transcript read as user and assistant text, its
sessions held by nobody); token usage is stored with each outcome and read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem
from turngate.core.turn import Outcome, TurnState, Usage
from turngate.errors import ErrorCode, StoreError
from turngate.store.base import SessionClaim, TurnRecord
from turngate.store.sqlite import SqliteStore
from turngate.store.sqlite_schema import SCHEMA_VERSION

KEY = "agent:main:main"

V1_SCHEMA = """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_run_id TEXT,
    lease_granted_wall REAL,
    created_wall REAL NOT NULL,
    updated_wall REAL NOT NULL
);
CREATE TABLE turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    message TEXT NOT NULL,
    queue_mode TEXT NOT NULL,
    state TEXT NOT NULL,
    accepted_wall REAL NOT NULL,
    timeout_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    epoch INTEGER,
    started_wall REAL,
    ended_wall REAL,
    reply TEXT,
    error_code TEXT,
    error_message TEXT,
    lane TEXT NOT NULL DEFAULT 'direct',
    delivery TEXT
);
CREATE INDEX turns_by_session ON turns(session_key, seq);
CREATE INDEX turns_open ON turns(state) WHERE state IN ('accepted', 'queued', 'running');
CREATE TABLE transcript (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at_wall REAL NOT NULL
);
CREATE INDEX transcript_by_session ON transcript(session_key, seq);
CREATE TABLE probe (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE cron_jobs (
    job_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_fire_wall REAL NOT NULL,
    last_fire_wall REAL
);
"""
"""The schema turngate wrote as version 1, frozen here: what old state dirs hold."""

V3_CHANGES = """
ALTER TABLE turns ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE turns ADD COLUMN completion_tokens INTEGER;
CREATE TABLE deliveries (
    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    run_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    parts_sent INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_wall REAL NOT NULL,
    created_wall REAL NOT NULL,
    ended_wall REAL,
    last_error TEXT
);
CREATE INDEX deliveries_pending ON deliveries(channel_id, delivery_id) WHERE state = 'pending';
CREATE INDEX deliveries_by_session ON deliveries(session_key, delivery_id);
"""
"""What versions 2 (token usage) and 3 (the outbox) added to version 1, frozen here: with
:data:`V1_SCHEMA`, the shape of a version-3 file, whose transcript is untyped."""


def version_1_file(path: Path) -> Path:
    """A version-1 file as turngate 1 left it: one replied turn, one failed, one queued."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(V1_SCHEMA)
        db.execute(
            "INSERT INTO sessions (key, agent_id, epoch, created_wall, updated_wall)"
            " VALUES (?, 'main', 2, 1.0, 3.0)",
            (KEY,),
        )
        db.executemany(
            "INSERT INTO turns (turn_id, session_key, message, queue_mode, state, accepted_wall,"
            " timeout_s, run_id, epoch, reply, error_code, error_message, ended_wall)"
            " VALUES (?, ?, ?, 'followup', ?, ?, 60.0, ?, ?, ?, ?, ?, ?)",
            [
                ("t1", KEY, "hi", "replied", 1.0, "t1", 1, "echo: hi", None, None, 1.5),
                ("t2", KEY, "boom", "failed", 2.0, "t2", 2, None, "provider_error", "x", 2.5),
                ("t3", KEY, "later", "queued", 3.0, None, None, None, None, None, None),
            ],
        )
        db.executemany(
            "INSERT INTO transcript (session_key, role, text, run_id, epoch, at_wall)"
            " VALUES (?, ?, ?, 't1', 1, 1.5)",
            [(KEY, "user", "hi"), (KEY, "assistant", "echo: hi")],
        )
        db.execute("PRAGMA user_version=1")
    finally:
        db.close()
    return path


def version_3_file(path: Path) -> Path:
    """A version-3 file: the turns and transcript of :func:`version_1_file` (the replied
    turn with its usage), written before transcript entries had kinds."""
    version_1_file(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(V3_CHANGES)
        db.execute("UPDATE turns SET prompt_tokens = 5, completion_tokens = 2 WHERE turn_id = 't1'")
        db.execute("PRAGMA user_version=3")
    finally:
        db.close()
    return path


V4_CHANGES = """
ALTER TABLE transcript ADD COLUMN kind TEXT;
ALTER TABLE transcript ADD COLUMN data TEXT;
"""
"""What version 4 (typed transcript entries) added to version 3, frozen here."""


def version_4_file(path: Path) -> Path:
    """A version-4 file: the data of :func:`version_3_file`, before sessions had claims."""
    version_3_file(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(V4_CHANGES)
        db.execute("PRAGMA user_version=4")
    finally:
        db.close()
    return path


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()


async def assert_version_1_data_intact(store: SqliteStore) -> None:
    """The turns and transcript of :func:`version_1_file`, read through ``store``."""
    replied, failed, queued = await store.session_turns(KEY, 10)
    assert replied.outcome() == Outcome("t1", TurnState.REPLIED, "t1", reply="echo: hi")
    assert failed.outcome() == Outcome(
        "t2", TurnState.FAILED, "t2", code=ErrorCode.PROVIDER_ERROR, message="x"
    )
    assert (queued.turn_id, queued.state, queued.outcome()) == ("t3", TurnState.QUEUED, None)
    assert [t.usage for t in (replied, failed, queued)] == [None, None, None]
    assert await store.get_turn("t1") == replied
    transcript = await store.transcript(KEY, 10)
    assert [e.item for e in transcript] == [
        TranscriptItem.user("hi"),
        TranscriptItem.assistant("echo: hi"),
    ]
    session = await store.session(KEY)
    assert session is not None
    assert (session.epoch, session.turns_total, session.turns_open) == (2, 3, 1)


@pytest.mark.asyncio
async def test_a_version_1_file_is_migrated_on_open_and_keeps_every_turn(tmp_path: Path) -> None:
    path = version_1_file(tmp_path / "turngate.db")
    store = SqliteStore(path)
    await store.open()
    try:
        await assert_version_1_data_intact(store)
        # The migrated file takes usage for the turn still open.
        await store.start_run(KEY, "t3", 3, ["t3"], at=4.0)
        outcome = Outcome("t3", TurnState.REPLIED, "t3", reply="echo: later", usage=Usage(8, 3))
        await store.end_run(KEY, "t3", 3, [outcome], [TranscriptItem.user("later")], at=5.0)
        stored = await store.get_turn("t3")
        assert stored is not None
        assert stored.outcome() == outcome
    finally:
        await store.close()
    assert user_version(path) == SCHEMA_VERSION == 5
    assert {"prompt_tokens", "completion_tokens"} <= columns(path, "turns")
    assert {"claim_holder", "claim_expires_wall"} <= columns(path, "sessions")
    assert "deliveries" in tables(path)
    assert {"kind", "data"} <= columns(path, "transcript")
    # A second open finds nothing to do.
    again = SqliteStore(path)
    await again.open()
    try:
        assert [t.usage for t in await again.session_turns(KEY, 10)] == [None, None, Usage(8, 3)]
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_a_read_only_open_reads_a_version_1_file_as_it_is(tmp_path: Path) -> None:
    path = version_1_file(tmp_path / "turngate.db")
    store = SqliteStore(path, readonly=True)
    await store.open()
    try:
        await assert_version_1_data_intact(store)
        assert await store.outbox.of_session(KEY, 10) == []
        assert set((await store.outbox.counts()).values()) == {0}
        assert await store.session_claim(KEY) == SessionClaim(KEY, None, None, 2)
        assert [t.turn_id for t in await store.open_turns(KEY)] == ["t3"]
    finally:
        await store.close()
    assert user_version(path) == 1
    assert "prompt_tokens" not in columns(path, "turns")
    assert "deliveries" not in tables(path)


TOOL_TURN = (
    TranscriptItem.user("weather?"),
    TranscriptItem.assistant("Let me look."),
    TranscriptItem.calls([ToolCall("c1", "weather", '{"city": "Lisbon"}')]),
    TranscriptItem.tool_result("c1", "weather", "no such city", is_error=True),
    TranscriptItem.assistant("I could not find it."),
)
"""A run's exchange with a tool call in it: what version 4 can write."""


@pytest.mark.asyncio
async def test_a_version_3_file_is_migrated_on_open_and_takes_typed_entries(
    tmp_path: Path,
) -> None:
    path = version_3_file(tmp_path / "turngate.db")
    store = SqliteStore(path)
    await store.open()
    try:
        transcript = await store.transcript(KEY, 10)
        assert [e.item for e in transcript] == [
            TranscriptItem.user("hi"),
            TranscriptItem.assistant("echo: hi"),
        ]
        assert [t.usage for t in await store.session_turns(KEY, 10)] == [Usage(5, 2), None, None]
        await store.start_run(KEY, "t3", 3, ["t3"], at=4.0)
        outcome = Outcome("t3", TurnState.REPLIED, "t3", reply="I could not find it.")
        await store.end_run(KEY, "t3", 3, [outcome], TOOL_TURN, at=5.0)
        transcript = await store.transcript(KEY, 10)
    finally:
        await store.close()
    assert [e.item for e in transcript[2:]] == list(TOOL_TURN)
    assert [(e.run_id, e.epoch) for e in transcript] == [("t1", 1)] * 2 + [("t3", 3)] * 5
    assert user_version(path) == SCHEMA_VERSION == 5
    assert {"kind", "data"} <= columns(path, "transcript")
    # The rows written before keep no kind (read as their role): none was rewritten.
    db = sqlite3.connect(path)
    try:
        kinds = [row[0] for row in db.execute("SELECT kind FROM transcript ORDER BY seq")]
    finally:
        db.close()
    assert kinds == [None, None, "user", "assistant", "tool_calls", "tool_result", "assistant"]
    # A second open finds nothing to do and reads the same.
    again = SqliteStore(path)
    await again.open()
    try:
        assert [e.item for e in await again.transcript(KEY, 10)] == [e.item for e in transcript]
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_a_read_only_open_reads_a_version_3_transcript_as_user_and_assistant_text(
    tmp_path: Path,
) -> None:
    path = version_3_file(tmp_path / "turngate.db")
    store = SqliteStore(path, readonly=True)
    await store.open()
    try:
        transcript = await store.transcript(KEY, 10)
        turns = await store.session_turns(KEY, 10)
        assert await store.outbox.of_session(KEY, 10) == []
    finally:
        await store.close()
    assert [(e.kind, e.text, e.run_id, e.epoch) for e in transcript] == [
        (EntryKind.USER, "hi", "t1", 1),
        (EntryKind.ASSISTANT, "echo: hi", "t1", 1),
    ]
    assert [t.usage for t in turns] == [Usage(5, 2), None, None]
    assert user_version(path) == 3
    assert "kind" not in columns(path, "transcript")


@pytest.mark.asyncio
async def test_a_version_4_file_is_migrated_on_open_and_its_sessions_are_free_to_claim(
    tmp_path: Path,
) -> None:
    path = version_4_file(tmp_path / "turngate.db")
    store = SqliteStore(path)
    await store.open()
    try:
        assert [(t.turn_id, t.state) for t in await store.session_turns(KEY, 10)] == [
            ("t1", TurnState.REPLIED),
            ("t2", TurnState.FAILED),
            ("t3", TurnState.QUEUED),
        ]
        assert [e.text for e in await store.transcript(KEY, 10)] == ["hi", "echo: hi"]
        assert await store.session_claim(KEY) == SessionClaim(KEY, None, None, 2)
        claimed = await store.claim_session(KEY, "local", at=4.0, ttl_s=10.0)
        assert claimed.claim == SessionClaim(KEY, "local", 14.0, 2)
        assert [t.turn_id for t in claimed.open_turns] == ["t3"]
        await store.start_run(KEY, "t3", 3, ["t3"], at=5.0, holder="local")
    finally:
        await store.close()
    assert user_version(path) == SCHEMA_VERSION == 5
    assert {"claim_holder", "claim_expires_wall"} <= columns(path, "sessions")
    again = SqliteStore(path, readonly=True)
    await again.open()
    try:
        assert await again.session_claim(KEY) == SessionClaim(KEY, "local", 14.0, 3)
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_a_read_only_open_reads_a_version_4_files_sessions_as_held_by_nobody(
    tmp_path: Path,
) -> None:
    path = version_4_file(tmp_path / "turngate.db")
    store = SqliteStore(path, readonly=True)
    await store.open()
    try:
        assert await store.session_claim(KEY) == SessionClaim(KEY, None, None, 2)
        assert await store.session_claim("agent:main:nobody") is None
        assert [t.turn_id for t in await store.open_turns(KEY)] == ["t3"]
        assert {t.turn_id for t in await store.get_turns(["t1", "t3"])} == {"t1", "t3"}
    finally:
        await store.close()
    assert user_version(path) == 4
    assert "claim_holder" not in columns(path, "sessions")


@pytest.mark.asyncio
async def test_a_file_of_a_newer_turngate_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = version_1_file(tmp_path / "turngate.db")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    for readonly in (False, True):
        with pytest.raises(StoreError) as caught:
            await SqliteStore(path, readonly=readonly).open()
        assert caught.value.message == (
            f"store {path}: schema version {SCHEMA_VERSION + 1} is newer than this turngate"
            f" understands ({SCHEMA_VERSION})"
        )


@pytest.mark.asyncio
async def test_usage_is_stored_with_a_reply_and_unknown_usage_stays_unknown(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "turngate.db")
    await store.open()
    try:
        for turn_id in ("a", "b"):
            record = TurnRecord(
                turn_id, KEY, "main", "hi", "followup", TurnState.ACCEPTED, 0.0, 60.0
            )
            assert await store.accept_turn(record) is None
        await store.start_run(KEY, "a", 1, ["a", "b"], at=1.0)
        usage = Usage(prompt_tokens=120, completion_tokens=7)
        outcomes = [
            Outcome("a", TurnState.REPLIED, "a", reply="echo: hi", usage=usage),
            Outcome("b", TurnState.REPLIED, "a", reply="echo: hi", usage=usage),
        ]
        await store.end_run(KEY, "a", 1, outcomes, [TranscriptItem.user("hi")], at=2.0)
        assert (
            await store.accept_turn(
                TurnRecord("c", KEY, "main", "hi", "followup", TurnState.ACCEPTED, 0.0, 60.0)
            )
            is None
        )
        await store.start_run(KEY, "c", 2, ["c"], at=3.0)
        untold = Outcome("c", TurnState.REPLIED, "c", reply="echo: hi")
        await store.end_run(KEY, "c", 2, [untold], [TranscriptItem.user("hi")], at=4.0)
        stored = [await store.get_turn(turn_id) for turn_id in "abc"]
        assert [r.outcome() if r else None for r in stored] == [*outcomes, untold]
        assert [r.usage if r else None for r in stored] == [usage, usage, None]
    finally:
        await store.close()
