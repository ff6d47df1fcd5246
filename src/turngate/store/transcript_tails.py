"""The last entries of recently used sessions' transcripts, kept in memory by a store that is
the only writer of its transcripts (SQLite: one gateway process per file).

Every run starts by reading its session's last ``history_entries_max`` entries; for a
session that talks often that is the same rows, read and parsed again each turn. A tail
holds them instead: filled by the first read, extended by every append, so the next read
is a slice. The store keeps a tail exactly as its connection sees the file: it appends when
it writes (before the commit, as a read on the connection would see), and forgets every
tail when a write is rolled back (see :meth:`TranscriptTails.forget_all`).

Bounded twice: a tail keeps at most as many entries as the longest read asked of it, and at
most :data:`TAIL_SESSIONS_MAX` sessions keep one (the least recently used go).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from turngate.store.base import TranscriptEntry

TAIL_SESSIONS_MAX = 1024
"""Sessions whose tail is kept; past it, the least recently read or written goes."""


class _Tail:
    """One session's last entries: ``whole`` when they are its entire transcript."""

    __slots__ = ("entries", "keep", "whole")

    def __init__(self, entries: list[TranscriptEntry], keep: int, whole: bool) -> None:
        self.entries = entries
        self.keep = keep
        self.whole = whole

    def extend(self, entries: Sequence[TranscriptEntry]) -> None:
        self.entries.extend(entries)
        surplus = len(self.entries) - self.keep
        if surplus > 0:
            del self.entries[:surplus]
            self.whole = False


class TranscriptTails:
    """Per session, its transcript's last entries (see the module docstring)."""

    def __init__(self, sessions_max: int = TAIL_SESSIONS_MAX) -> None:
        self._sessions_max = sessions_max
        self._tails: OrderedDict[str, _Tail] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tails)

    def read(self, session_key: str, limit: int) -> list[TranscriptEntry] | None:
        """The session's last ``limit`` entries, oldest first; None when the tail cannot
        tell (not kept, or shorter than ``limit`` without being the whole transcript)."""
        tail = self._tails.get(session_key)
        if tail is None or (len(tail.entries) < limit and not tail.whole):
            return None
        self._tails.move_to_end(session_key)
        return tail.entries[-limit:] if limit > 0 else []

    def keep(self, session_key: str, entries: Sequence[TranscriptEntry], limit: int) -> None:
        """Remember what a read of the session's last ``limit`` entries found."""
        if limit <= 0:
            return
        self._tails[session_key] = _Tail(list(entries), limit, whole=len(entries) < limit)
        self._tails.move_to_end(session_key)
        while len(self._tails) > self._sessions_max:
            self._tails.popitem(last=False)

    def appended(self, session_key: str, entries: Sequence[TranscriptEntry]) -> None:
        """``entries`` were appended to the session's transcript (in this order)."""
        tail = self._tails.get(session_key)
        if tail is not None and entries:
            tail.extend(entries)
            self._tails.move_to_end(session_key)

    def forget(self, session_key: str) -> None:
        """The session's transcript changed in a way the store does not follow entry by
        entry (a run ended by whoever takes the session over)."""
        self._tails.pop(session_key, None)

    def forget_all(self) -> None:
        """A write was rolled back: what the tails hold may no longer be in the file."""
        self._tails.clear()
