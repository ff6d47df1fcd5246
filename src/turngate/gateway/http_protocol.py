"""uvicorn's HTTP/1.1 protocol (httptools) with turngate's connection limits.

uvicorn bounds none of these by itself: a client that never finished its headers or its body
held its connection (and a file descriptor) forever, and only the fd limit bounded how many
connections were open. Here:

- **Headers** must be complete within ``http_header_timeout_s`` of the connection opening, or
  of the previous response ending on a kept-alive connection; else ``408 request_timeout``.
- **The body** (Content-Length or chunked) must be complete within ``http_body_timeout_s`` of
  its headers; else ``408`` if nothing was answered yet, and the connection is closed. Bytes
  arriving do not extend it, so an endless chunked body is cut off too, and the handler
  waiting on ``receive()`` is told the client is gone.
- **An idle kept-alive connection** is closed after ``http_keepalive_timeout_s``.
- **Past ``connections_max`` open connections** (HTTP and WebSocket alike: uvicorn keeps both
  in ``server_state.connections``), a new one is answered ``503 too_many_connections`` with
  ``Retry-After`` and closed without running the app; one WARNING per
  ``REFUSALS_LOG_INTERVAL_S`` at most says so.

While the app works on a request, and while it writes its answer, no deadline runs: a turn may
take minutes. After a WebSocket upgrade the connection belongs to the WebSocket protocol, and
none of these timers exists any more. Each timer belongs to its connection and is cancelled
when the connection closes or upgrades.

The answers uvicorn itself would give in text/plain (``400`` for a request that is not HTTP,
``500`` for a handler that raised, was cancelled or returned without answering) are the
error JSON ``{"error": {"code", "message"}}`` here, like every other refusal.

**Lingering close.** A socket closed while the client's bytes are still unread makes the
kernel send RST instead of FIN: the client's send fails with "connection reset", and a client
that reads only after writing its whole body may lose the answer that was waiting for it (this
is what a ``413`` with ``Connection: close`` did). So when the server ends a connection while
the client may still be sending, it half-closes instead (FIN after the answer), then reads and
drops whatever still comes until the client closes its side, for at most
``LINGER_BYTES_MAX`` bytes and until the body deadline (at least ``LINGER_S``).

The reading side of a connection, the one table::

    idle    --begin-->    headers    (first byte of a request)
    headers --headers-->  body       (headers complete; the body may be empty)
    body    --complete--> idle
    headers --upgrade-->  upgraded   (WebSocket: the connection now belongs to it)
    idle | headers | body --linger--> lingering
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from turngate.config import GatewayConfig
from turngate.core.clock import Clock
from turngate.errors import ErrorCode, IllegalTransitionError
from turngate.gateway.http_answers import InternalErrorAsJson, answer_bytes
from turngate.gateway.http_limits import ConnectionGate, ConnectionLimits, EdgeCounts
from turngate.runtime.clock import LoopClock

log = logging.getLogger("turngate.gateway.http")

LINGER_S = 2.0
"""How long a connection being closed keeps reading (and dropping) at least, so that a client
still sending sees our answer and a FIN rather than a reset."""
LINGER_BYTES_MAX = 16 * 1024 * 1024
"""How much a lingering connection reads and drops at most before it closes anyway."""
RETRY_AFTER_S = 1
"""``Retry-After`` of a refused connection: the cap is usually reached by a burst."""

Expiry = Callable[[], None]

if not hasattr(HttpToolsProtocol, "_start_asgi_task"):
    # Every request cycle is adopted there (its closes linger, its crashes answer JSON); an
    # older uvicorn would silently skip that, so refuse to start instead.
    raise ImportError("turngate's HTTP protocol needs a newer uvicorn (0.54 is tested)")


class Reading(enum.StrEnum):
    """Where the reading side of a connection is."""

    IDLE = "idle"
    HEADERS = "headers"
    BODY = "body"
    UPGRADED = "upgraded"
    LINGERING = "lingering"


class ReadEvent(enum.StrEnum):
    """What the parser (or the server closing) does to the reading side."""

    BEGIN = "begin"
    HEADERS = "headers"
    COMPLETE = "complete"
    UPGRADE = "upgrade"
    LINGER = "linger"


READ_TRANSITIONS: dict[tuple[Reading, ReadEvent], Reading] = {
    (Reading.IDLE, ReadEvent.BEGIN): Reading.HEADERS,
    (Reading.HEADERS, ReadEvent.HEADERS): Reading.BODY,
    (Reading.BODY, ReadEvent.COMPLETE): Reading.IDLE,
    (Reading.HEADERS, ReadEvent.UPGRADE): Reading.UPGRADED,
    (Reading.IDLE, ReadEvent.LINGER): Reading.LINGERING,
    (Reading.HEADERS, ReadEvent.LINGER): Reading.LINGERING,
    (Reading.BODY, ReadEvent.LINGER): Reading.LINGERING,
}
"""The one table of legal transitions of a connection's reading side."""


