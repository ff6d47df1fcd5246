"""Session keys: ``agent:<agentId>:<rest>``, validated strictly.

A key names a conversation, not a place: it is never used as a file path. The grammar is
narrow on purpose so that a key can travel through logs, URLs and SQL parameters unescaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from turngate.errors import InvalidSessionKeyError

SESSION_KEY_LEN_MAX = 512
AGENT_ID_LEN_MAX = 64
SEGMENT_LEN_MAX = 128
SEGMENTS_MAX = 16

_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_.@+=-]+")


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
    if len(agent_id) > AGENT_ID_LEN_MAX or not _AGENT_ID.fullmatch(agent_id):
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
