"""How the console tests reach a gateway: as a signed-in browser would (the console's cookie,
the page's own ``Origin``), or as an API client with the bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx2

from tests.secrets import GATEWAY_TOKEN as TOKEN

KEY = "agent:main:main"
CALL_TIMEOUT_S = 20.0


@contextmanager
def signed_in(url: str) -> Iterator[httpx2.Client]:
    """A client signed in to the console, sending the page's own ``Origin`` as a browser
    does."""
    with httpx2.Client(base_url=url, headers={"Origin": url}, timeout=CALL_TIMEOUT_S) as http:
        answer = http.post("/console/login", json={"token": TOKEN})
        assert answer.status_code == 200, answer.text
        yield http


@contextmanager
def bearer(url: str) -> Iterator[httpx2.Client]:
    """A client of the gateway's own API (the bearer token, no cookie)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx2.Client(base_url=url, headers=headers, timeout=CALL_TIMEOUT_S) as http:
        yield http


def session_path(key: str, rest: str = "") -> str:
    """A session's API path, its key escaped as the page escapes it."""
    return f"/console/api/sessions/{quote(key, safe='')}{rest}"


def session_row(http: httpx2.Client, key: str) -> dict[str, Any]:
    """The sessions list's row of ``key`` (there must be exactly one)."""
    answer = http.get("/console/api/sessions")
    assert answer.status_code == 200, answer.text
    rows = [row for row in answer.json()["sessions"] if row["key"] == key]
    assert len(rows) == 1, answer.json()
    row: dict[str, Any] = rows[0]
    return row


def send(url: str, message: str, *, wait: bool = True, key: str = KEY) -> dict[str, Any]:
    """Send ``message`` through ``POST /chat.send`` (as any API client does); its answer."""
    with bearer(url) as http:
        body = {"sessionKey": key, "message": message, "wait": wait}
        answer = http.post("/chat.send", json=body)
    assert answer.status_code in (200, 202), answer.text
    result: dict[str, Any] = answer.json()
    return result
