"""What a WebSocket method handler sees: the connection it answers on (:class:`Peer`), and
the gateway's parts it answers from (:class:`Services`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from turngate.config import GatewayConfig
from turngate.gateway.ws_frames import RequestFrame
from turngate.lanes.cron import CronLane
from turngate.lanes.delivery import DeliveryTargets
from turngate.runtime.engine import Engine

H = TypeVar("H")

MethodHandler = Callable[[H, RequestFrame], Awaitable[None]]
"""Answers one request frame of its method, given the per-connection object that holds the
method (:class:`~turngate.gateway.ws_methods.Methods`, ...). The tables of these are built
once per process, not per connection: an idle connection holds no handler at all."""


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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the connection's task group: it ends with the connection."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """The gateway's parts a connection's methods answer from."""

    engine: Engine
    config: GatewayConfig
    targets: DeliveryTargets
    """Where lane (heartbeat, cron) replies go: the client that last used the session."""
    cron: CronLane | None = None
    """The cron lane, once the gateway's lanes run."""
    config_file: Path | None = None
    """The configuration file the gateway read, if any."""
