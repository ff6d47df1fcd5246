"""What a WebSocket method handler sees of the connection it answers on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from turngate.gateway.ws_frames import RequestFrame

Handler = Callable[[RequestFrame], Awaitable[None]]
"""Answers one request frame of its method."""


class Peer(Protocol):
    """What the methods need of the connection they answer on."""

    @property
    def conn_id(self) -> str:
        """The connection's id, as its log lines name it."""
        ...

    @property
    def closed(self) -> bool:
        """True once the connection's generation is over: nothing may act through it."""
        ...

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; :class:`ConnectionClosed` if the client is too far behind."""
        ...

    def event(self, name: str, payload: dict[str, Any]) -> None:
        """Queue an event frame with the connection's next ``seq``."""
        ...
