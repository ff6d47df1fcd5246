"""The SQLite file's shape: its tables, the columns a turn is read with, the migrations from
older versions, and rows turned into records."""

from __future__ import annotations

import sqlite3
from contextlib import suppress

SCHEMA_VERSION = 5
"""The schema this code writes, kept in ``PRAGMA user_version``. 1: the first. 2: ``turns``
gains ``prompt_tokens`` and ``completion_tokens`` (null when the provider reported no usage,
and for turns recorded before). Opening a version-1 file for writing adds them; a read-only
open reads a version-1 file as it is, each turn's usage unknown. 3: the outbox, table
``deliveries`` (created when an older file is opened for writing; a read-only open of an
older file reads no deliveries). 4: typed transcript entries: ``transcript`` gains ``kind``
(``user``, ``assistant``, ``tool_calls``, ``tool_result``) and ``data`` (JSON: the tool
calls, or the result's call id, tool name and error flag; null for user and assistant
text). Rows written before have neither and read as their ``role``, which was always
``user`` or ``assistant``; opening an older file for writing adds the columns and rewrites no
row, and a read-only open reads it as it is (see :mod:`~turngate.store.sqlite_transcript`).
5: claims: ``sessions`` gains ``claim_holder`` (the gateway process holding the session, null
for nobody) and ``claim_expires_wall`` (see :meth:`~turngate.store.base.Store.claim_session`).
Opening an older file for writing adds them, every session free; a read-only open reads an
older file's sessions as held by nobody. Also table ``singletons``: what one process at a time
may hold (a channel's account; see :meth:`~turngate.store.base.Store.hold_singleton`).
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_run_id TEXT,
    lease_granted_wall REAL,
    created_wall REAL NOT NULL,
    updated_wall REAL NOT NULL,
    claim_holder TEXT,
    claim_expires_wall REAL
);
CREATE TABLE IF NOT EXISTS turns (
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
    delivery TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns(session_key, seq);
CREATE INDEX IF NOT EXISTS turns_open ON turns(state)
    WHERE state IN ('accepted', 'queued', 'running');
CREATE TABLE IF NOT EXISTS transcript (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at_wall REAL NOT NULL,
    kind TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS transcript_by_session ON transcript(session_key, seq);
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
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
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(channel_id, delivery_id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_session ON deliveries(session_key, delivery_id);
CREATE TABLE IF NOT EXISTS singletons (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cron_jobs (
    job_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_fire_wall REAL NOT NULL,
    last_fire_wall REAL
);
"""

TURN_COLUMNS_V1 = (
    "turn_id, session_key, message, queue_mode, state, accepted_wall, timeout_s, seq, attempts,"
    " run_id, epoch, started_wall, ended_wall, reply, error_code, error_message, lane, delivery"
)
TURN_COLUMNS_ADDED = (("prompt_tokens", "INTEGER"), ("completion_tokens", "INTEGER"))
"""Columns of ``turns`` added since version 1, with their declarations (all nullable)."""
TRANSCRIPT_COLUMNS_ADDED = (("kind", "TEXT"), ("data", "TEXT"))
"""Columns of ``transcript`` added in version 4, with their declarations (all nullable)."""
SESSION_COLUMNS_ADDED = (("claim_holder", "TEXT"), ("claim_expires_wall", "REAL"))
"""Columns of ``sessions`` added in version 5, with their declarations (all nullable)."""
COLUMNS_ADDED = {
    "sessions": SESSION_COLUMNS_ADDED,
    "turns": TURN_COLUMNS_ADDED,
    "transcript": TRANSCRIPT_COLUMNS_ADDED,
}
"""Per table, the columns an older file may lack; :func:`migrate` adds them."""
TURN_COLUMNS = TURN_COLUMNS_V1 + "".join(f", {name}" for name, _ in TURN_COLUMNS_ADDED)
TURN_COLUMNS_OF_V1_FILE = TURN_COLUMNS_V1 + ", NULL" * len(TURN_COLUMNS_ADDED)
"""What a read-only open of a version-1 file selects: the added columns read as unknown."""
CLAIM_COLUMNS_OF_V4_FILE = "key, NULL, NULL, epoch"
"""What a read-only open of a file older than version 5 selects for a session's claim
(:data:`~turngate.store.rows.CLAIM_COLUMNS`): held by nobody."""


def columns_of(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns the file's ``table`` has (none when it has no such table)."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def has_columns(db: sqlite3.Connection, table: str, added: tuple[tuple[str, str], ...]) -> bool:
    """Whether the file's ``table`` has every one of the ``added`` columns."""
    present = columns_of(db, table)
    return all(name in present for name, _ in added)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a file made by an older turngate to this schema, keeping its data.

    Decided by the columns present rather than by the version alone, so that a migration cut
    short (or a file whose version was written by hand) is finished, not repeated. A file
    that needs nothing sees no write at all; one that does is changed in one immediate
    transaction, so that two processes opening it at once do not both add a column.
    """
    if not columns_missing(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, name, declaration in columns_missing(db):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def columns_missing(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The added columns an older file lacks, as ``(table, column, declaration)``; none for a
    new file (no tables yet: the schema script makes them whole)."""
    missing: list[tuple[str, str, str]] = []
    for table, added in COLUMNS_ADDED.items():
        present = columns_of(db, table)
        if present:
            missing.extend((table, name, decl) for name, decl in added if name not in present)
    return missing
