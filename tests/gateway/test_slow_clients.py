"""Slow, idle and too many clients, spoken to with raw sockets.

A client that does not finish its headers or its body in time is answered ``408`` and
dropped; an idle kept-alive connection is closed; past ``connections_max`` a new connection
is answered ``503`` and closed. Refusals the HTTP server makes itself (malformed request,
crashed handler) are the error JSON like every other refusal, and a client that writes a
whole oversized body before reading gets its ``413``, not a connection reset.

The gateway's deadlines here are ``TIMEOUT_S``; every wait for the server is a socket timeout
(``WAIT_S``), an upper bound, never a sleep: each test asserts that the server waited at least
its deadline, and acted well before the socket timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support import gateway_config, running_gateway, serve
from turngate.errors import IllegalTransitionError
from turngate.gateway.http_protocol import READ_TRANSITIONS, ReadEvent, Reading, next_reading

TIMEOUT_S = 0.3
"""The gateway's header, body and keep-alive deadlines in these tests."""
WAIT_S = 5.0
"""How long a test waits for the server to act: far past any deadline above."""
BODY_BYTES_MAX = 1_048_576
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The ``{"error": {"code", "message"}}`` body, checked to be JSON."""
        assert self.headers["content-type"] == "application/json", self.headers
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"code", "message"}, error
        return error


def connect(url: str) -> socket.socket:
    """A raw TCP connection to the gateway at ``url``."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_answer(sock: socket.socket) -> Answer:
    """Read one response (its body delimited by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def read_while_open(sock: socket.socket, quiet_s: float) -> bytes:
    """What the server sends until it has been quiet for ``quiet_s``; it must not close."""
    received = b""
    sock.settimeout(quiet_s)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received
    finally:
        sock.settimeout(WAIT_S)
    pytest.fail(f"the server closed the connection after sending {received!r}")


def assert_closed_cleanly(sock: socket.socket) -> None:
    """The server closed its side with a FIN (a reset raises ConnectionResetError here)."""
    assert sock.recv(65536) == b""


def assert_gateway_answers(url: str) -> None:
    """A well-behaved request on the same gateway is still served."""
    with closing(connect(url)) as sock:
        sock.sendall(HEALTHZ)
        assert read_answer(sock).status == 200


def assert_waited(started: float) -> None:
    """The server waited its deadline, and acted well before our socket timeout."""
    elapsed = time.monotonic() - started
    assert TIMEOUT_S <= elapsed < WAIT_S / 2, elapsed


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway with short deadlines, shared by the tests that do not need a cap."""
    with running_gateway(
        tmp_path_factory.mktemp("slow-clients"),
        http_header_timeout_s=TIMEOUT_S,
        http_body_timeout_s=TIMEOUT_S,
        http_keepalive_timeout_s=TIMEOUT_S,
        body_bytes_max=BODY_BYTES_MAX,
    ) as url:
        yield url


# --- header and body deadlines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "late"),
    [
        (b"", "none received"),
        (b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\nContent-Le", "not complete"),
    ],
    ids=["nothing", "half-the-headers"],
)
def test_client_that_does_not_finish_its_headers_is_answered_408_then_dropped(
    gateway: str, sent: bytes, late: str
) -> None:
    started = time.monotonic()
    with closing(connect(gateway)) as sock:
        sock.sendall(sent)
        answer = read_answer(sock)
        assert_waited(started)
        assert answer.status == 408
        assert answer.headers["connection"] == "close"
        error = answer.error()
        assert error["code"] == "request_timeout"
        assert "request headers" in error["message"]
        assert late in error["message"]
        assert_closed_cleanly(sock)
    assert_gateway_answers(gateway)


