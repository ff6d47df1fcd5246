"""A turn acknowledged before the gateway process is killed still gets its reply (I7).

The scenario runs the real ``turngate gateway`` command as a child process: five turns are
acknowledged (``"wait": false``) on two sessions, the process is killed with SIGKILL while the
first turn of each session runs, and a new process starts on the same state directory. The
client then resends each request with its ``idempotencyKey`` and waits for the outcome.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

STARTUP_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 10.0
ECHO_LATENCY_BEFORE_CRASH_MS = 2000
"""Long enough that the first turns are still running when the process is killed."""
LISTENING = re.compile(r"^turngate listening on (http://\S+) ")


def is_listening_line(line: str) -> bool:
    return LISTENING.match(line) is not None


class GatewayProcess:
    """A ``turngate gateway`` child process and the lines it prints, read as they come."""

    def __init__(self, state_dir: Path, *, echo_latency_ms: int, log_level: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNGATE_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "turngate",
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                "--echo-latency-ms",
                str(echo_latency_ms),
                "--log-level",
                log_level,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr_lines: list[str] = []
        """Every line written to stderr so far (complete once :meth:`stop` returned)."""
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            if name == "stderr":
                self.stderr_lines.append(line.rstrip("\n"))
            self._lines.put((name, line.rstrip("\n")))
        self._lines.put((name, None))

    def wait_for_line(self, stream: str, matches: Callable[[str], bool], deadline: float) -> str:
        """The next line of ``stream`` that ``matches``; fails at ``deadline`` or at EOF."""
        while True:
            try:
                name, line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(self._why(f"no matching {stream} line in time")) from None
            if name == stream and line is None:
                raise AssertionError(self._why(f"{stream} closed (exit {self.proc.poll()})"))
            if name == stream and line is not None and matches(line):
                return line

    def _why(self, what: str) -> str:
        return f"gateway pid {self.proc.pid}: {what}; stderr so far: {self.stderr_lines[-20:]}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(EXIT_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; then release the pipes."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(EXIT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(EXIT_TIMEOUT_S)
        finally:
            for reader in self._readers:
                reader.join(EXIT_TIMEOUT_S)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@contextmanager
def gateway_process(
    state_dir: Path, *, echo_latency_ms: int
) -> Iterator[tuple[str, GatewayProcess]]:
    """A gateway child process; yields its URL, once it printed that it listens, and the
    process. It is always stopped (or killed) on the way out."""
    process = GatewayProcess(state_dir, echo_latency_ms=echo_latency_ms, log_level="warning")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        line = process.wait_for_line("stdout", is_listening_line, deadline)
        match = LISTENING.match(line)
        assert match is not None
        yield match[1], process
    finally:
        process.stop()


@dataclass(frozen=True, slots=True)
class Acked:
    """A turn the first process acknowledged before it was killed."""

    idempotency_key: str
    session_key: str
    message: str
    status_at_crash: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the client saw after the restart."""

    acked: list[Acked]
    resent: dict[str, tuple[int, dict[str, Any]]]
    """By idempotency key: status code and body of the resent request (``"wait": true``)."""
    turns: dict[str, dict[str, Any]]
    """By idempotency key: ``GET /turns/{runId}`` after the resend."""
    restart_stderr: list[str]


SENDS = [
    ("crash-a-1", "agent:test:crash-a"),
    ("crash-b-1", "agent:test:crash-b"),
    ("crash-a-2", "agent:test:crash-a"),
    ("crash-b-2", "agent:test:crash-b"),
    ("crash-a-3", "agent:test:crash-a"),
]
"""(idempotency key, session) in acceptance order: 3 turns on one session, 2 on another."""


