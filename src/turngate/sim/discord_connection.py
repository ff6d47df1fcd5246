"""One gateway connection of the simulated Discord (``sim/discord.py``), and the session it
carries, as the platform sees them: the frames on their way to the bot, how the connection
closed, and a session's dispatches and how far the bot reported having stored them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class GatewaySession:
    """One session of the bot's: every dispatch in it, and how far the bot reported."""

    session_id: str
    dispatches: list[tuple[int, str | None, str]] = field(default_factory=list)
    """``(seq, message id or None, frame)`` in order."""
    last_seq: int = 0
    reported_seq: int = 0
    acked_upto: int = 0
    """How many of ``dispatches`` are at or before ``reported_seq``."""
    alive: bool = True
    connection: ServerConnection | None = None


@dataclass(slots=True, eq=False)
class ServerConnection:
    """One gateway connection, as the platform sees it."""

    number: int
    url: str
    frames: deque[str] = field(default_factory=deque)
    """Frames on their way to the bot."""
    waiter: asyncio.Future[None] | None = None
    closed_by: str | None = None
    """``server`` or ``bot`` once closed."""
    close_code: int | None = None
    closed_at: float | None = None
    zombie: bool = False
    session: GatewaySession | None = None
    """The session it identified or resumed (set once READY or RESUMED is on its way)."""
    hello: str | None = None
    """The HELLO frame, once sent."""
    hello_received_at: float | None = None
    """When the bot read this connection's HELLO."""
    handshakes: list[str] = field(default_factory=list)
    """IDENTIFY and RESUME frames the bot sent on it (``identify`` / ``resume``)."""
    hello_timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self.closed_by is not None

    def push(self, frame: str) -> None:
        """A frame for the bot (lost if closed, or a zombie's)."""
        if self.closed or self.zombie:
            return
        self.frames.append(frame)
        self._wake()

    def close(self, by: str, code: int | None, at: float) -> None:
        if self.closed:
            return
        self.closed_by, self.close_code, self.closed_at = by, code, at
        if self.hello_timer is not None:
            self.hello_timer.cancel()
            self.hello_timer = None
        if by == "bot":
            self.frames.clear()
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


__all__ = ["GatewaySession", "ServerConnection"]