def test_short_body_is_answered_408_then_dropped(gateway: str) -> None:
    with closing(connect(gateway)) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n{")
        answer = read_answer(sock)
        assert_waited(started)
        assert answer.status == 408
        assert answer.error()["code"] == "request_timeout"
        assert "request body" in answer.error()["message"]
        assert_closed_cleanly(sock)
    assert_gateway_answers(gateway)


def test_endless_chunked_body_is_cut_off_at_the_body_deadline(gateway: str) -> None:
    stop = threading.Event()
    chunks_sent = 0

    def keep_sending(sock: socket.socket) -> None:
        # A client that makes progress all along: the deadline is for the whole body.
        nonlocal chunks_sent
        try:
            while not stop.wait(TIMEOUT_S / 10):
                sock.sendall(b"1\r\nx\r\n")
                chunks_sent += 1
        except OSError:
            pass  # the server closed the connection: what this test waits for

    with closing(connect(gateway)) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sender = threading.Thread(target=keep_sending, args=(sock,))
        sender.start()
        try:
            answer = read_answer(sock)
            assert_waited(started)
        finally:
            stop.set()
            sender.join(WAIT_S)
        assert chunks_sent >= 3
        assert answer.status == 408
        assert "request body" in answer.error()["message"]
    assert_gateway_answers(gateway)


# --- keep-alive ----------------------------------------------------------------------------


def test_idle_keepalive_connection_is_closed(gateway: str) -> None:
    with closing(connect(gateway)) as sock:
        sock.sendall(HEALTHZ)
        assert read_answer(sock).status == 200
        started = time.monotonic()
        sock.sendall(HEALTHZ)  # a kept-alive connection serves the next request
        assert read_answer(sock).status == 200
        assert_closed_cleanly(sock)
        # The idle clock started at the end of the second answer, after `started`.
        assert_waited(started)


def test_next_request_on_a_kept_alive_connection_has_its_own_header_deadline(
    gateway: str,
) -> None:
    with closing(connect(gateway)) as sock:
        sock.sendall(HEALTHZ)
        assert read_answer(sock).status == 200
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        answer = read_answer(sock)
        assert answer.status == 408
        assert "request headers: not complete" in answer.error()["message"]
        assert_closed_cleanly(sock)
        # The header clock started when the first answer ended, just before `started`.
        assert time.monotonic() - started < WAIT_S / 2


# --- oversized bodies, malformed requests, crashed handlers --------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\n",
        b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n",
        b"POST /chat.send HTTP/1.0\r\nHost: gateway\r\n",
    ],
    ids=["keep-alive", "connection-close", "http-1.0"],
)
def test_oversized_body_written_in_full_before_reading_gets_its_413(
    gateway: str, head: bytes
) -> None:
    body = b"x" * (4 * BODY_BYTES_MAX)
    with closing(connect(gateway)) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        answer = read_answer(sock)
        assert answer.status == 413
        assert answer.error()["code"] == "body_too_large"
        if b"HTTP/1.1" in head and b"close" not in head:
            sock.sendall(HEALTHZ)  # the connection is still good for the next request
            assert read_answer(sock).status == 200
        else:
            assert_closed_cleanly(sock)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost gateway\r\n\r\n",
        b"POST /chat.send HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["header-without-colon", "bad-chunk-size"],
)
def test_malformed_request_is_answered_400_json(gateway: str, request_bytes: bytes) -> None:
    with closing(connect(gateway)) as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
        assert answer.status == 400
        assert answer.headers["connection"] == "close"
        assert answer.error()["code"] == "bad_request"
        assert_closed_cleanly(sock)
    assert_gateway_answers(gateway)


class Silent:
    """An ASGI endpoint that returns without answering."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


class TinyApp:
    """Handlers that misbehave in the ways the HTTP server itself must answer for."""

    def __init__(self) -> None:
        self.released = threading.Event()
        """Set when the upload handler's receive() says the client is gone."""

    async def upload(self, request: Request) -> Response:
        try:
            await request.body()
        except ClientDisconnect:
            self.released.set()
        return Response("unreachable: the client is gone")

    async def cancelled(self, request: Request) -> Response:
        raise asyncio.CancelledError

    def starlette(self, state_dir: Path) -> Starlette:
        app = Starlette(
            routes=[
                Route("/upload", self.upload, methods=["POST"]),
                Route("/cancelled", self.cancelled),
                Route("/silent", Silent()),
            ]
        )
        app.state.config = gateway_config(state_dir, http_body_timeout_s=TIMEOUT_S)
        return app


def test_handler_waiting_for_a_late_body_is_told_the_client_is_gone(tmp_path: Path) -> None:
    tiny = TinyApp()
    with serve(tiny.starlette(tmp_path)) as url, closing(connect(url)) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: gateway\r\nContent-Length: 10\r\n\r\nabc")
        answer = read_answer(sock)
        assert_waited(started)
        assert answer.status == 408
        assert tiny.released.wait(WAIT_S)
        assert_closed_cleanly(sock)


