"""Signing in to the console with the gateway token, and out again.

``POST /console/login`` ``{"token": "..."}`` checks the token (constant time) and sets the
console's cookie (see :mod:`~turngate.gateway.console.access`); a wrong token is refused
``401 unauthorized`` and sets nothing. ``POST /console/logout`` clears the cookie. A gateway
without a token is open: sign-in answers that no token is needed and sets nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turngate.config import GatewayConfig
from turngate.errors import UnauthorizedError
from turngate.gateway.auth import bearer, token_matches
from turngate.gateway.chat_http import read_body
from turngate.gateway.console import access
from turngate.gateway.frames import parse_json, validate

SIGNIN_BODY_BYTES_MAX = 16_384


class SignInBody(BaseModel):
    """``POST /console/login``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: StrictStr


def token_of(request: Request) -> str | None:
    """The gateway token (None: the gateway is open)."""
    config: GatewayConfig = request.app.state.config
    return config.token


def signed_in(request: Request) -> bool:
    """Whether the request carries the console's cookie or the bearer token (always true on
    a gateway without a token)."""
    token = token_of(request)
    if token is None:
        return True
    presented = bearer(request.headers.get("authorization"))
    return (presented is not None and token_matches(token, presented)) or access.cookie_matches(
        token, request.headers.get("cookie")
    )


def _secure(request: Request) -> bool:
    """Reached over HTTPS: the cookie then says ``Secure``."""
    return request.url.scheme == "https"


async def login(request: Request) -> Response:
    """Sign in: the right token sets the cookie; a wrong one is refused (401)."""
    body = validate(SignInBody, parse_json(await read_body(request, SIGNIN_BODY_BYTES_MAX)))
    token = token_of(request)
    if token is None:
        return JSONResponse({"ok": True, "tokenRequired": False})
    if not token_matches(token, body.token):
        raise UnauthorizedError("token: not this gateway's token")
    response = JSONResponse({"ok": True, "tokenRequired": True})
    response.headers.append("set-cookie", access.set_cookie_header(token, secure=_secure(request)))
    response.headers["cache-control"] = "no-store"
    return response


async def logout(request: Request) -> Response:
    """Sign out: the cookie is cleared."""
    response = JSONResponse({"ok": True})
    response.headers.append("set-cookie", access.clear_cookie_header(secure=_secure(request)))
    return response
