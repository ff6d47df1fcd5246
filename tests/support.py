"""What tests share: a real gateway on an ephemeral loopback port, two presets of the
scriptable fake model (:mod:`tests.fake_models`), and a state directory whose transcript
holds tool calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from tests.fake_models import Call, ScriptedModel
from turngate.config import GatewayConfig
from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.core.turn import Outcome, TurnState
from turngate.gateway.app import create_app
from turngate.gateway.server import GatewayServer, listening_socket, uvicorn_config
from turngate.runtime.events import Event, EventBus
from turngate.store.base import TurnRecord
from turngate.store.configured import DB_FILE
from turngate.store.sqlite import SqliteStore

SERVER_STOP_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 15.0


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 in a thread; yield its base URL.

    The socket is bound and listening before the server starts, so a client may connect at
    once: its connection waits in the backlog until the app's startup is complete. No
    polling, no sleeping.
    """
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config: GatewayConfig = app.state.config
    server = GatewayServer(uvicorn_config(app, config, loop="asyncio", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test gateway did not stop within its deadline")


def gateway_config(state_dir: Path, **overrides: Any) -> GatewayConfig:
    """A config for tests: state in ``state_dir``, everything else default unless given, but
    for the shutdown drain: a test's gateway stops at once unless the test says otherwise."""
    overrides.setdefault("shutdown_drain_s", 0.0)
    return GatewayConfig(state_dir=state_dir, **overrides)


@contextmanager
def running_gateway(
    state_dir: Path,
    *,
    provider: Any = None,
    events: EventBus | None = None,
    **overrides: Any,
) -> Iterator[str]:
    """A real gateway app with a SQLite store in ``state_dir``, served on loopback."""
    app = create_app(gateway_config(state_dir, **overrides), provider=provider, events=events)
    with serve(app) as url:
        yield url


class EventLog:
    """Collects engine events (subscribe :meth:`record` to an :class:`EventBus`)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]


class EventWaiter(EventLog):
    """An :class:`EventLog` a test thread can block on until enough events arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def record(self, event: Event) -> None:
        super().record(event)
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, kind: str, count: int = 1) -> list[Event]:
        """Block until ``count`` events of ``kind`` were seen; fail after a deadline."""
        with self._changed:
            seen = self._changed.wait_for(
                lambda: len(self.of(kind)) >= count, timeout=EVENT_TIMEOUT_S
            )
        events = self.of(kind)
        assert seen, f"waited {EVENT_TIMEOUT_S}s for {count} {kind!r} events, saw {len(events)}"
        return events

    async def until(self, kind: str, count: int = 1) -> list[Event]:
        """:meth:`wait_for`, from a coroutine, without blocking its loop."""
        return await asyncio.to_thread(self.wait_for, kind, count)


class HangOnceProvider(ScriptedModel):
    """Hangs forever (until cancelled) on the first call; echoes after that."""

    def __init__(self) -> None:
        super().__init__([Call(hang=True)], name="hang-once")


class GatedEchoProvider(ScriptedModel):
    """Echoes, but holds every call at a gate until the test calls :meth:`open`
    (thread-safe); the first ``ahead`` deltas of a reply come before the gate."""

    def __init__(self, ahead: int = 0) -> None:
        super().__init__(then=Call(chunks=4, gate_after=ahead), name="gated-echo")


TOOL_EXCHANGE = (
    TranscriptItem.user("weather in Lisbon?"),
    TranscriptItem.assistant("Let me look."),
    TranscriptItem.calls(
        [
            ToolCall("c1", "weather", '{"city": "Lisbon"}'),
            ToolCall("c2", "forecast", "{not json"),
        ]
    ),
    TranscriptItem.tool_result("c1", "weather", "sunny, 24°C"),
    TranscriptItem.tool_result("c2", "forecast", "arguments are not JSON", is_error=True),
    TranscriptItem.assistant("Sunny, 24°C."),
)
"""One turn's exchange in which the model called two tools, one of which failed."""


async def store_exchange(
    state_dir: Path, session_key: str, exchange: Sequence[TranscriptItem], at: float
) -> None:
    """Write to ``state_dir``'s database, as a gateway would, one turn of ``session_key``
    that replied with ``exchange`` at wall time ``at``: what a state directory holds once
    the agent loop calls tools (nothing in the gateway writes tool entries yet)."""
    store = SqliteStore(state_dir / DB_FILE)
    await store.open()
    try:
        epoch = await store.session_epoch(session_key) + 1
        turn_id = f"tools-{epoch}"
        message = exchange[0].text
        record = TurnRecord(
            turn_id, session_key, "main", message, "followup", TurnState.ACCEPTED, at, 60.0
        )
        await store.accept_turn(record)
        await store.start_run(session_key, turn_id, epoch, [turn_id], at)
        reply = exchange[-1].text
        outcome = Outcome(turn_id, TurnState.REPLIED, turn_id, reply=reply)
        await store.end_run(session_key, turn_id, epoch, [outcome], exchange, at)
    finally:
        await store.close()
