"""The HTTP server's limits: per-connection deadlines, the connection cap, and the counts of
what they refused (for ``/metrics``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from turngate.config import GatewayConfig

log = logging.getLogger("turngate.gateway.http")

REFUSALS_LOG_INTERVAL_S = 10.0
"""At most one WARNING this often about refused connections (it counts the ones in between)."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection deadlines and the cap, from the gateway's config."""

    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    connections_max: int

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ConnectionLimits:
        """The limits ``config`` sets (``http_*_timeout_s``, ``connections_max``)."""
        return cls(
            header_timeout_s=config.http_header_timeout_s,
            body_timeout_s=config.http_body_timeout_s,
            keepalive_timeout_s=config.http_keepalive_timeout_s,
            connections_max=config.connections_max,
        )


class ConnectionGate:
    """One server's connection cap: who is admitted, and the rate-limited WARNING."""

    def __init__(self, connections_max: int) -> None:
        self.connections_max = connections_max
        self.refused_open = 0
        """Refused connections still open (lingering): they do not count against the cap."""
        self._warned_at: float | None = None
        self._refused_unlogged = 0

    def admits(self, open_count: int) -> bool:
        """Whether the newest of ``open_count`` open connections may stay."""
        return open_count - self.refused_open <= self.connections_max

    def refuse(self, now: float) -> None:
        """Count one refusal; log it unless a WARNING went out less than an interval ago."""
        self.refused_open += 1
        if self._warned_at is not None and now - self._warned_at < REFUSALS_LOG_INTERVAL_S:
            self._refused_unlogged += 1
            return
        since = (
            f" ({self._refused_unlogged} more refused since the previous warning)"
            if self._refused_unlogged
            else ""
        )
        log.warning(
            "connections_max (%d) reached: refusing new connections with "
            "503 too_many_connections%s",
            self.connections_max,
            since,
            extra={"event": "connections_refused"},
        )
        self._warned_at = now
        self._refused_unlogged = 0

    def release(self) -> None:
        """A refused connection has closed."""
        self.refused_open -= 1


@dataclass(slots=True)
class EdgeCounts:
    """What the server refused or cut off before any handler ran (read by ``/metrics``)."""

    refused_connections: int = 0
    """Connections past ``connections_max``."""
    header_timeouts: int = 0
    body_timeouts: int = 0
    bad_requests: int = 0
    """Requests that were not HTTP."""