def message_of(idempotency_key: str) -> str:
    return f"message {idempotency_key}"


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory) -> Recovery:
    """Acknowledge five turns, kill the gateway mid-run, restart it, resend every request."""
    state_dir = tmp_path_factory.mktemp("crash")
    with (
        gateway_process(state_dir, echo_latency_ms=ECHO_LATENCY_BEFORE_CRASH_MS) as (url, first),
        httpx.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        for key, session_key in SENDS:
            response = client.post(
                "/chat.send",
                json={
                    "sessionKey": session_key,
                    "message": message_of(key),
                    "idempotencyKey": key,
                    "wait": False,
                },
            )
            assert response.status_code == 202, response.text
            assert response.json() == {
                "runId": key,
                "sessionKey": session_key,
                "status": "accepted",
            }
        status_at_crash = {key: client.get(f"/turns/{key}").json()["status"] for key, _ in SENDS}
        first.kill()
    acked = [
        Acked(key, session_key, message_of(key), status_at_crash[key]) for key, session_key in SENDS
    ]

    resent: dict[str, tuple[int, dict[str, Any]]] = {}
    turns: dict[str, dict[str, Any]] = {}
    with (
        gateway_process(state_dir, echo_latency_ms=0) as (url, second),
        httpx.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        for a in acked:
            response = client.post(
                "/chat.send",
                json={
                    "sessionKey": a.session_key,
                    "message": a.message,
                    "idempotencyKey": a.idempotency_key,
                },
            )
            resent[a.idempotency_key] = (response.status_code, response.json())
        for a in acked:
            turns[a.idempotency_key] = client.get(f"/turns/{a.idempotency_key}").json()
    return Recovery(acked, resent, turns, second.stderr_lines)


def test_crash_scenario_kills_the_gateway_while_the_first_turns_run(recovery: Recovery) -> None:
    """The scenario's own precondition: one turn per session was running at the kill."""
    running = [a.idempotency_key for a in recovery.acked if a.status_at_crash == "running"]
    queued = [a.idempotency_key for a in recovery.acked if a.status_at_crash == "queued"]

    assert running == ["crash-a-1", "crash-b-1"]
    assert queued == ["crash-a-2", "crash-b-2", "crash-a-3"]


def test_every_turn_acknowledged_before_a_crash_replies_after_restart(recovery: Recovery) -> None:
    for a in recovery.acked:
        status_code, body = recovery.resent[a.idempotency_key]
        assert status_code == 200, body
        assert body["status"] == "ok"
        assert body["runId"] == a.idempotency_key
        assert a.message in body["reply"]


def test_turn_running_at_the_crash_replies_as_if_it_had_not_been_interrupted(
    recovery: Recovery,
) -> None:
    """The rerun sees the conversation as it was before the turn: its message once."""
    replies = {key: body.get("reply") for key, (_, body) in recovery.resent.items()}

    assert replies == {a.idempotency_key: f"echo: {a.message}" for a in recovery.acked}


def test_turns_running_at_the_crash_count_one_more_attempt(recovery: Recovery) -> None:
    for a in recovery.acked:
        attempts = recovery.turns[a.idempotency_key]["attempts"]
        if a.status_at_crash == "running":
            assert attempts >= 1, a
        else:
            assert attempts == 0, a


def test_resumed_turns_start_in_their_acceptance_order(recovery: Recovery) -> None:
    for session_key in {a.session_key for a in recovery.acked}:
        records = sorted(
            (
                recovery.turns[a.idempotency_key]
                for a in recovery.acked
                if a.session_key == session_key
            ),
            key=lambda record: record["seq"],
        )
        epochs = [record["epoch"] for record in records]
        assert epochs == sorted(set(epochs)), f"{session_key}: epochs by seq {epochs}"


def test_restart_logs_the_open_turns_it_recovered(recovery: Recovery) -> None:
    recovered = [line for line in recovery.restart_stderr if "recovered 5 open turns" in line]

    assert recovered, recovery.restart_stderr
    assert "WARNING" in recovered[0]


def test_gateway_accepts_connections_once_it_prints_listening(tmp_path: Path) -> None:
    """A client that connects the moment it reads the ``listening on`` line is not refused;
    it waits in the backlog until startup is complete, then gets its answer."""
    with gateway_process(tmp_path, echo_latency_ms=0) as (url, _):
        with socket.create_connection(
            (httpx.URL(url).host, httpx.URL(url).port or 80), timeout=CALL_TIMEOUT_S
        ):
            pass
        response = httpx.get(f"{url}/health", timeout=CALL_TIMEOUT_S)

    assert response.status_code == 200
    assert response.json()["ok"] is True
