"""Splitting a reply into messages a platform takes: at paragraphs, then sentences, then lines,
then words, and only then anywhere, so that no part is over the limit and nothing is lost.

The parts, joined, are the text: the whitespace at a cut stays at the end of the part before
it. A part is never whitespace only (platforms refuse empty messages): such a stretch joins
the part before it, or is dropped when it does not fit there (blanks are all it has).
``measure`` is how the platform counts (Telegram counts UTF-16 code units: an emoji counts
two).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Measure = Callable[[str], int]

BOUNDARIES = (
    re.compile(r"\n\s*\n\s*"),  # a paragraph: a blank line
    # A sentence: its mark, closing quotes or brackets, then blanks; or a CJK full stop,
    # exclamation or question mark, which no blank follows.
    re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[\u3002\uff01\uff1f])"),
    re.compile(r"\n"),  # a line
    re.compile(r"\s+"),  # a word
)
"""Where a cut may fall, best first; the cut comes after the match (its whitespace stays)."""


def utf16_length(text: str) -> int:
    """How many UTF-16 code units ``text`` takes (Telegram's count)."""
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int, measure: Measure = len) -> list[str]:
    """``text`` in parts of at most ``limit`` (as ``measure`` counts), cut at the best
    boundary that leaves the longest first part; ``[]`` for text that is only whitespace."""
    if limit < 1:
        raise ValueError(f"limit: must be at least 1, got {limit}")
    if not text.strip():
        return []
    parts: list[str] = []
    rest = text
    while measure(rest) > limit:
        cut = _best_cut(rest, limit, measure)
        parts.append(rest[:cut])
        rest = rest[cut:]
    parts.append(rest)
    return _no_blank_parts(parts, limit, measure)


def _best_cut(text: str, limit: int, measure: Measure) -> int:
    """Where to end the next part: after the last boundary that fits, of the best kind that
    has one; else as many characters as fit (never splitting a surrogate-pair character)."""
    fits = _prefix_fitting(text, limit, measure)
    for boundary in BOUNDARIES:
        ends = [m.end() for m in boundary.finditer(text, 0, fits + 1) if 0 < m.end() <= fits]
        # A cut must leave something that is not whitespace in the part it ends.
        ends = [end for end in ends if text[:end].strip()]
        if ends:
            return ends[-1]
    return max(fits, 1)


def _prefix_fitting(text: str, limit: int, measure: Measure) -> int:
    """The most characters of ``text`` whose measure is within ``limit`` (binary search:
    ``measure`` only grows with length)."""
    low, high = 0, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def _no_blank_parts(parts: list[str], limit: int, measure: Measure) -> list[str]:
    """Append each whitespace-only part to the one before it, if it fits there."""
    kept: list[str] = []
    for part in parts:
        if part.strip():
            kept.append(part)
        elif kept and measure(kept[-1] + part) <= limit:
            kept[-1] += part
    return kept
