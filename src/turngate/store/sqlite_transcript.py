"""Typed transcript entries in the SQLite file: how one is written as a row and read back.

A row of ``transcript`` holds an entry's ``role`` (``user``, ``assistant``, or ``tool`` for a
tool result: what an SQL reader expects), its ``text``, its ``kind`` and, for the tool kinds,
a JSON ``data`` column:

- ``tool_calls``: ``{"tool_calls": [{"id", "name", "arguments"}, ...]}`` (``arguments`` is
  the JSON text the model sent, kept as text);
- ``tool_result``: ``{"call_id", "tool_name", "is_error"}`` (the result itself is ``text``).

Rows written before schema version 4 have no ``kind`` and no ``data``: they read as their
``role``, which was always ``user`` or ``assistant``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem
from turngate.errors import StoreError
from turngate.store.base import TranscriptEntry
from turngate.store.sqlite_schema import TRANSCRIPT_COLUMNS_ADDED
from turngate.types import Epoch, RunId, WallS

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
    if kind is EntryKind.USER:
        return TranscriptItem.user(text)
    if kind is EntryKind.ASSISTANT:
        return TranscriptItem.assistant(text)
    fields = json.loads(data or "null")
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
