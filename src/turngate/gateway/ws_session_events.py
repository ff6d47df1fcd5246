"""Session subscriptions on a WebSocket connection, as OpenClaw's clients make them.

- ``sessions.subscribe``: the connection watches every session. Each time a turn is queued,
  starts or ends it gets ``sessions.changed`` ``{sessionKey, agentId, reason, runId, state,
  phase, hasActiveRun, activeRunIds, ts}`` (no row: a client refreshes the rows it holds with
  ``sessions.list`` or ``sessions.describe``, which OpenClaw's protocol allows), and a
  ``session.message`` for each transcript entry any session's runs write.
- ``sessions.messages.subscribe {key}``: ``session.message`` for that one session.

A ``sessions.subscribe`` client also gets a ``cron`` event ``{action, runId, sessionKey,
status, ts}`` when a cron job's turn starts (``action: "started"``) or ends (``"finished"``):
OpenClaw's Control UI reloads its automations (their last run, the run history) on it.

``session.message`` is ``{sessionKey, agentId, message, messageId, messageSeq, updatedAt}``
(and ``runId`` on a run's last reply), the message in ``chat.history``'s shape with the same
``__openclaw`` id and seq, so a client that also reloads the history holds one message, not
two. The entries are read from the store after the run wrote them (a model step, a tool
result, the run's end), so what a client is shown is what is durable.

Everything here belongs to the connection's generation: the event subscription ends with it
(:meth:`SessionEvents.close`), the reads run in its task group, and nothing is sent through a
closed connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from turngate.core.keys import parse_session_key
from turngate.core.transcript import EntryKind
from turngate.errors import TurngateError
from turngate.gateway.ws_frames import (
    KeyParams,
    ListParams,
    RequestFrame,
    history_message,
    response,
)
from turngate.gateway.ws_outbox import ConnectionClosed, now_ms
from turngate.gateway.ws_peer import MethodHandler, Peer
from turngate.lanes.cron import LANE as CRON_LANE
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventKind
from turngate.store.base import TranscriptEntry
from turngate.types import RunId

log = logging.getLogger("turngate.gateway")

CHANGE_REASONS = {
    EventKind.QUEUED: "send",
    EventKind.STARTED: "agent.run.started",
    EventKind.ENDED: "agent.run.ended",
}
"""The engine events ``sessions.changed`` reports, and the ``reason`` each carries."""

WRITES = frozenset({EventKind.MODEL_ANSWERED, EventKind.TOOL_CALLED, EventKind.ENDED})
"""Events after which a run may have written transcript entries."""

READ_ENTRIES_MAX = 64
"""Entries read per session each time its runs wrote; a run that wrote more since the last
read gets ``sessions.changed`` ``phase: "message"`` instead (the client reloads history)."""

RUNS_REMEMBERED_MAX = 1024
"""Runs whose last sent entry the connection remembers, so that no entry is sent twice."""


class SessionEvents:
    """The session subscriptions of one connection (one per connection, made by its first
    request for one of these methods)."""

    def __init__(self, peer: Peer, engine: Engine, page: Callable[[ListParams], Any]) -> None:
        self.peer = peer
        self.engine = engine
        self._page = page
        self._every_session = False
        self._sessions: set[str] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._written: dict[str, dict[RunId, bool]] = {}
        """Sessions with runs that wrote since the last read: each run, and whether it ended."""
        self._sent: dict[RunId, int] = {}  # insertion-ordered: the oldest run goes first
        self._reading = False

    def close(self) -> None:
        """The connection ended: its subscriptions end with it."""
        self._every_session = False
        self._sessions.clear()
        self._written.clear()
        self._listen()

    def _listen(self) -> None:
        """Be subscribed to the engine's events exactly while something is watched."""
        watching = self._every_session or bool(self._sessions)
        if watching and self._unsubscribe is None:
            self._unsubscribe = self.engine.events.subscribe(self._on_event)
        elif not watching and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def _subscribe(self, request: RequestFrame) -> None:
        # With list parameters, the first page comes with the subscription (checked first:
        # a refused request subscribes nothing).
        listing = ListParams.model_validate(request.params) if request.params else None
        self._every_session = True
        self._listen()
        payload: dict[str, Any] = {"subscribed": True}
        if listing is not None:
            payload["list"] = await self._page(listing)
        self.peer.send(response(request.id, payload))

    async def _unsubscribe_all(self, request: RequestFrame) -> None:
        self._every_session = False
        self._listen()
        self.peer.send(response(request.id, {"subscribed": False}))

    async def _subscribe_messages(self, request: RequestFrame) -> None:
        key = str(KeyParams.model_validate(request.params).session_key())
        self._sessions.add(key)
        self._listen()
        self.peer.send(response(request.id, {"subscribed": True, "key": key}))

    async def _unsubscribe_messages(self, request: RequestFrame) -> None:
        key = str(KeyParams.model_validate(request.params).session_key())
        self._sessions.discard(key)
        self._listen()
        self.peer.send(response(request.id, {"subscribed": False, "key": key}))

    # -- events -------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if self.peer.closed:
            return  # a closed connection's subscription acts on nothing (I6)
        try:
            if self._every_session and event.kind in CHANGE_REASONS:
                self.peer.event("sessions.changed", _change(event))
                if event.lane == CRON_LANE and event.kind is not EventKind.QUEUED:
                    self.peer.event("cron", _cron_change(event))
            watched = self._every_session or event.session_key in self._sessions
            if watched and event.kind in WRITES and event.run_id is not None:
                runs = self._written.setdefault(event.session_key, {})
                runs[event.run_id] = runs.get(event.run_id, False) or event.kind is EventKind.ENDED
                if not self._reading:
                    self._reading = True
                    self.peer.spawn(self._read_written())
        except ConnectionClosed:
            self.close()  # the client is too far behind: the connection is being dropped

    async def _read_written(self) -> None:
        """Send what the sessions' runs wrote, session by session, until nothing is left."""
        try:
            while self._written and not self.peer.closed:
                key, runs = self._written.popitem()
                try:
                    entries = await self.engine.store.transcript(key, READ_ENTRIES_MAX)
                except TurngateError as exc:
                    log.warning(
                        "%s: session %s: its new messages could not be read: %s",
                        self.peer.conn_id,
                        key,
                        exc.message,
                        extra={"session_key": key},
                    )
                    continue
                self._send_entries(key, runs, entries)
        except ConnectionClosed:
            self.close()
        finally:
            self._reading = False

    def _send_entries(
        self, key: str, runs: dict[RunId, bool], entries: list[TranscriptEntry]
    ) -> None:
        agent_id = parse_session_key(key).agent_id
        for run_id, ended in runs.items():
            sent = self._sent.pop(run_id, 0)
            new = [e for e in entries if e.run_id == run_id and e.seq > sent]
            if not ended and new and new[-1].kind is EntryKind.ASSISTANT:
                # Perhaps the run's reply, written before its end was told: it goes out with
                # the end, naming the run, or with what the run writes after it.
                new.pop()
            if not new:
                self._remember(run_id, sent)
                continue
            if len(new) == len(entries) == READ_ENTRIES_MAX and sent:
                # More than one read's worth since the last: the client reloads instead.
                self.peer.event("sessions.changed", _reload(key, agent_id))
            last = new[-1]
            for entry in new:
                terminal = ended and entry is last and entry.kind is EntryKind.ASSISTANT
                self.peer.event("session.message", _message(key, agent_id, entry, terminal))
            self._remember(run_id, last.seq)

    def _remember(self, run_id: RunId, seq: int) -> None:
        self._sent[run_id] = seq
        if len(self._sent) > RUNS_REMEMBERED_MAX:
            del self._sent[next(iter(self._sent))]


