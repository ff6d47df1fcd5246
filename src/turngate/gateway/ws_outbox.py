"""Frames out of one gateway WebSocket connection: its bounded outbox and the one writer.

The writer is the connection's only sender: frames go out in the order they were queued, and
a close is queued like a frame, so nothing can be sent after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket

from turngate.gateway.ws_frames import encode_frame

log = logging.getLogger("turngate.gateway")

OUTBOX_FRAMES_MAX = 1000
"""A client that falls this far behind is disconnected (its turns go on)."""


def now_ms() -> int:
    """The wall clock in milliseconds, as frames carry it (``ts``, ``timestamp``)."""
    return int(time.time() * 1000)


class ConnectionClosed(Exception):
    """The connection is over; unwind its task group."""


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    """Queued after a connection's last frames: the writer closes the socket with ``code``."""

    code: int


class Outbox:
    """The frames queued for one socket, and the writer that sends them in order.

    A plain list and a future made only while the writer waits, not an
    :class:`asyncio.Queue`: a queue's three deques and its event preallocate some 3 kB, and
    an idle connection's outbox is empty.
    """

    def __init__(self, websocket: WebSocket, conn_id: str) -> None:
        self._ws = websocket
        self._conn_id = conn_id
        self._pending: list[str | _CloseRequest] = []
        self._unsent = 0  # queued and not yet taken by the writer to send
        self._wakeup: asyncio.Future[None] | None = None  # the writer waits for a frame
        self._seq = 0

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a client too far behind is disconnected."""
        self._enqueue(encode_frame(frame))

    def event(self, name: str, payload: dict[str, Any]) -> None:
        """Queue an event frame with this connection's next ``seq``."""
        self._seq += 1
        self.send({"type": "event", "event": name, "payload": payload, "seq": self._seq})

    def close(self, code: int) -> None:
        """Queue the close behind the frames queued so far; :class:`ConnectionClosed` if the
        client is too far behind for even that."""
        self._enqueue(_CloseRequest(code))

    def _enqueue(self, item: str | _CloseRequest) -> None:
        if self._unsent >= OUTBOX_FRAMES_MAX:
            log.warning("%s: client is %d frames behind; closing", self._conn_id, OUTBOX_FRAMES_MAX)
            raise ConnectionClosed
        self._pending.append(item)
        self._unsent += 1
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def write(self) -> None:
        """The one sender: queued frames in order, then the close if one is queued."""
        while True:
            if not self._pending:
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            # No local holds the batch: an idle writer keeps no sent frame alive.
            if await self._send(self._take()):
                return

    def _take(self) -> list[str | _CloseRequest]:
        """The frames queued so far, to send in one go; the next ones go to a new list."""
        batch, self._pending = self._pending, []
        return batch

    async def _send(self, batch: list[str | _CloseRequest]) -> bool:
        """Send ``batch`` in order; True once the socket is closed."""
        for item in batch:
            self._unsent -= 1
            try:
                if isinstance(item, _CloseRequest):
                    await self._ws.close(code=item.code)
                    return True
                await self._ws.send_text(item)
            except RuntimeError:
                # uvicorn closed the socket itself (a frame over ws_max_size: 1009; no pong
                # in time) and refuses every send after its close frame. The reader is about
                # to see the disconnect; the connection is over, its turns go on.
                log.debug("%s: the server closed the socket first", self._conn_id)
                raise ConnectionClosed from None
        return False
