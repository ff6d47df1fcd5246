"""Frames in on a gateway WebSocket connection: the next frame as a JSON object, and the
wording of an error for a frame whose fields do not validate."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket

from turngate.errors import ErrorCode, PayloadTooLargeError, RequestError
from turngate.gateway.frames import parse_json
from turngate.gateway.ws_outbox import ConnectionClosed


async def receive_frame(websocket: WebSocket, bytes_max: int) -> dict[str, Any]:
    """The next frame as a JSON object; :class:`RequestError` if it is too large or is
    not one (the socket is fine: the caller answers and reads on)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise ConnectionClosed
    text = message.get("text")
    raw: str | bytes = text if text is not None else message.get("bytes") or b""
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > bytes_max:
        raise PayloadTooLargeError(
            f"frame: {size} bytes, over the limit of {bytes_max}; frame ignored",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    frame = parse_json(raw, "frame")
    if not isinstance(frame, dict):
        raise RequestError(
            f"frame: expected a JSON object, got {type(frame).__name__}",
            code=ErrorCode.INVALID_JSON,
        )
    return frame


def field_message(exc: ValidationError) -> str:
    """The ``invalid_field`` message for a frame or params that do not validate: the first
    problem, naming its field."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "params"
    if error["type"] == "missing":
        return f"{field}: required"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {error['msg']}"
