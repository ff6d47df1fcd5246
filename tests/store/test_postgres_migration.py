"""The PostgreSQL schema across versions: a version-1 database (before claims) is migrated when
a gateway opens it, its data kept and every session free to claim, its open turns indexed by
session."""

from __future__ import annotations

import psycopg
import pytest

from turngate.core.turn import TurnState
from turngate.store.base import SessionClaim
from turngate.store.postgres import PostgresStore
from turngate.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION

KEY = "agent:main:main"


def version_1_database(url: str) -> None:
    """A version-1 database: one session at epoch 2 with a replied turn and a queued one."""
    with psycopg.connect(url) as db:
        db.execute("CREATE TABLE turngate_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO turngate_schema (version) VALUES (1)")
        db.execute(MIGRATIONS[1])
        db.execute(
            "INSERT INTO sessions (key, agent_id, epoch, created_wall, updated_wall)"
            " VALUES (%s, 'main', 2, 1.0, 3.0)",
            (KEY,),
        )
        db.execute(
            "INSERT INTO turns (turn_id, session_key, message, queue_mode, state,"
            " accepted_wall, timeout_s, run_id, epoch, reply) VALUES"
            " ('t1', %s, 'hi', 'followup', 'replied', 1.0, 60.0, 't1', 2, 'echo: hi'),"
            " ('t2', %s, 'later', 'followup', 'queued', 2.0, 60.0, NULL, NULL, NULL)",
            (KEY, KEY),
        )


def indexes(url: str) -> set[str]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'turns'").fetchall()
    return {str(row[0]) for row in rows}


@pytest.mark.asyncio
async def test_a_version_1_database_is_migrated_on_open_with_every_session_free(
    postgres_url: str,
) -> None:
    version_1_database(postgres_url)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 2
        assert [(t.turn_id, t.state) for t in await store.session_turns(KEY, 10)] == [
            ("t1", TurnState.REPLIED),
            ("t2", TurnState.QUEUED),
        ]
        assert await store.session_claim(KEY) == SessionClaim(KEY, None, None, 2)
        assert await store.claimable("a", at=4.0, limit=10) == {KEY: ["t2"]}
        claimed = await store.claim_session(KEY, "a", at=4.0, ttl_s=10.0)
        assert claimed.claim == SessionClaim(KEY, "a", 14.0, 2)
        assert [t.turn_id for t in claimed.open_turns] == ["t2"]
    finally:
        await store.close()
    found = indexes(postgres_url)
    assert "turns_open_by_session" in found
    assert "turns_open" not in found
    again = PostgresStore(postgres_url)  # a second open finds nothing to do
    await again.open()
    try:
        assert await again.session_claim(KEY) == SessionClaim(KEY, "a", 14.0, 2)
    finally:
        await again.close()
