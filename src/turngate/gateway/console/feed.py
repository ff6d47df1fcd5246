"""The console's live feed: ``GET /console/api/events``, the engine's events as server-sent
events, so an open console follows the turn coordination without asking again.

Each console subscribes to the engine's :class:`~turngate.runtime.events.EventBus` with a
:class:`ConsoleFeed`: a buffer of at most :data:`FEED_EVENTS_MAX` events that the engine fills
without ever waiting (a subscriber runs inside the engine's emit), and the console's stream
empties. A console too slow to keep up is dropped, never waited for: its feed ends with an
``end`` event (``overflow``) and the browser reconnects and reads everything again. A run's
``progress`` events (one per streamed piece of text) are kept to one per session in the buffer.

The stream: ``hello`` ``{"at", "recent"}`` once subscribed (``recent``: the last
:data:`RECENT_EVENTS_MAX` events before, as ``change`` data), then ``change`` ``{"kind",
"sessionKey", "runId", "turnId", "epoch", "state", "code", "lane", "detail", "at"}`` per
event, a keep-alive comment after :data:`~turngate.gateway.console.sse.SSE_KEEPALIVE_S` of
quiet, and ``end`` ``{"reason"}`` when the gateway stops (``shutdown``) or drops the console
(``overflow``). The subscription ends with the stream, however it ends (the client going
away included).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from turngate.errors import ErrorCode, UnavailableError
from turngate.gateway.console.sse import (
    KEEPALIVE,
    MEDIA_TYPE,
    SSE_KEEPALIVE_S,
    STREAM_HEADERS,
    sse_event,
)
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventKind

FEED_EVENTS_MAX = 1000
"""Events one console's feed buffers before the console is dropped."""
RECENT_EVENTS_MAX = 200
"""Events a console gets when it connects: what happened just before."""
FEEDS_MAX = 64
"""Consoles following the feed at once; one more is refused ``503``."""
DETAIL_CHARS_MAX = 500
RETRY_MS = 2000
"""How long a browser waits before it reconnects a feed that ended."""


class FeedEnd(enum.StrEnum):
    """Why a feed ended (the ``end`` event's ``reason``)."""

    OVERFLOW = "overflow"
    """The console fell :data:`FEED_EVENTS_MAX` events behind."""
    SHUTDOWN = "shutdown"
    """The gateway is stopping."""
    CLOSED = "closed"
    """The stream is over (the console went away)."""


class ConsoleFeed:
    """One console's subscription: see the module docstring."""

    def __init__(self, events_max: int = FEED_EVENTS_MAX) -> None:
        self.events_max = events_max
        self.ended: FeedEnd | None = None
        self._events: deque[Event] = deque()
        self._progress: set[str] = set()
        """Sessions with a ``progress`` event in the buffer."""
        self._ready = asyncio.Event()

    def offer(self, event: Event) -> None:
        """Buffer ``event`` (the engine's subscriber: never waits, never raises)."""
        if self.ended is not None:
            return
        if event.kind is EventKind.PROGRESS:
            if event.session_key in self._progress:
                return
            self._progress.add(event.session_key)
        if len(self._events) >= self.events_max:
            self.end(FeedEnd.OVERFLOW)
            return
        self._events.append(event)
        self._ready.set()

    def end(self, reason: FeedEnd) -> None:
        """End the feed: what is buffered is still sent, then ``end``."""
        if self.ended is None:
            self.ended = reason
        self._ready.set()

    def take(self) -> list[Event]:
        """Every buffered event, oldest first; the buffer is empty after."""
        taken = list(self._events)
        self._events.clear()
        self._progress.clear()
        if self.ended is None:
            self._ready.clear()
        return taken

    async def wait(self) -> None:
        """Until an event is buffered or the feed ended. The caller bounds the wait."""
        await self._ready.wait()