HANDLERS: dict[str, MethodHandler[SessionEvents]] = {
    "sessions.subscribe": SessionEvents._subscribe,
    "sessions.unsubscribe": SessionEvents._unsubscribe_all,
    "sessions.messages.subscribe": SessionEvents._subscribe_messages,
    "sessions.messages.unsubscribe": SessionEvents._unsubscribe_messages,
}
"""The dispatch table of :class:`SessionEvents`: each method's handler, by method name."""


def _change(event: Event) -> dict[str, Any]:
    """``sessions.changed`` for a turn queued, started or ended."""
    payload: dict[str, Any] = {
        "sessionKey": event.session_key,
        "agentId": parse_session_key(event.session_key).agent_id,
        "reason": CHANGE_REASONS[event.kind],
    }
    run_id = event.run_id or event.turn_id  # a queued turn is its run's id to be
    if run_id is not None:
        payload["runId"] = run_id
    if event.state is not None:
        payload["state"] = event.state
    if event.kind is EventKind.STARTED:
        payload.update(phase="start", hasActiveRun=True, activeRunIds=[event.run_id])
    elif event.kind is EventKind.ENDED:
        phase = "end" if event.state == "replied" else "error"
        payload.update(phase=phase, hasActiveRun=False, activeRunIds=[])
    payload["ts"] = now_ms()
    return payload


def _cron_change(event: Event) -> dict[str, Any]:
    """``cron`` for a cron job's turn that started or ended."""
    payload: dict[str, Any] = {
        "action": "started" if event.kind is EventKind.STARTED else "finished",
        "runId": event.turn_id or event.run_id,
        "sessionKey": event.session_key,
    }
    if event.kind is EventKind.ENDED:
        payload["status"] = "ok" if event.state == "replied" else "error"
    payload["ts"] = now_ms()
    return payload


def _reload(key: str, agent_id: str) -> dict[str, Any]:
    """``sessions.changed`` that only says the session has new messages to reload."""
    return {"sessionKey": key, "agentId": agent_id, "phase": "message", "ts": now_ms()}


def _message(key: str, agent_id: str, entry: TranscriptEntry, terminal: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sessionKey": key,
        "agentId": agent_id,
        "message": history_message(entry),
        "messageId": str(entry.seq),
        "messageSeq": entry.seq,
        "updatedAt": int(entry.at_wall * 1000),
    }
    if terminal:
        # OpenClaw names the run on the envelope of a run's last reply only: the one that
        # settles the run in its clients.
        payload["runId"] = entry.run_id
    return payload
