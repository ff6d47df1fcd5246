"""Typed transcript entries in the SQLite file: how one is written as a row and read back.

A row of ``transcript`` holds an entry's ``role`` (``user``, ``assistant``, or ``tool`` for a
tool result: what an SQL reader expects), its ``text``, its ``kind`` and, for the tool kinds,
a JSON ``data`` column:

- ``tool_calls``: ``{"tool_calls": [{"id", "name", "arguments"}, ...]}`` (``arguments`` is
  the JSON text the model sent, kept as text);
- ``tool_result``: ``{"call_id", "tool_name", "is_error"}`` (the result itself is ``text``).

A ``user`` row's ``data`` is ``{"turn_id"}``, the turn whose message it is (null in rows
written before turngate recorded it).

Rows written before schema version 4 have no ``kind`` and no ``data``: they read as their
``role``, which was always ``user`` or ``assistant``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem, closing_results
from turngate.errors import StoreError
from turngate.store.base import TranscriptEntry
from turngate.store.sqlite_schema import TRANSCRIPT_COLUMNS_ADDED
from turngate.types import Epoch, RunId, TurnId, WallS

TRANSCRIPT_COLUMNS_V3 = "seq, session_key, role, text, run_id, epoch, at_wall"
TRANSCRIPT_COLUMNS = TRANSCRIPT_COLUMNS_V3 + "".join(
    f", {name}" for name, _ in TRANSCRIPT_COLUMNS_ADDED
)
TRANSCRIPT_COLUMNS_OF_V3_FILE = TRANSCRIPT_COLUMNS_V3 + ", NULL" * len(TRANSCRIPT_COLUMNS_ADDED)
"""What a read-only open of a file older than version 4 selects: every row an untyped one."""

ROLE_OF_KIND = {
    EntryKind.USER: "user",
    EntryKind.ASSISTANT: "assistant",
    EntryKind.TOOL_CALLS: "assistant",
    EntryKind.TOOL_RESULT: "tool",
}
"""The ``role`` column of each kind: who said it, in the words of the chat APIs."""


def append_items(
    db: sqlite3.Connection,
    session_key: str,
    items: Sequence[TranscriptItem],
    run_id: RunId,
    epoch: Epoch,
    at: WallS,
) -> None:
    """Append ``items`` to the session's transcript, stamped with the run that wrote them."""
    db.executemany(
        "INSERT INTO transcript (session_key, role, text, run_id, epoch, at_wall, kind, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                session_key,
                ROLE_OF_KIND[item.kind],
                item.text,
                run_id,
                epoch,
                at,
                item.kind.value,
                _data_of(item),
            )
            for item in items
        ],
    )


def entry_from_row(row: tuple[Any, ...]) -> TranscriptEntry:
    """A :class:`TranscriptEntry` from a row of :data:`TRANSCRIPT_COLUMNS` (or of
    :data:`TRANSCRIPT_COLUMNS_OF_V3_FILE`); a row that makes no valid entry is a
    :class:`~turngate.errors.StoreError` naming it."""
    seq, session_key, role, text, run_id, epoch, at_wall, kind, data = row
    try:
        item = _item(EntryKind(kind if kind is not None else role), str(text), data)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(
            f"session {session_key}: transcript entry #{seq} cannot be read ({exc})"
        ) from None
    return TranscriptEntry(
        int(seq), str(session_key), item, str(run_id), int(epoch), float(at_wall)
    )


def _data_of(item: TranscriptItem) -> str | None:
    """The ``data`` column of ``item``: its typed fields as JSON, or null if it has none."""
    if item.turn_id is not None:
        return json.dumps({"turn_id": item.turn_id})
    if item.kind is EntryKind.TOOL_CALLS:
        calls = [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in item.tool_calls
        ]
        return json.dumps({"tool_calls": calls})
    if item.kind is EntryKind.TOOL_RESULT:
        return json.dumps(
            {"call_id": item.call_id, "tool_name": item.tool_name, "is_error": item.is_error}
        )
    return None


def _item(kind: EntryKind, text: str, data: str | None) -> TranscriptItem:
    """The item a row's ``kind``, ``text`` and ``data`` describe."""
    fields = json.loads(data or "null")
    if kind is EntryKind.USER:
        return TranscriptItem.user(text, None if fields is None else str(fields["turn_id"]))
    if kind is EntryKind.ASSISTANT:
        return TranscriptItem.assistant(text)
    if kind is EntryKind.TOOL_CALLS:
        return TranscriptItem.calls(
            [
                ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"]))
                for c in fields["tool_calls"]
            ]
        )
    return TranscriptItem.tool_result(
        str(fields["call_id"]), str(fields["tool_name"]), text, is_error=bool(fields["is_error"])
    )


def close_calls(
    db: sqlite3.Connection,
    session_key: str,
    run_id: RunId,
    epoch: Epoch,
    why: str | None,
    at: WallS,
) -> None:
    """Give every tool call ``(run_id, epoch)`` left without a result an error result saying
    ``why`` (nothing when ``why`` is None: the run left none open)."""
    if why is not None:
        closing = closing_results(run_items(db, session_key, run_id, epoch), why)
        append_items(db, session_key, closing, run_id, epoch, at)


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
