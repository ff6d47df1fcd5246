"""What an HTTP route reads of the gateway from its request: the engine it serves and its
configuration (set on the app's state when it starts, see :mod:`~turngate.gateway.app`)."""

from __future__ import annotations

from starlette.requests import Request

from turngate.config import GatewayConfig
from turngate.runtime.engine import Engine


def engine_of(request: Request) -> Engine:
    """The engine the gateway serves."""
    engine: Engine = request.app.state.engine
    return engine


def config_of(request: Request) -> GatewayConfig:
    """The gateway's configuration."""
    config: GatewayConfig = request.app.state.config
    return config
