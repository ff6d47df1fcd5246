"""Server-sent events as the console sends them: named events with JSON data, keep-alive
comments while nothing happens (the gateway's one interval, :data:`SSE_KEEPALIVE_S`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from turngate.gateway.turn_follow import KEEPALIVE, SSE_KEEPALIVE_S

__all__ = ["KEEPALIVE", "SSE_KEEPALIVE_S", "STREAM_HEADERS", "sse_event"]

STREAM_HEADERS = {"cache-control": "no-cache, no-store", "x-accel-buffering": "no"}
"""A stream is never cached, nor buffered by a proxy in front of the gateway."""
MEDIA_TYPE = "text/event-stream"


def sse_event(name: str, data: Mapping[str, Any]) -> str:
    """One event: ``event: <name>`` and its data as one line of JSON."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