def next_reading(state: Reading, event: ReadEvent) -> Reading:
    """The state after ``event``; :class:`IllegalTransitionError` if the table has none."""
    try:
        return READ_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError("http connection", state, event) from None


def http_protocol_for(
    config: GatewayConfig, counts: EdgeCounts | None = None, clock: Clock | None = None
) -> type[GatewayHttpProtocol]:
    """The protocol class uvicorn makes each connection with, under ``config``'s limits.

    One class per server: its connections share one :class:`ConnectionGate`, ``counts`` of
    what they refused, and ``clock`` (the loop's by default).
    """
    configured_limits = ConnectionLimits.from_config(config)
    configured_gate = ConnectionGate(configured_limits.connections_max)
    configured_counts = counts or EdgeCounts()
    configured_clock = clock or LoopClock()

    class ConfiguredHttpProtocol(GatewayHttpProtocol):
        limits = configured_limits
        gate = configured_gate
        counts = configured_counts
        clock = configured_clock

    return ConfiguredHttpProtocol


class GatewayHttpProtocol(HttpToolsProtocol):
    """HTTP/1.1 over httptools, with deadlines, a connection cap and a lingering close.

    Made per server by :func:`http_protocol_for`, which sets :attr:`limits`, :attr:`gate`
    and :attr:`clock`.
    """

    limits: ClassVar[ConnectionLimits]
    gate: ClassVar[ConnectionGate]
    counts: ClassVar[EdgeCounts]
    clock: ClassVar[Clock]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._reading = Reading.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: tuple[float, Expiry] | None = None
        self._requests = 0
        """Requests whose headers are complete (a WebSocket upgrade is not one)."""
        self._responses = 0
        self._ready_at = 0.0
        """When the connection last owed no answer: its header and idle clocks start here."""
        self._body_from: float | None = None
        """When the body being read became the one the connection waits for."""
        self._refused = False
        self._lingered_bytes = 0

    # --- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection and start its header clock, or refuse it (over the cap)."""
        super().connection_made(transport)
        self._ready_at = self.clock.now()
        if self.gate.admits(len(self.connections)):
            self._rearm()
        else:
            self._refuse()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the connection's timer; a refused one no longer holds its place."""
        self._disarm()
        if self._refused:
            self._refused = False
            self.gate.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse, or drop what comes while lingering."""
        if self._reading is Reading.LINGERING:
            self._drop(data)
        else:
            super().data_received(data)

    def shutdown(self) -> None:
        """Server shutdown: a lingering connection closes at once."""
        if self._reading is Reading.LINGERING:
            self.transport.close()
        else:
            super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket protocol, without any of our timers."""
        self._disarm()
        self._reading = next_reading(self._reading, ReadEvent.UPGRADE)
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """The request is not HTTP: ``400 bad_request`` as error JSON, and close."""
        self.counts.bad_requests += 1
        if self._answer_is_ours():
            self._answer_and_close(ErrorCode.BAD_REQUEST, "malformed HTTP request")
        else:
            self.transport.close()  # an answer is being written: a 400 would land inside it

    # --- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts: an idle connection's keep-alive clock becomes its header clock."""
        super().on_message_begin()
        self._reading = next_reading(self._reading, ReadEvent.BEGIN)
        self._rearm()

    def on_headers_complete(self) -> None:
        """Headers done: the body clock starts, unless earlier answers are still owed."""
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is previous:
            return  # a WebSocket upgrade: handle_websocket_upgrade comes next
        self._requests += 1
        owed_before = self._requests - 1 - self._responses
        self._body_from = self.clock.now() if owed_before == 0 else None
        self._reading = next_reading(self._reading, ReadEvent.HEADERS)
        self._rearm()

    def on_message_complete(self) -> None:
        """The body is complete: no deadline until the answer is written."""
        super().on_message_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        self._reading = next_reading(self._reading, ReadEvent.COMPLETE)
        self._rearm()

    def on_response_complete(self) -> None:
        """An answer is written: the next request's clocks start when none is owed."""
        self._responses += 1
        if self._reading is Reading.LINGERING:
            # What uvicorn's version counts; nothing else applies to a closing connection.
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self.transport.is_closing():
            return
        # Ours is the idle deadline: uvicorn's whole-second timer would stop at the first
        # byte and never restart (a body still arriving after a 413 held the connection).
        self._unset_keepalive_if_required()
        owed = self._requests - self._responses
        now = self.clock.now()
        if owed == 0:
            self._ready_at = now
        elif owed == 1 and self._reading is Reading.BODY and self._body_from is None:
            self._body_from = now
        self._rearm()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # Every cycle's close goes through us (to linger), and what its handler leaves
        # unanswered is answered in JSON.
        cycle.transport = CycleTransport(self)
        super()._start_asgi_task(cycle, InternalErrorAsJson(app, cycle))

    # --- deadlines ---------------------------------------------------------------------------

    def _next_deadline(self) -> tuple[float, Expiry] | None:
        """The deadline the reading side is under now, if any (none while an answer is owed)."""
        limits = self.limits
        owed = self._requests - self._responses
        if self._reading is Reading.BODY and self._body_from is not None:
            return self._body_from + limits.body_timeout_s, self._body_late
        if owed > 0:
            return None
        if self._reading is Reading.HEADERS or (
            self._reading is Reading.IDLE and self._requests == 0
        ):
            return self._ready_at + limits.header_timeout_s, self._headers_late
        if self._reading is Reading.IDLE:
            return self._ready_at + limits.keepalive_timeout_s, self._idle_expired
        return None

    def _rearm(self) -> None:
        """Put the connection's one timer on :meth:`_next_deadline`."""
        if self._reading in (Reading.LINGERING, Reading.UPGRADED) or self.transport.is_closing():
            return
        due = self._next_deadline()
        if due == self._timer_due:
            return
        self._disarm()
        if due is not None:
            self._arm(*due)

    def _arm(self, at: float, expiry: Expiry) -> None:
        self._timer = self.loop.call_later(max(0.0, at - self.clock.now()), expiry)
        self._timer_due = (at, expiry)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = None

    def _headers_late(self) -> None:
        self._timer = self._timer_due = None
        self.counts.header_timeouts += 1
        seconds = f"{self.limits.header_timeout_s:g}s"
        if self._reading is Reading.IDLE:
            message = f"request headers: none received within {seconds}"
        else:
            message = f"request headers: not complete within {seconds}"
        self._time_out(message)

    def _body_late(self) -> None:
        self._timer = self._timer_due = None
        self.counts.body_timeouts += 1
        if self._answer_is_ours():
            self._time_out(f"request body: not complete within {self.limits.body_timeout_s:g}s")
        else:
            self.transport.close()  # too late for a 408: the answer is (being) written

    def _answer_is_ours(self) -> bool:
        """Whether the server may answer now, in the app's place: no answer is being written,
        and the request being read (if any) has none yet; its handler is then silenced."""
        owed = self._requests - self._responses
        if self._reading is not Reading.BODY:
            return owed == 0
        # The request whose body is being read is the last one counted.
        if owed != 1 or self.cycle.response_started:
            return False
        # Its handler's receive() returns http.disconnect at once, and whatever it sends
        # afterwards is dropped: our answer is the answer.
        self.cycle.disconnected = True
        self.cycle.message_event.set()
        return True

    def _idle_expired(self) -> None:
        self._timer = self._timer_due = None
        self.transport.close()

    def _time_out(self, message: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("%s: %s; answering 408 and closing", client, message)
        self._answer_and_close(ErrorCode.REQUEST_TIMEOUT, message)

    # --- refusing, answering, closing --------------------------------------------------------

    def _refuse(self) -> None:
        """Over the cap: ``503`` at once, then close; the app never sees the connection."""
        self._refused = True
        self.counts.refused_connections += 1
        self.gate.refuse(self.clock.now())
        self.transport.write(
            answer_bytes(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"the gateway is at its limit of {self.limits.connections_max} open "
                "connections; retry later",
                self.server_state.default_headers,
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
        )
        # Its request is on its way: linger, so reading it does not reset the connection.
        self._linger()

    def _answer_and_close(self, code: ErrorCode, message: str) -> None:
        self.transport.write(answer_bytes(code, message, self.server_state.default_headers))
        self.close_after_answer()

    def close_after_answer(self) -> None:
        """Close once the answer is out: at once if the client has nothing more to send,
        else half-close and linger."""
        if self.transport.is_closing() or self._reading is Reading.LINGERING:
            return
        if self._reading is Reading.IDLE and not self.pipeline:
            self.transport.close()
        else:
            self._linger()

    def _linger(self) -> None:
        now = self.clock.now()
        until = now + LINGER_S
        if self._reading is Reading.BODY and self._body_from is not None:
            # The rest of the body was due by its deadline anyway.
            until = max(until, self._body_from + self.limits.body_timeout_s)
        self._disarm()
        self._reading = next_reading(self._reading, ReadEvent.LINGER)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(until, self._linger_over)

    def _drop(self, data: bytes) -> None:
        self._lingered_bytes += len(data)
        if self._lingered_bytes > LINGER_BYTES_MAX:
            self.transport.close()

    def _linger_over(self) -> None:
        self._timer = self._timer_due = None
        self.transport.close()

    @property
    def lingering(self) -> bool:
        """Whether the connection is closing, reading only to drop what the client sends."""
        return self._reading is Reading.LINGERING


class CycleTransport(asyncio.Transport):
    """The connection as a request cycle sees it: its close lingers, and nothing is written
    once the connection is closing."""

    def __init__(self, protocol: GatewayHttpProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write, unless the connection is already closing."""
        if not self.is_closing():
            self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        """Whether the connection is closed, closing or lingering."""
        return self._protocol.lingering or self._protocol.transport.is_closing()

    def close(self) -> None:
        """Close the connection, lingering if the client may still be sending."""
        self._protocol.close_after_answer()
