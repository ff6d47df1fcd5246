"""The same-origin rule: every console request that changes something (every ``POST``) must
come from the console's own page.

The sign-in cookie is sent by the browser on its own, so a page of another site (or another
port of this host: ``SameSite`` counts ports as one site) could make a signed-in browser post
to the console. A browser says where a request comes from in ``Origin`` (sent with every
``POST``) and ``Sec-Fetch-Site``; neither can be set by a page's script. A request passes when
``Origin`` is the gateway's own origin (the scheme and ``Host`` it was reached by) or
``Sec-Fetch-Site`` is ``same-origin``; any other, including one with neither header, is
refused ``403 forbidden``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from turngate.errors import ForbiddenError

Endpoint = Callable[[Request], Awaitable[Response]]


def own_origin(request: Request) -> str:
    """The origin the request reached the gateway by: ``scheme://host[:port]``."""
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def check_same_origin(request: Request) -> None:
    """Refuse (``403 forbidden``) a request that does not come from the console's page."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    own = own_origin(request)
    if (origin is not None and origin.lower() == own) or site == "same-origin":
        return
    said = f"Origin {origin[:200]!r}" if origin is not None else "no Origin header"
    raise ForbiddenError(
        f"{request.method} {request.url.path}: refused: a console request that changes"
        f" something must come from the console's own page at {own}/console ({said},"
        f" Sec-Fetch-Site {site[:40] if site else 'not sent'})"
    )


def same_origin(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering only requests that pass :func:`check_same_origin`."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        check_same_origin(request)
        return await endpoint(request)

    return guarded
