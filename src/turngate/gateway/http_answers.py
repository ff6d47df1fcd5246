"""The answers the HTTP server gives itself, in the app's place: a refused or timed-out
connection, a request that is not HTTP, a handler that left its request unanswered. Each is
the error JSON ``{"error": {"code", "message"}}``, like every refusal of the app.
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Iterable

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from turngate.errors import ErrorCode
from turngate.gateway.frames import ERROR_HTTP_STATUS, error_body

log = logging.getLogger("turngate.gateway.http")


def answer_bytes(
    code: ErrorCode,
    message: str,
    default_headers: Iterable[tuple[bytes, bytes]] = (),
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole ``Connection: close`` HTTP response carrying the error JSON for ``code``."""
    status = ERROR_HTTP_STATUS[code]
    body = json_body(code, message)
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra_headers,
    ]
    status_line = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return status_line + lines + b"\r\n" + body


def json_body(code: ErrorCode, message: str) -> bytes:
    """The error JSON, serialised as the app's own JSON responses are."""
    return json.dumps(error_body(code, message), separators=(",", ":")).encode()


class InternalErrorAsJson:
    """The app, but a request its handler leaves unanswered (it raised, was cancelled, or
    returned without answering) gets ``500 internal`` as error JSON, not uvicorn's text."""

    def __init__(self, app: ASGI3Application, cycle: RequestResponseCycle) -> None:
        self.app = app
        self.cycle = cycle

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run the app; answer for it if it did not."""
        try:
            await self.app(scope, receive, send)
        except BaseException:
            # uvicorn logs the exception (with its traceback) once this re-raises.
            await self._answer(send, "internal error: the request handler failed")
            raise
        if self._unanswered():
            log.error("the request handler returned without answering %s", scope.get("path"))
            await self._answer(send, "internal error: the request handler gave no answer")

    def _unanswered(self) -> bool:
        return not self.cycle.response_started and not self.cycle.disconnected

    async def _answer(self, send: ASGISendCallable, message: str) -> None:
        if not self._unanswered():
            return
        body = json_body(ErrorCode.INTERNAL, message)
        await send(
            {
                "type": "http.response.start",
                "status": ERROR_HTTP_STATUS[ErrorCode.INTERNAL],
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