@pytest.mark.parametrize("path", ["/cancelled", "/silent"])
def test_handler_that_leaves_a_request_unanswered_gets_500_json(tmp_path: Path, path: str) -> None:
    with serve(TinyApp().starlette(tmp_path)) as url, closing(connect(url)) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: gateway\r\n\r\n" % path.encode())
        answer = read_answer(sock)
        assert answer.status == 500
        assert answer.error()["code"] == "internal"
        assert_closed_cleanly(sock)


# --- the connection cap --------------------------------------------------------------------


def test_connection_past_the_cap_is_refused_with_503_until_one_closes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="turngate.gateway.http")
    with running_gateway(tmp_path, connections_max=2) as url:
        first, second = connect(url), connect(url)
        with closing(first), closing(second):
            for sock in (first, second):
                sock.sendall(HEALTHZ)
                assert read_answer(sock).status == 200
            for _ in range(2):
                with closing(connect(url)) as refused:
                    refused.sendall(HEALTHZ)
                    answer = read_answer(refused)
                    assert answer.status == 503
                    assert answer.headers["connection"] == "close"
                    assert int(answer.headers["retry-after"]) > 0
                    assert answer.error()["code"] == "too_many_connections"
                    assert_closed_cleanly(refused)
            # The server closes `first` itself, so its place is free once the FIN is here.
            first.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            assert read_answer(first).status == 200
            assert_closed_cleanly(first)
            assert_gateway_answers(url)
    warnings = [
        r
        for r in caplog.records
        if r.name == "turngate.gateway.http" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "connections_max (2)" in warnings[0].getMessage()


def test_websockets_count_toward_the_connection_cap(tmp_path: Path) -> None:
    with running_gateway(tmp_path, connections_max=1) as url, closing(connect(url)) as ws:
        ws.sendall(WS_HANDSHAKE)
        assert ws.recv(65536).startswith(b"HTTP/1.1 101 ")
        with closing(connect(url)) as refused:
            assert read_answer(refused).status == 503


def test_websocket_is_not_cut_by_the_http_deadlines(gateway: str) -> None:
    with closing(connect(gateway)) as ws:
        ws.sendall(WS_HANDSHAKE)
        received = b""
        while b"\r\n\r\n" not in received:
            received += ws.recv(65536)
        assert received.startswith(b"HTTP/1.1 101 ")
        # Past every HTTP deadline the socket stays open (frames may come; no EOF, no 408).
        assert b"HTTP/1.1 408" not in read_while_open(ws, 3 * TIMEOUT_S)
        mask = os.urandom(4)
        ws.sendall(b"\x89\x80" + mask)  # a masked, empty ping
        pong = b""
        while b"\x8a\x00" not in pong:
            chunk = ws.recv(65536)
            assert chunk, "the server closed the WebSocket instead of answering a ping"
            pong += chunk


# --- the reading side's transition table ---------------------------------------------------


@pytest.mark.parametrize("state", list(Reading))
@pytest.mark.parametrize("event", list(ReadEvent))
def test_every_reading_transition_is_in_the_table_or_refused(
    state: Reading, event: ReadEvent
) -> None:
    if (state, event) in READ_TRANSITIONS:
        assert next_reading(state, event) is READ_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransitionError, match=f"{state}.*{event}"):
            next_reading(state, event)


def test_what_the_server_cuts_off_is_counted_in_metrics(tmp_path: Path) -> None:
    with running_gateway(
        tmp_path, http_header_timeout_s=TIMEOUT_S, http_body_timeout_s=TIMEOUT_S
    ) as url:
        with closing(connect(url)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert read_answer(sock).status == 408
        with closing(connect(url)) as sock:
            sock.sendall(b"POST /chat.send HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            assert read_answer(sock).status == 408
        with closing(connect(url)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nBroken header\r\n\r\n")
            assert read_answer(sock).status == 400
        with closing(connect(url)) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n")
            metrics = read_answer(sock).body.decode()
    assert 'turngate_http_request_timeouts_total{part="headers"} 1.0' in metrics
    assert 'turngate_http_request_timeouts_total{part="body"} 1.0' in metrics
    assert "turngate_http_bad_requests_total 1.0" in metrics
    assert "turngate_connections_refused_total 0.0" in metrics
