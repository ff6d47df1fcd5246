"""The gateway WebSocket handshake: the rules a ``connect`` request must meet, and the
``hello-ok`` that answers it.

Sans-I/O: :func:`check_connect` takes the first frame and returns :class:`Accepted` or a
:class:`Refusal`; the connection reads the frame (under :data:`HANDSHAKE_TIMEOUT_S`), sends the
answer, and closes with :data:`REFUSED_CLOSE_CODE` after a refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from turngate import __version__
from turngate.config import GatewayConfig
from turngate.errors import ErrorCode
from turngate.gateway.auth import token_matches
from turngate.gateway.ws_frames import MAIN_SESSION, PROTOCOL_VERSION, ConnectParams, RequestFrame
from turngate.gateway.ws_receive import field_message

HANDSHAKE_TIMEOUT_S = 10.0
REFUSED_CLOSE_CODE = 1008
"""Policy violation: the close code of a refused handshake."""
EVENTS = (
    "connect.challenge",
    "chat",
    "agent",
    "sessions.changed",
    "session.message",
    "cron",
    "tick",
    "error",
)


SESSION_DEFAULTS = {
    "defaultAgentId": "main",
    "mainKey": "main",
    "mainSessionKey": MAIN_SESSION,
    "scope": "per-sender",
}
"""Which agent and session a client opens by default (OpenClaw's ``sessionDefaults``)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A usable ``connect`` request: answer ``request_id`` with ``hello-ok``."""

    request_id: str
    params: ConnectParams


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the handshake is refused: answered as a response to ``request_id`` if the frame
    had one, else as an ``error`` event; then the socket is closed."""

    request_id: str | None
    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None
    """The error's ``details``, when OpenClaw's clients read more than turngate's code."""


def check_connect(frame: dict[str, Any], token: str | None) -> Accepted | Refusal:
    """Check the first frame: a ``connect`` request, valid params, a protocol range that
    holds turngate's, and the gateway's ``token`` (if one is set)."""
    request_id = frame.get("id") if isinstance(frame.get("id"), str) else None
    if frame.get("type") != "req" or frame.get("method") != "connect":
        return Refusal(
            request_id, ErrorCode.INVALID_FIELD, "the first frame must be a connect request"
        )
    try:
        request = RequestFrame.model_validate(frame)
        params = ConnectParams.model_validate(request.params)
    except ValidationError as exc:
        return Refusal(request_id, ErrorCode.INVALID_FIELD, field_message(exc))
    if not params.minProtocol <= PROTOCOL_VERSION <= params.maxProtocol:
        return Refusal(
            request.id,
            ErrorCode.INVALID_FIELD,
            f"protocol mismatch: minProtocol/maxProtocol: this gateway speaks protocol"
            f" {PROTOCOL_VERSION}",
            {
                "code": "PROTOCOL_MISMATCH",
                "clientMinProtocol": params.minProtocol,
                "clientMaxProtocol": params.maxProtocol,
                "expectedProtocol": PROTOCOL_VERSION,
            },
        )
    if not token_matches(token, params.auth.secret):
        return _unauthorized(request.id, missing=params.auth.secret is None)
    return Accepted(request.id, params)


def _unauthorized(request_id: str, *, missing: bool) -> Refusal:
    """A token missing or wrong, in the shape OpenClaw's clients show as "this Gateway
    expects its token" without retrying in a loop."""
    if missing:
        message = "unauthorized: gateway token missing (send this gateway's token as auth.token)"
        reason, step = "token_missing", "update_auth_configuration"
    else:
        message = "unauthorized: gateway token mismatch (auth.token is not this gateway's token)"
        reason, step = "token_mismatch", "update_auth_credentials"
    details = {
        "code": f"AUTH_{reason.upper()}",
        "authReason": reason,
        "canRetryWithDeviceToken": False,
        "recommendedNextStep": step,
    }
    return Refusal(request_id, ErrorCode.UNAUTHORIZED, message, details)


def hello(
    params: ConnectParams,
    conn_id: str,
    config: GatewayConfig,
    snapshot: dict[str, Any],
    methods: Sequence[str],
) -> dict[str, Any]:
    """The ``hello-ok`` payload: who this gateway is, what it serves (``methods``, besides
    ``connect``), and its limits."""
    return {
        "type": "hello-ok",
        "protocol": PROTOCOL_VERSION,
        "server": {"version": __version__, "connId": conn_id, "name": "turngate"},
        "features": {"methods": ["connect", *methods], "events": list(EVENTS)},
        "snapshot": {**snapshot, "sessionDefaults": SESSION_DEFAULTS},
        "auth": {
            "method": "token" if config.token else "none",
            "role": params.role,
            "scopes": params.scopes,
        },
        "policy": {
            "maxPayload": config.ws_frame_bytes_max,
            "maxBufferedBytes": config.ws_frame_bytes_max * 4,
            "tickIntervalMs": config.ws_tick_interval_ms,
        },
    }