class ConsoleFeeds:
    """The console's side of the engine's events: the feeds open now (so that the gateway's
    drain can end them: a stream open forever would hold the server's shutdown for its whole
    grace), and the last :data:`RECENT_EVENTS_MAX` events, which a console gets when it
    connects (its log does not start empty)."""

    def __init__(self, engine: Engine, feeds_max: int = FEEDS_MAX) -> None:
        self.engine = engine
        self.feeds_max = feeds_max
        self._open: set[ConsoleFeed] = set()
        self._closed = False
        self._recent: deque[Event] = deque(maxlen=RECENT_EVENTS_MAX)
        engine.events.subscribe(self._remember)

    def _remember(self, event: Event) -> None:
        if event.kind is not EventKind.PROGRESS:
            self._recent.append(event)

    def recent(self) -> list[Event]:
        """The last events (progress left out), oldest first."""
        return list(self._recent)

    def __len__(self) -> int:
        return len(self._open)

    def open(self) -> ConsoleFeed:
        """A new feed, or ``503`` when the gateway stops or :data:`FEEDS_MAX` are open."""
        if self._closed:
            raise UnavailableError("console events: the gateway is stopping")
        if len(self._open) >= self.feeds_max:
            raise UnavailableError(
                f"console events: {self.feeds_max} consoles follow the gateway already; close one",
                code=ErrorCode.TOO_MANY_CONNECTIONS,
            )
        feed = ConsoleFeed()
        self._open.add(feed)
        return feed

    def discard(self, feed: ConsoleFeed) -> None:
        """``feed``'s stream is over."""
        self._open.discard(feed)

    def close_all(self) -> None:
        """End every feed and open no more (the gateway is stopping)."""
        self._closed = True
        for feed in self._open:
            feed.end(FeedEnd.SHUTDOWN)


class FeedResponse(StreamingResponse):
    """The stream of one feed; subscribed to the engine's events for exactly as long as the
    response is being sent, whether it ends, the client goes, or the gateway stops."""

    def __init__(self, feeds: ConsoleFeeds) -> None:
        self.engine = feeds.engine
        self.feeds = feeds
        self.feed = feeds.open()
        super().__init__(self._stream(), media_type=MEDIA_TYPE, headers=STREAM_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        unsubscribe = self.engine.events.subscribe(self.feed.offer)
        try:
            await super().__call__(scope, receive, send)
        finally:
            unsubscribe()
            self.feeds.discard(self.feed)
            self.feed.end(FeedEnd.CLOSED)

    async def _stream(self) -> AsyncIterator[str]:
        clock = self.engine.clock
        wall_offset = clock.wall() - clock.now()
        recent = [change_body(e, wall_offset) for e in self.feeds.recent()]
        yield f"retry: {RETRY_MS}\n" + sse_event("hello", {"at": clock.wall(), "recent": recent})
        while True:
            try:
                async with asyncio.timeout(SSE_KEEPALIVE_S):
                    await self.feed.wait()
            except TimeoutError:
                yield KEEPALIVE
                continue
            wall_offset = clock.wall() - clock.now()
            taken = self.feed.take()
            if taken:
                yield "".join(sse_event("change", change_body(e, wall_offset)) for e in taken)
            if self.feed.ended is not None:
                yield sse_event("end", {"reason": self.feed.ended.value})
                return


def change_body(event: Event, wall_offset: float) -> dict[str, Any]:
    """One engine event as the feed sends it; ``at`` in wall time (the engine's clock plus
    ``wall_offset``)."""
    return {
        "kind": event.kind.value,
        "sessionKey": event.session_key,
        "runId": event.run_id,
        "turnId": event.turn_id,
        "epoch": event.epoch,
        "state": event.state,
        "code": None if event.code is None else event.code.value,
        "lane": event.lane,
        "detail": event.detail[:DETAIL_CHARS_MAX],
        "at": round(event.at + wall_offset, 3),
    }


async def events(request: Request) -> Response:
    """``GET /console/api/events``: this console's live feed (see the module docstring)."""
    feeds: ConsoleFeeds = request.app.state.console_feeds
    return FeedResponse(feeds)
