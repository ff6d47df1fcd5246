"""Where each key of a TOML file is: the line numbers :mod:`tomllib` does not give.

A small scanner over a document tomllib has already accepted: it follows table headers,
arrays of tables (counting their elements), dotted and quoted keys, and values that span lines
(multi-line strings, arrays). When it meets anything it does not follow, it gives no lines at
all rather than a wrong one.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping

Loc = tuple[str | int, ...]
"""A key's path: ``("agents", 1, "stall_timeout")``."""


class _Unsure(ValueError):
    """The scanner met something it does not follow: give no line rather than a wrong one."""


def toml_key_lines(text: str) -> dict[Loc, int]:
    """The line (1-based) of each key, table header and array-of-tables element of a valid
    TOML document, keyed by path: ``("agents", 1, "stall_timeout")``, ``("agents", 1)``.

    Keys inside inline tables and multi-line arrays are not located. Empty when the text has
    something the scanner does not follow.
    """
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    """Each array of tables seen so far -> its number of elements."""
    table: Loc = ()
    try:
        for number, statement in _statements(text):
            if statement.startswith("[["):
                parts, rest = _parse_key(statement[2:])
                if not rest.startswith("]]"):
                    raise _Unsure(statement)
                path = (*_resolve(parts[:-1], counts), parts[-1])
                counts[path] = counts.get(path, 0) + 1
                table = (*path, counts[path] - 1)
                lines.setdefault(path, number)
                lines[table] = number
            elif statement.startswith("["):
                parts, rest = _parse_key(statement[1:])
                if not rest.startswith("]"):
                    raise _Unsure(statement)
                table = _resolve(parts, counts)
                lines.setdefault(table, number)
            else:
                parts, rest = _parse_key(statement)
                if not rest.startswith("="):
                    raise _Unsure(statement)
                # A dotted key also defines its parents, here.
                for end in range(1, len(parts) + 1):
                    lines.setdefault((*table, *parts[:end]), number)
    except _Unsure:
        return {}
    return lines


def _resolve(parts: tuple[str, ...], counts: Mapping[Loc, int]) -> Loc:
    # In a header, a name that is an array of tables means its latest element.
    path: Loc = ()
    for part in parts:
        path = (*path, part)
        if path in counts:
            path = (*path, counts[path] - 1)
    return path


def _statements(text: str) -> Iterator[tuple[int, str]]:
    """Each line that starts a header or a key, with its number; the lines a multi-line
    value continues on are skipped."""
    depth, open_quote = 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if depth == 0 and not open_quote:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            yield number, stripped
            if stripped.startswith("["):
                continue
            _, value = _parse_key(stripped)
            depth, open_quote = _scan(value[1:], 0, "")
        else:
            depth, open_quote = _scan(line, depth, open_quote)


def _scan(text: str, depth: int, open_quote: str) -> tuple[int, str]:
    """Bracket depth and open multi-line string (``'''`` / ``\"\"\"``) after ``text``."""
    i = 0
    while i < len(text):
        if open_quote:
            if open_quote == '"""' and text[i] == "\\":
                i += 2
                continue
            if text.startswith(open_quote, i):
                i += 3
                # Up to two more quotes may end the string's content, before the delimiter.
                while i < len(text) and text[i] == open_quote[0]:
                    i += 1
                open_quote = ""
                continue
            i += 1
            continue
        char = text[i]
        if char == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            open_quote, i = text[i : i + 3], i + 3
            continue
        if char in "\"'":
            i = _string_end(text, i)
            continue
        depth += (char in "[{") - (char in "]}")
        if depth < 0:
            raise _Unsure(text)
        i += 1
    return depth, open_quote


def _string_end(text: str, start: int) -> int:
    """The index after the one-line string that starts at ``start``."""
    quote, i = text[start], start + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    raise _Unsure(text)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(text: str) -> tuple[tuple[str, ...], str]:
    """The (dotted) key at the start of ``text``, and the text after it, left-stripped."""
    parts: list[str] = []
    rest = text.lstrip()
    while True:
        if rest[:1] in ('"', "'"):
            end = _string_end(rest, 0)
            parts.append(tomllib.loads(f"k = {rest[:end]}")["k"])
        else:
            match = _BARE_KEY.match(rest)
            if match is None:
                raise _Unsure(text)
            end = match.end()
            parts.append(match.group())
        rest = rest[end:].lstrip()
        if not rest.startswith("."):
            return tuple(parts), rest
        rest = rest[1:].lstrip()


# -- plain words ----------------------------------------------------------------------------
