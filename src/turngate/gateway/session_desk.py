"""The session tools' desk over the real engine: a sent message is a turn like any other.

:class:`EngineDesk` is the :class:`~turngate.tools.sessions.SessionDesk` that the gateway
attaches to each agent's :class:`~turngate.tools.sessions.SessionTools` once its engine
runs. A message sent to a session is stored and queued there (``followup``, lane
:data:`LANE`) like a client's; its reply stays in that session's transcript (and a channel's
session delivers it to its chat, as for any turn of that session).
"""

from __future__ import annotations

import asyncio

from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Outcome
from turngate.runtime.engine import Engine, SubmitRequest

LANE = "sessions_send"
"""The lane of turns an agent sent to its own sessions (events and metrics name it)."""


class EngineDesk:
    """Sends to and reads sessions of ``engine`` for the session tools."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def send(self, session_key: str, message: str) -> str:
        """Store and queue ``message`` as a turn of ``session_key``; return its id once it is
        accepted. The turn's outcome is never awaited here: the calling run must not wait on
        another session's queue."""
        request = SubmitRequest(
            parse_session_key(session_key), message, mode=QueueMode.FOLLOWUP, lane=LANE
        )
        ticket = await self._engine.submit(request)
        # Nobody awaits this outcome. The engine already marks the failures it sets as seen,
        # and drops the future once the turn ends; this keeps an unawaited failure from being
        # logged as "never retrieved" should that ever change.
        ticket.outcome.add_done_callback(_seen)
        return ticket.turn_id

    async def history(self, session_key: str, limit: int) -> list[TranscriptItem]:
        """The last ``limit`` transcript entries of ``session_key``, oldest first."""
        entries = await self._engine.store.transcript(session_key, limit)
        return [entry.item for entry in entries]


def _seen(outcome: asyncio.Future[Outcome]) -> None:
    if not outcome.cancelled():
        outcome.exception()
