"""The built-in offline provider: it answers with the user's message, after a set latency.

It is the default so that ``make run`` works with no model and no network, and its latency is
configurable so that the field reports' fast-model races can be reproduced offline. The wait
is an ``asyncio.sleep`` on the running loop, so it follows the simulator's virtual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta

ECHO_PREFIX = "echo: "


class EchoProvider:
    """Replies ``echo: <the new user messages>``, streamed in ``chunks`` deltas; it reports
    no token usage (it counts no tokens)."""

    name = "echo"

    def __init__(self, latency_s: float = 0.0, chunks: int = 3) -> None:
        if latency_s < 0:
            raise ValueError(f"echo latency: must be >= 0, got {latency_s}")
        self.latency_s = latency_s
        self.chunks = max(1, chunks)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield the reply in ``chunks`` text deltas, then a ``stop``."""
        reply = ECHO_PREFIX + "\n".join(request.new_user_messages())
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        size = -(-len(reply) // self.chunks)
        for start in range(0, len(reply), size):
            yield TextDelta(reply[start : start + size])
        yield Finish("stop")
