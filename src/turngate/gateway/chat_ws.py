"""The gateway WebSocket protocol at ``/`` and ``/ws`` (OpenClaw's protocol 4).

This module is the endpoint; the protocol lives in its parts:

- :mod:`~turngate.gateway.ws_connection`: one connection's life (a generation), the reading
  and dispatch of request frames, and :class:`Connections`, which shutdown closes;
- :mod:`~turngate.gateway.ws_handshake`: the ``connect`` request's rules and ``hello-ok``;
- :mod:`~turngate.gateway.ws_methods`: what each method does;
- :mod:`~turngate.gateway.ws_outbox` and :mod:`~turngate.gateway.ws_receive`: frames out
  (the one writer) and frames in;
- :mod:`~turngate.gateway.ws_frames`: the wire shapes.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from turngate.config import GatewayConfig
from turngate.gateway.ws_connection import Connection, Connections
from turngate.lanes.delivery import DeliveryTargets
from turngate.runtime.engine import Engine

__all__ = ["Connections", "websocket_endpoint"]


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/`` and ``/ws``."""
    engine: Engine = websocket.app.state.engine
    config: GatewayConfig = websocket.app.state.config
    targets: DeliveryTargets = websocket.app.state.targets
    connections: Connections = websocket.app.state.connections
    await Connection(websocket, engine, config, targets).serve(connections)
