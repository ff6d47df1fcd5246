"""The console's page and its static files, from the package (``static/``).

``GET /console`` is the console, or its sign-in form for a browser not signed in to a
gateway that has a token. ``GET /console/static/<name>`` serves the files beside them, by
name from a fixed list read from the package (no path is ever built from the request). Every
answer forbids what the page does not need: no script, style or connection to anywhere but
the gateway itself (``Content-Security-Policy``), no framing, no referrer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from turngate.errors import NotFoundError
from turngate.gateway.console.signin import signed_in

CONSOLE_PAGE = "index.html"
SIGNIN_PAGE = "signin.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The kinds of file the console ships; any other file in ``static/`` is not served."""

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One shipped file: its bytes, its media type, and an ETag for revalidation."""

    body: bytes
    media_type: str
    etag: str


@cache
def static_files() -> dict[str, StaticFile]:
    """Every file the console serves, by name (read once from the package)."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files(__name__.rpartition(".")[0]).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            files[entry.name] = StaticFile(body, MEDIA_TYPES[suffix], etag)
    return files


def _answer(request: Request, file: StaticFile) -> Response:
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache", "etag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


async def console_page(request: Request) -> Response:
    """``GET /console``: the console, or the sign-in form."""
    name = CONSOLE_PAGE if signed_in(request) else SIGNIN_PAGE
    response = _answer(request, static_files()[name])
    # Which page depends on the cookie: never reuse one for the other.
    response.headers["vary"] = "Cookie, Authorization"
    return response


async def static_file(request: Request) -> Response:
    """``GET /console/static/<name>``: one of the console's files."""
    name: str = request.path_params["name"]
    file = static_files().get(name)
    if file is None or name in (CONSOLE_PAGE, SIGNIN_PAGE):
        raise NotFoundError(f"/console/static/{name[:80]}: no such console file")
    return _answer(request, file)
