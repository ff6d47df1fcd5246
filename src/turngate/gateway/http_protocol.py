"""uvicorn's HTTP protocol with turngate's connection limits (work in progress)."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatewayHttpProtocol(HttpToolsProtocol):
    """HTTP/1.1 over httptools, with deadlines and a connection cap."""
