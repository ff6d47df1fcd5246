"""A gateway connection and its session, as the fake Discord (``fake_discord.py``) keeps them,
and the words of the gateway protocol they carry: ops, intents, close codes, frames.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

OUTBOX_FRAMES_MAX = 10_000


class Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31


CLIENT_OPS = frozenset({1, 2, 3, 4, 6, 8, 31})


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


INTENTS_MAX = (1 << 26) - 1

CLOSE_REASONS = {
    4000: "Unknown error.",
    4001: "Unknown opcode.",
    4002: "Decode error.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4007: "Invalid seq.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}


@dataclass(frozen=True)
class Received:
    """A frame on a connection: its parsed JSON (the text itself when it is not JSON)."""

    payload: Any
    at: float
    """The event loop's time."""


@dataclass(frozen=True)
class Heartbeat:
    connection: int
    """The index of the connection it came on."""
    seq: Any
    """Its ``d``: the last sequence number the client saw, or None."""
    at: float


@dataclass(frozen=True)
class QueuedFrame:
    """A frame on its way out, in a connection's outbox."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class QueuedClose:
    """The close frame, the last item of a connection's outbox."""

    code: int
    reason: str


@dataclass(eq=False)
class Connection:
    """One gateway connection, as the fake saw it."""

    index: int
    """From 1, in the order they opened."""
    path: str
    query: str
    client: tuple[str, int] | None
    opened_at: float
    frames: list[Received] = field(default_factory=list)
    sent: list[Received] = field(default_factory=list)
    """The frames the fake sent on it, HELLO first."""
    identifies: list[Any] = field(default_factory=list)
    resumes: list[Any] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    heartbeat_requests: list[float] = field(default_factory=list)
    hello_at: float | None = None
    session: Session | None = None
    """The session it carries (None: before IDENTIFY/RESUME, or after op 9)."""
    ack_heartbeats: bool | None = None
    """None: as the fake's ``ack_heartbeats``."""
    client_close_code: int | None = None
    """The code of the client's close frame (1006: the TCP connection ended without one);
    None while open or when the fake closed it."""
    server_close_code: int | None = None
    dropped: bool = False
    closing: bool = False
    closed_at: float | None = None
    outbox: asyncio.Queue[QueuedFrame | QueuedClose] = field(
        default_factory=lambda: asyncio.Queue(OUTBOX_FRAMES_MAX), repr=False
    )
    """What the fake's writer sends on it next."""
    stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set once it is closing (wakes a writer held at the hello gate)."""

    @property
    def endpoint(self) -> str:
        """``/gateway`` or ``/resume``, whichever it dialled."""
        return self.path.rstrip("/") or "/"

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def ops(self) -> list[Any]:
        """The op of every frame received, in order (None for one that had none)."""
        return [f.payload.get("op") if isinstance(f.payload, dict) else None for f in self.frames]


@dataclass(eq=False)
class Session:
    session_id: str
    intents: int
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every dispatch, in order (``s`` = index + 1)."""
    resumable: bool = True
    connection: Connection | None = None

    @property
    def seq(self) -> int:
        return len(self.history)


def frame_of(op: Op, d: Any, s: int | None = None, t: str | None = None) -> dict[str, Any]:
    """A gateway frame."""
    return {"op": int(op), "d": d, "s": s, "t": t}
