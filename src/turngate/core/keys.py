"""Session keys: ``agent:<agentId>:<rest>``, validated strictly.

A key names a conversation, not a place: it is never used as a file path. The grammar is
narrow on purpose so that a key can travel through logs, URLs and SQL parameters unescaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from turngate.errors import InvalidFieldError, InvalidSessionKeyError

SESSION_KEY_LEN_MAX = 512
AGENT_ID_LEN_MAX = 64
SEGMENT_LEN_MAX = 128
SEGMENTS_MAX = 16

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:@+=-]{1,128}$"
"""What an idempotency key (HTTP, WebSocket, a channel's message) may be: it becomes the
turn's id, its ``runId``."""

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""What an agent's id may be (and a provider's or a channel's, named the same way): 1-64
characters of a-z, 0-9, ``_`` or ``-``, starting with a letter or digit."""

_ID = re.compile(ID_PATTERN)
_SEGMENT = re.compile(r"[A-Za-z0-9_.@+=-]+")


def is_agent_id(text: str) -> bool:
    """True if ``text`` may be an agent's id (:data:`ID_PATTERN`)."""
    return _ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A parsed, valid session key."""

    agent_id: str
    rest: tuple[str, ...]

    def __str__(self) -> str:
        return ":".join(("agent", self.agent_id, *self.rest))


def parse_session_key(text: object) -> SessionKey:
    """Parse and validate ``text``; raise :class:`InvalidSessionKeyError` naming what is wrong."""
    if not isinstance(text, str):
        raise InvalidSessionKeyError(f"sessionKey: expected a string, got {type(text).__name__}")
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not text:
        raise InvalidSessionKeyError("sessionKey: must not be empty")
    if len(text) > SESSION_KEY_LEN_MAX:
        raise InvalidSessionKeyError(
            f"sessionKey: {len(text)} characters, over the limit of {SESSION_KEY_LEN_MAX}"
        )
    parts = text.split(":")
    if len(parts) < 3 or parts[0] != "agent":
        raise InvalidSessionKeyError(
            f"sessionKey {shown!r}: must look like agent:<agentId>:<rest>, e.g. agent:main:main"
        )
    agent_id, rest = parts[1], tuple(parts[2:])
    if not is_agent_id(agent_id):
        raise InvalidSessionKeyError(
            f"sessionKey {shown!r}: agent id {agent_id[:80]!r} must be 1-{AGENT_ID_LEN_MAX}"
            " characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    if len(rest) > SEGMENTS_MAX:
        raise InvalidSessionKeyError(
            f"sessionKey {shown!r}: {len(rest)} segments after the agent id,"
            f" over the limit of {SEGMENTS_MAX}"
        )
    for segment in rest:
        if len(segment) > SEGMENT_LEN_MAX or not _SEGMENT.fullmatch(segment):
            raise InvalidSessionKeyError(
                f"sessionKey {shown!r}: segment {segment[:80]!r} must be 1-{SEGMENT_LEN_MAX}"
                " characters of A-Z, a-z, 0-9 or _ . @ + = -"
            )
    return SessionKey(agent_id=agent_id, rest=rest)


_ID_KEPT = re.compile(r"[A-Za-z0-9_.@+-]")
_ID_ESCAPE = re.compile(r"=([0-9A-F]{2})")


def id_segment(platform_id: str) -> str | None:
    """A platform's id (a chat, a user) as one session key segment, reversibly: characters
    outside the segment grammar (and ``=`` itself) become ``=HH`` per UTF-8 byte, so that
    :func:`id_from_segment` gives the id back. None when the result is empty or longer than a
    segment may be."""
    encoded = "".join(
        ch if _ID_KEPT.fullmatch(ch) else "".join(f"={b:02X}" for b in ch.encode("utf-8"))
        for ch in platform_id
    )
    return encoded if 0 < len(encoded) <= SEGMENT_LEN_MAX else None


def id_from_segment(segment: str) -> str:
    """The platform id :func:`id_segment` encoded as ``segment``."""
    raw = bytearray()
    at = 0
    for match in _ID_ESCAPE.finditer(segment):
        raw += segment[at : match.start()].encode("utf-8")
        raw.append(int(match.group(1), 16))
        at = match.end()
    raw += segment[at:].encode("utf-8")
    return raw.decode("utf-8", "replace")


def check_agent(key: SessionKey, agent_id: str | None) -> None:
    """Refuse an ``agentId`` a client sent with ``key`` that names another agent."""
    if agent_id is not None and agent_id != key.agent_id:
        raise InvalidFieldError("agentId", f"{agent_id!r} is not the agent of sessionKey {key}")
