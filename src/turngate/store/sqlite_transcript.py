"""Typed transcript entries in the SQLite file: appending a run's entries, closing the tool
calls a run left open, and reading from a turn's message on.

A row of ``transcript`` holds an entry's ``role`` (``user``, ``assistant``, or ``tool`` for a
tool result: what an SQL reader expects), its ``text``, its ``kind`` and its ``data`` (the
typed fields as JSON, see :mod:`turngate.store.rows`). Rows written before schema version 4
have no ``kind`` and no ``data``: they read as their ``role``, which was always ``user`` or
``assistant``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from turngate.core.transcript import TranscriptItem, closing_results
from turngate.store.base import TranscriptEntry
from turngate.store.rows import entry_from_row, transcript_values
from turngate.store.sqlite_schema import TRANSCRIPT_COLUMNS_ADDED
from turngate.types import Epoch, RunId, TurnId, WallS

TRANSCRIPT_COLUMNS_V3 = "seq, session_key, role, text, run_id, epoch, at_wall"
TRANSCRIPT_COLUMNS = TRANSCRIPT_COLUMNS_V3 + "".join(
    f", {name}" for name, _ in TRANSCRIPT_COLUMNS_ADDED
)
INSERT_ENTRY = (
    "INSERT INTO transcript (session_key, role, text, run_id, epoch, at_wall, kind, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
TRANSCRIPT_COLUMNS_OF_V3_FILE = TRANSCRIPT_COLUMNS_V3 + ", NULL" * len(TRANSCRIPT_COLUMNS_ADDED)
"""What a read-only open of a file older than version 4 selects: every row an untyped one."""


def append_items(
    db: sqlite3.Connection,
    session_key: str,
    items: Sequence[TranscriptItem],
    run_id: RunId,
    epoch: Epoch,
    at: WallS,
) -> list[TranscriptEntry]:
    """Append ``items`` to the session's transcript, stamped with the run that wrote them;
    returns them as entries (with their ``seq``)."""
    appended: list[TranscriptEntry] = []
    for item in items:
        values = transcript_values(session_key, item, run_id, epoch, at)
        seq = db.execute(INSERT_ENTRY, values).lastrowid
        assert seq is not None, "an INSERT has a rowid"
        appended.append(TranscriptEntry(seq, session_key, item, run_id, epoch, at))
    return appended


def close_calls(
    db: sqlite3.Connection,
    session_key: str,
    run_id: RunId,
    epoch: Epoch,
    why: str | None,
    at: WallS,
) -> list[TranscriptEntry]:
    """Give every tool call ``(run_id, epoch)`` left without a result an error result saying
    ``why`` (nothing when ``why`` is None: the run left none open); returns the results."""
    if why is None:
        return []
    closing = closing_results(run_items(db, session_key, run_id, epoch), why)
    return append_items(db, session_key, closing, run_id, epoch, at)


def run_items(
    db: sqlite3.Connection, session_key: str, run_id: RunId, epoch: Epoch
) -> list[TranscriptItem]:
    """The tool entries ``(run_id, epoch)`` wrote to the session's transcript, in order."""
    rows = db.execute(
        f"SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE session_key = ? AND run_id = ?"
        " AND epoch = ? AND kind IN ('tool_calls', 'tool_result') ORDER BY seq",
        (session_key, run_id, epoch),
    ).fetchall()
    return [entry_from_row(row).item for row in rows]


def since_messages(
    db: sqlite3.Connection, session_key: str, turn_ids: Sequence[TurnId], limit: int
) -> list[TranscriptEntry]:
    """The session's transcript from the first message of ``turn_ids`` on (at most ``limit``
    entries); empty when none of them is written."""
    if not turn_ids:
        return []
    marks = ", ".join("?" * len(turn_ids))
    rows = db.execute(
        f"SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE session_key = ? AND seq >= ("
        "SELECT MIN(seq) FROM transcript WHERE session_key = ? AND kind = 'user'"
        f" AND json_extract(data, '$.turn_id') IN ({marks})) ORDER BY seq LIMIT ?",
        (session_key, session_key, *turn_ids, limit),
    ).fetchall()
    return [entry_from_row(row) for row in rows]
