"""Streaming a run's text and tool calls to the clients that asked for it, as they happen.

A :class:`DeltaStream` belongs to one waiting client of one turn. The owner publishes each
delta of a run to the streams of every turn that run serves (a merged or steered message
streams the reply that absorbs it), and closes them when the turn ends. The outcome, not
the stream, is the truth: a client that falls behind still gets the whole reply at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from turngate.runtime.activity import ToolActivity
from turngate.types import RunId

Delta = str | ToolActivity
"""A piece of a run's text, or one of its tool calls beginning or returning."""

DELTAS_BUFFERED_MAX = 10_000
"""Past this many unread deltas a stream stops buffering (the final outcome still arrives)."""


class DeltaStream:
    """Deltas of the run serving one turn, for one consumer."""

    def __init__(self) -> None:
        self._buffer: list[tuple[RunId, Delta]] = []
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def put(self, run_id: RunId, delta: Delta) -> None:
        """Append a delta of run ``run_id`` (never blocks the publisher)."""
        if self.closed:
            return
        if len(self._buffer) >= DELTAS_BUFFERED_MAX:
            self.dropped += 1
            return
        self._buffer.append((run_id, delta))
        self._ready.set()

    def close(self) -> None:
        """No more deltas: the turn has ended."""
        self.closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[tuple[RunId, Delta]]:
        """``(run_id, delta)`` pairs until the turn ends. The caller bounds the wait."""
        while True:
            if self._buffer:
                pending, self._buffer = self._buffer, []
                for item in pending:
                    yield item
                continue
            if self.closed:
                return
            self._ready.clear()
            await self._ready.wait()
