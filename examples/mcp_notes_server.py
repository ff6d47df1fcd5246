"""A small MCP tool server, to give a turngate agent tools: notes kept in a JSON file.

Usage::

    python examples/mcp_notes_server.py                 # stdio (how turngate starts it)
    python examples/mcp_notes_server.py --file ~/n.json # another file
    python examples/mcp_notes_server.py --http 8800     # Streamable HTTP, 127.0.0.1:8800/mcp

An agent uses it through ``[[agents.mcp]]`` in turngate's config (see the README, "An agent
with tools (MCP)"); its tools are then offered to the model as ``<name>__add_note`` and so on.

Tools:

- ``add_note(text)``: keep a note; answers ``Saved note N: <text>``.
- ``list_notes()``: every note, one per line, numbered (``No notes yet.`` when there are none).
- ``search_notes(query)``: the notes containing every word of ``query``, in any case.
- ``delete_note(number)``: forget note ``number`` (the numbers of ``list_notes``).

The notes live in a JSON file: ``--file PATH``, else the ``NOTES_FILE`` environment variable,
else ``notes.json`` in the current directory. It is a list of ``{"text": ..., "added": ...}``
objects (``added``: ISO 8601, UTC), written whole to a temporary file that then replaces the
old one, so a crash never leaves half a file. Calls are served one at a time within this
process; give each running server its own file.

Built on the official MCP Python SDK (``mcp``, a turngate dependency): nothing else to install.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

DEFAULT_FILE = "notes.json"
FILE_ENV = "NOTES_FILE"
NOTE_CHARS_MAX = 2_000
"""The longest note kept: a note is a line to remember, not a document."""
NOTES_MAX = 10_000
LIST_LINES_MAX = 200
"""``list_notes`` and ``search_notes`` show at most this many notes (the newest)."""


@dataclass(frozen=True)
class Note:
    """One note: its text and when it was added (ISO 8601, UTC)."""

    text: str
    added: str


class NoteFile:
    """The notes in one JSON file, read and written whole under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the SDK runs plain tool functions in worker threads

    def read(self) -> list[Note]:
        """Every note, oldest first (none if the file does not exist yet)."""
        with self._lock:
            return self._read()

    def add(self, text: str) -> int:
        """Keep ``text`` as a new note; its number."""
        with self._lock:
            notes = self._read()
            if len(notes) >= NOTES_MAX:
                raise ToolError(f"there are already {NOTES_MAX} notes; delete some first")
            notes.append(Note(text, datetime.now(UTC).isoformat(timespec="seconds")))
            self._write(notes)
            return len(notes)

    def delete(self, number: int) -> Note:
        """Forget note ``number`` (1 is the oldest); the note forgotten."""
        with self._lock:
            notes = self._read()
            if not 1 <= number <= len(notes):
                raise ToolError(f"there is no note {number} (there are {len(notes)})")
            gone = notes.pop(number - 1)
            self._write(notes)
            return gone

    def _read(self) -> list[Note]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot read the notes file {self.path}: {exc}") from None
        if not isinstance(raw, list):
            raise ToolError(f"the notes file {self.path} does not hold a list of notes")
        return [
            Note(str(item.get("text", "")), str(item.get("added", "")))
            for item in raw
            if isinstance(item, dict)
        ]

    def _write(self, notes: list[Note]) -> None:
        body = json.dumps([{"text": n.text, "added": n.added} for n in notes], indent=2)
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def numbered(notes: list[tuple[int, Note]]) -> str:
    """Notes as ``N. text`` lines, the newest :data:`LIST_LINES_MAX` if there are more."""
    shown = notes[-LIST_LINES_MAX:]
    lines = [f"{number}. {note.text}" for number, note in shown]
    if len(shown) < len(notes):
        lines.insert(0, f"(the newest {len(shown)} of {len(notes)})")
    return "\n".join(lines)


def build_server(notes: NoteFile) -> MCPServer:
    """An MCP server whose tools read and write ``notes``."""
    server = MCPServer(
        "notes",
        instructions="Keeps short notes for the user: add, list, search and delete them.",
        log_level="WARNING",
    )

    @server.tool()
    def add_note(text: Annotated[str, Field(description="what to remember")]) -> str:
        """Save a note for the user (a short line of text to remember)."""
        text = " ".join(text.split())
        if not text:
            raise ToolError("a note needs some text")
        if len(text) > NOTE_CHARS_MAX:
            raise ToolError(f"a note is at most {NOTE_CHARS_MAX} characters")
        number = notes.add(text)
        return f"Saved note {number}: {text}"

    @server.tool()
    def list_notes() -> str:
        """List every saved note, numbered, oldest first."""
        found = list(enumerate(notes.read(), start=1))
        return numbered(found) if found else "No notes yet."

    @server.tool()
    def search_notes(
        query: Annotated[str, Field(description="words the notes must contain")],
    ) -> str:
        """Find the notes that contain every word of the query (case does not matter)."""
        words = query.casefold().split()
        if not words:
            raise ToolError("a search needs at least one word")
        found = [
            (number, note)
            for number, note in enumerate(notes.read(), start=1)
            if all(word in note.text.casefold() for word in words)
        ]
        return numbered(found) if found else f"No note matches {query!r}."

    @server.tool()
    def delete_note(
        number: Annotated[int, Field(description="the note's number in list_notes")],
    ) -> str:
        """Delete note `number` (as numbered by list_notes); the later notes move up."""
        gone = notes.delete(number)
        return f"Deleted note {number}: {gone.text}"

    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="An MCP server with notes tools (stdio unless --http).",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"the notes file (default: ${FILE_ENV}, else ./{DEFAULT_FILE})",
    )
    parser.add_argument(
        "--http",
        type=int,
        metavar="PORT",
        default=None,
        help="serve Streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio",
    )
    args = parser.parse_args(argv)
    path: Path = args.file or Path(os.environ.get(FILE_ENV) or DEFAULT_FILE)
    server = build_server(NoteFile(path.expanduser()))
    if args.http is None:
        server.run()  # stdio: stdout carries the protocol, so nothing else is printed there
    else:
        print(f"notes server: http://127.0.0.1:{args.http}/mcp, file {path}", file=sys.stderr)
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
