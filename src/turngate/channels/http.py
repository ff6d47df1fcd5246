"""What the channels that call a platform over HTTP share."""

from __future__ import annotations

import urllib.request

import httpx2


def network_transport(api_url: str) -> httpx2.AsyncHTTPTransport:
    """A plain transport to ``api_url``, through the environment's proxy as httpx2 itself
    would go (a client given its own transport turns its proxy lookup off)."""
    url = httpx2.URL(api_url)
    proxy = None
    if not urllib.request.proxy_bypass(url.host):
        proxy = urllib.request.getproxies().get(url.scheme)
    return httpx2.AsyncHTTPTransport(proxy=proxy)


__all__ = ["network_transport"]
