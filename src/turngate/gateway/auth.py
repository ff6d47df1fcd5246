"""The gateway token: checked on every HTTP request but ``/healthz``, and in the WebSocket
``connect`` frame, with a constant-time comparison. The console (``/console``) also takes its
sign-in cookie, and serves its page and sign-in without one (see
:mod:`~turngate.gateway.console.access`)."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from turngate.errors import ErrorCode, UnauthorizedError
from turngate.gateway.console import access
from turngate.gateway.frames import ERROR_HTTP_STATUS, error_body

OPEN_PATHS = frozenset({"/healthz"})
"""Liveness probes answer without a token (they reveal nothing)."""


def token_matches(expected: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the gateway token (always true when none is configured)."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class TokenMiddleware:
    """Refuses HTTP requests without the right bearer token (401, ``unauthorized``); on
    console paths, the console's cookie does too."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        presented = bearer(headers.get(b"authorization", b"").decode("latin-1") or None)
        console = access.is_console_path(scope["path"])
        if token_matches(self.token, presented) or (
            console and _console_admits(self.token, scope["path"], headers)
        ):
            await self.app(scope, receive, send)
            return
        error = UnauthorizedError(
            "Authorization: a valid 'Bearer <gateway token>' header is required"
            + (" (or sign in at /console)" if console else "")
            if presented is None
            else "Authorization: the bearer token is not this gateway's token"
        )
        await _reply_json(send, ERROR_HTTP_STATUS[ErrorCode.UNAUTHORIZED], error)


def _console_admits(token: str, path: str, headers: dict[bytes, bytes]) -> bool:
    """A console path open without sign-in, or a request with the console's cookie."""
    cookie = headers.get(b"cookie", b"").decode("latin-1") or None
    return access.is_open_path(path) or access.cookie_matches(token, cookie)


async def _reply_json(send: Send, status: int, error: UnauthorizedError) -> None:
    body = json.dumps(error_body(error.code, error.message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="turngate"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
