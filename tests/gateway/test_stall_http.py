"""A model call that never answers cannot take its session down (seed 002).

The run is aborted at its stall deadline, its sender is told so, the abnormal path is logged at
WARNING, and the session answers the next message. A run that even ignores its cancellation is
fenced after the abort grace: the session moves on without it, and when it finally returns its
reply, that reply is turned away and never reaches the transcript.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from tests.support import EventLog, HangOnceProvider, running_gateway
from turngate.cli import main
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.providers.echo import EchoProvider
from turngate.runtime.events import Event, EventBus

STALL_TIMEOUT_S = 0.5
ABORT_GRACE_S = 0.5
CALL_TIMEOUT_S = 10.0
EVENT_TIMEOUT_S = 10.0
ZOMBIE_HOLD_MAX_S = 10.0
"""Bound on how long the misbehaving model holds on after cancellation if never released."""
LATE_REPLY = "a late reply from a run that ignored its cancellation"


class IgnoresCancellationProvider:
    """On its first call, makes no progress and swallows its cancellation; it holds on until
    the test calls :meth:`release` (bounded), then still tries to deliver :data:`LATE_REPLY`.
    Later calls echo."""

    name = "ignores-cancellation"

    def __init__(self) -> None:
        self.calls = 0
        self._echo = EchoProvider()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.run_id: str | None = None
        """The run of the first call: the one that ignores its cancellation."""
        self.cancellation_ignored = threading.Event()
        self.finished = threading.Event()
        """Set when the first call has returned its late reply in full."""

    def release(self) -> None:
        """Let the first call go on (thread-safe)."""
        loop, release = self._loop, self._release
        assert loop is not None, "the first call has not started"
        assert release is not None
        loop.call_soon_threadsafe(release.set)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        self.calls += 1
        if self.calls > 1:
            async for event in self._echo.stream(request):
                yield event
            return
        self.run_id = request.run_id
        self._loop = asyncio.get_running_loop()
        release = self._release = asyncio.Event()
        try:
            await release.wait()
        except asyncio.CancelledError:
            # The misbehaviour under test: a client library that eats the cancellation.
            self.cancellation_ignored.set()
            async with asyncio.timeout(ZOMBIE_HOLD_MAX_S):
                await release.wait()
        yield TextDelta(LATE_REPLY)
        yield Finish("stop")
        self.finished.set()


class LateResultWatch:
    """Subscriber that notices the runtime turning away the zombie's result once it is
    complete: a refused write (``stale_write_refused``) or an ignored report
    (``stale_ignored``) from that run, emitted after its model call returned."""

    STALE_KINDS = frozenset({"stale_write_refused", "stale_ignored"})

    def __init__(self, provider: IgnoresCancellationProvider) -> None:
        self._provider = provider
        self.turned_away = threading.Event()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        # Runs on the gateway's loop thread, which is also where ``finished`` is set, so
        # "after the model call returned" is exact.
        if (
            self._provider.finished.is_set()
            and event.run_id == self._provider.run_id
            and event.kind in self.STALE_KINDS
        ):
            self.events.append(event)
            self.turned_away.set()


def send(client: httpx2.Client, session_key: str, message: str) -> httpx2.Response:
    return client.post("/chat.send", json={"sessionKey": session_key, "message": message})


def test_stalled_run_is_aborted_and_its_session_answers_the_next_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="turngate")
    key = "agent:test:stalls-once"
    with (
        running_gateway(
            tmp_path,
            provider=HangOnceProvider(),
            stall_timeout_s=STALL_TIMEOUT_S,
            abort_grace_s=ABORT_GRACE_S,
        ) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        stalled = send(client, key, "first, never answered")
        warnings = [
            r for r in caplog.records if r.levelno >= logging.WARNING and key in r.getMessage()
        ]
        answered = send(client, key, "second")

    assert stalled.status_code == 409
    assert stalled.json()["status"] == "aborted"
    assert stalled.json()["error"]["code"] == "stalled"
    assert key in stalled.json()["error"]["message"]
    assert warnings, "no WARNING record names the stalled session"
    assert all(r.name.startswith("turngate") for r in warnings)
    assert any("stalled" in r.getMessage() for r in warnings)
    assert answered.status_code == 200
    assert answered.json()["status"] == "ok"
    assert answered.json()["reply"] == "echo: second"  # the aborted turn left no half-turn


def test_run_past_its_turn_deadline_is_aborted_and_its_session_answers_the_next_message(
    tmp_path: Path,
) -> None:
    key = "agent:test:deadline"
    with (
        running_gateway(tmp_path, provider=HangOnceProvider(), abort_grace_s=ABORT_GRACE_S) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        timed_out = client.post(
            "/chat.send", json={"sessionKey": key, "message": "in 300 ms", "timeoutMs": 300}
        )
        answered = send(client, key, "second")

    assert timed_out.status_code == 409
    assert timed_out.json()["status"] == "aborted"
    assert timed_out.json()["error"]["code"] == "run_timeout"
    assert key in timed_out.json()["error"]["message"]
    assert answered.status_code == 200
    assert answered.json()["reply"] == "echo: second"


def test_run_that_ignores_cancellation_is_fenced_and_its_late_reply_is_turned_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "agent:test:zombie"
    provider = IgnoresCancellationProvider()
    events = EventBus()
    log = EventLog()
    late = LateResultWatch(provider)
    events.subscribe(log.record)
    events.subscribe(late)
    with (
        running_gateway(
            tmp_path,
            provider=provider,
            events=events,
            stall_timeout_s=STALL_TIMEOUT_S,
            abort_grace_s=ABORT_GRACE_S,
        ) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        started = time.monotonic()
        stalled = send(client, key, "first, answered too late")
        stalled_after_s = time.monotonic() - started
        answered_while_zombie_lives = send(client, key, "second")
        provider.release()
        turned_away = late.turned_away.wait(EVENT_TIMEOUT_S)
        after_zombie = send(client, key, "third")
        first_turn = client.get(f"/turns/{stalled.json()['runId']}")
        transcript = export_transcript(tmp_path, key, capsys)

    zombie_run = stalled.json()["runId"]
    assert provider.cancellation_ignored.is_set()
    assert stalled.status_code == 409
    assert stalled.json()["status"] == "aborted"
    assert stalled.json()["error"]["code"] == "stalled"
    assert stalled_after_s < STALL_TIMEOUT_S + ABORT_GRACE_S + 1.0
    assert [e.run_id for e in log.of("fenced")] == [zombie_run]
    assert answered_while_zombie_lives.status_code == 200
    assert answered_while_zombie_lives.json()["reply"] == "echo: second"
    assert turned_away, f"the zombie's late result drew no stale event in {EVENT_TIMEOUT_S}s"
    assert provider.run_id == zombie_run
    assert all(e.epoch == 1 for e in late.events)
    assert after_zombie.status_code == 200
    assert after_zombie.json()["reply"] == "echo: third"
    assert first_turn.json()["status"] == "aborted"
    assert first_turn.json()["error"]["code"] == "stalled"
    assert transcript == [
        ("user", "second"),
        ("assistant", "echo: second"),
        ("user", "third"),
        ("assistant", "echo: third"),
    ]


def export_transcript(
    state_dir: Path, session_key: str, capsys: pytest.CaptureFixture[str]
) -> list[tuple[str, str]]:
    """``turngate sessions export KEY`` on ``state_dir``, as (role, text) pairs."""
    capsys.readouterr()
    assert main(["sessions", "--state-dir", str(state_dir), "export", session_key]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(entry["role"], entry["text"]) for entry in entries]
