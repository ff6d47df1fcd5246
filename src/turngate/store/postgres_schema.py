"""The PostgreSQL database's shape: its tables, and the version each migration brings it to.

The gateway creates and migrates the schema itself when it opens the store (``turngate db
upgrade`` does only that). The steps run in one transaction under an advisory lock, so that
several processes starting at once migrate once; the version reached is kept in
``turngate_schema``. A database whose version is newer than this code's is refused.

Times are wall-clock seconds (``double precision``), as in the SQLite store, so that rows read
the same in both (:mod:`turngate.store.rows`).
"""

from __future__ import annotations

SCHEMA_VERSION = 2
"""The schema this code writes. 1: the first (SQLite's version 4, in PostgreSQL). 2: claims
(SQLite's version 5): ``sessions`` gains ``claim_holder`` and ``claim_expires_wall`` (see
:meth:`~turngate.store.base.Store.claim_session`), every session free after the step; the
index of open turns is by session, so that a session's open turns and the sessions with
open turns are read without a scan."""

MIGRATION_LOCK = 0x7475726E67617465  # "turngate"
"""The advisory lock a process holds while it migrates."""
INSTANCE_LOCK = 0x74676931  # "tgi1"
"""The class of the advisory locks ``(INSTANCE_LOCK, hashtext(instance))`` a gateway process
holds for as long as its store is open: one process per instance name. (The two-key form
lives apart from the one-key :data:`MIGRATION_LOCK`.)"""

MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_run_id TEXT,
    lease_granted_wall DOUBLE PRECISION,
    created_wall DOUBLE PRECISION NOT NULL,
    updated_wall DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_by_update ON sessions (updated_wall DESC, key);
CREATE TABLE turns (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    turn_id TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    message TEXT NOT NULL,
    queue_mode TEXT NOT NULL,
    state TEXT NOT NULL,
    accepted_wall DOUBLE PRECISION NOT NULL,
    timeout_s DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    epoch BIGINT,
    started_wall DOUBLE PRECISION,
    ended_wall DOUBLE PRECISION,
    reply TEXT,
    error_code TEXT,
    error_message TEXT,
    lane TEXT NOT NULL DEFAULT 'direct',
    delivery TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX turns_by_session ON turns (session_key, seq);
CREATE INDEX turns_by_run ON turns (run_id);
CREATE INDEX turns_open ON turns (state) WHERE state IN ('accepted', 'queued', 'running');
CREATE TABLE transcript (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    run_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    at_wall DOUBLE PRECISION NOT NULL,
    kind TEXT,
    data TEXT
);
CREATE INDEX transcript_by_session ON transcript (session_key, seq);
CREATE TABLE probe (
    id INTEGER PRIMARY KEY,
    n BIGINT NOT NULL
);
CREATE TABLE deliveries (
    delivery_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL REFERENCES sessions(key),
    run_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    parts_sent INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_wall DOUBLE PRECISION NOT NULL,
    created_wall DOUBLE PRECISION NOT NULL,
    ended_wall DOUBLE PRECISION,
    last_error TEXT
);
CREATE INDEX deliveries_pending ON deliveries (channel_id, delivery_id) WHERE state = 'pending';
CREATE INDEX deliveries_by_session ON deliveries (session_key, delivery_id);
CREATE TABLE cron_jobs (
    job_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_fire_wall DOUBLE PRECISION NOT NULL,
    last_fire_wall DOUBLE PRECISION
);
""",
    2: """
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS claim_holder TEXT;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS claim_expires_wall DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS turns_open_by_session ON turns (session_key, seq)
    WHERE state IN ('accepted', 'queued', 'running');
DROP INDEX IF EXISTS turns_open;
CREATE TABLE IF NOT EXISTS singletons (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_wall DOUBLE PRECISION NOT NULL
);
""",
}
"""Each version's step, from the one before (version 0: an empty database)."""
