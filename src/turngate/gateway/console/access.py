"""Who may reach which console path: the sign-in cookie, and the paths open without it.

The console signs in with a cookie rather than a bearer header (a browser cannot add one to
a page load or an ``EventSource``). The cookie holds an HMAC of a fixed label keyed with the
gateway token, never the token itself: it proves the holder once presented the token, and
changing the token signs every console out. It is ``HttpOnly`` (page scripts cannot read
it), ``SameSite=Strict`` (other sites' pages do not send it) and ``Path=/console`` (the rest
of the API never sees it, and never accepts it).

Open without the cookie: the page itself (it shows the sign-in form), its static files, and
sign-in and sign-out. Every other console path (``/console/api/...``) needs the cookie or
the bearer token, checked by :class:`~turngate.gateway.auth.TokenMiddleware`.

Only the standard library here: the gateway's token middleware imports this module.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "/console"
"""Every console path is this or starts with it and a slash."""
STATIC_PREFIX = "/console/static/"
LOGIN_PATH = "/console/login"
LOGOUT_PATH = "/console/logout"
OPEN_PATHS = frozenset({PREFIX, PREFIX + "/", LOGIN_PATH, LOGOUT_PATH})
"""Console paths served without the cookie (besides the static files); ``/console/``
redirects to ``/console``."""

COOKIE_NAME = "turngate_console"
COOKIE_LABEL = b"turngate console session v1"
"""What the cookie's HMAC signs: a new label (v2) would sign every console out."""
COOKIE_BYTES_MAX = 4096
"""A ``Cookie`` header longer than this is not read (browsers send at most about 4 KiB a
cookie; the gateway's own is 64 hex digits)."""


def is_console_path(path: str) -> bool:
    """Whether ``path`` is the console's: ``/console`` or under ``/console/``."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def is_open_path(path: str) -> bool:
    """Whether the console serves ``path`` without the cookie (see the module docstring)."""
    return path in OPEN_PATHS or path.startswith(STATIC_PREFIX)


def cookie_value(token: str) -> str:
    """The cookie's value for a gateway whose token is ``token``."""
    return hmac.new(token.encode(), COOKIE_LABEL, hashlib.sha256).hexdigest()


def cookie_matches(token: str, cookie_header: str | None) -> bool:
    """Whether a ``Cookie`` request header carries this gateway's console cookie
    (compared in constant time)."""
    presented = read_cookie(cookie_header)
    if presented is None:
        return False
    return hmac.compare_digest(cookie_value(token).encode(), presented.encode())


def read_cookie(cookie_header: str | None) -> str | None:
    """The console cookie's value in a ``Cookie`` header (the first, if sent twice)."""
    if not cookie_header or len(cookie_header) > COOKIE_BYTES_MAX:
        return None
    for pair in cookie_header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name == COOKIE_NAME:
            return value.strip().strip('"')
    return None


def set_cookie_header(token: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value that signs a browser in (``Secure`` over HTTPS)."""
    return _cookie(cookie_value(token), secure=secure)


def clear_cookie_header(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that signs a browser out (the cookie expires at once)."""
    return _cookie("", secure=secure) + "; Max-Age=0"


def _cookie(value: str, *, secure: bool) -> str:
    flags = f"{COOKIE_NAME}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict"
    return flags + "; Secure" if secure else flags
