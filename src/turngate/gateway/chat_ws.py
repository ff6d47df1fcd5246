"""The gateway WebSocket protocol at ``/`` and ``/ws`` (OpenClaw's protocol 4).

This module is the endpoint; the protocol lives in its parts:

- :mod:`~turngate.gateway.ws_connection`: one connection's life (a generation), the reading
  and dispatch of request frames, and :class:`Connections`, which shutdown closes;
- :mod:`~turngate.gateway.ws_handshake`: the ``connect`` request's rules and ``hello-ok``;
- :mod:`~turngate.gateway.ws_methods`: the turns' methods (``chat.send``, ``agent``,
  ``chat.history``, ...); :mod:`~turngate.gateway.ws_directory`, the sessions' and absent
  features'; :mod:`~turngate.gateway.ws_session_events`, session subscriptions and their
  events; :mod:`~turngate.gateway.ws_agents`, agents, models and the configuration;
  :mod:`~turngate.gateway.ws_cron`, cron jobs;
- :mod:`~turngate.gateway.ws_outbox` and :mod:`~turngate.gateway.ws_receive`: frames out
  (the one writer) and frames in;
- :mod:`~turngate.gateway.ws_frames`: the wire shapes.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from turngate.gateway.ws_connection import Connection, Connections
from turngate.gateway.ws_peer import Services

__all__ = ["Connections", "websocket_endpoint"]


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Starlette endpoint for ``/`` and ``/ws``."""
    state = websocket.app.state
    services = Services(
        engine=state.engine,
        config=state.config,
        targets=state.targets,
        cron=getattr(state, "cron", None),
        config_file=getattr(state, "config_file", None),
    )
    connections: Connections = state.connections
    await Connection(websocket, services).serve(connections)
