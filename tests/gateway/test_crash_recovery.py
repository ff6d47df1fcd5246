"""A turn acknowledged before the gateway process is killed still gets its reply (I7).

The scenario runs the real ``turngate gateway`` command as a child process: five turns are
acknowledged (``"wait": false``) on two sessions, the process is killed with SIGKILL while the
first turn of each session runs, and a new process starts on the same state directory. The
client then resends each request with its ``idempotencyKey`` and waits for the outcome; once
the second process has stopped, each session's transcript is read with
``turngate sessions export``.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.gateway.process import gateway_process
from turngate.cli import main

CALL_TIMEOUT_S = 10.0
ECHO_LATENCY_BEFORE_CRASH_MS = 2000
"""Long enough that the first turns are still running when the process is killed."""


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
    transcripts: dict[str, list[tuple[str, str, str]]]
    """By session: its whole transcript once the restarted gateway stopped, as
    ``(role, text, runId)``, read with ``turngate sessions export``."""


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


def exported_transcript(state_dir: Path, session_key: str) -> list[tuple[str, str, str]]:
    """``turngate sessions export SESSION_KEY``, as a user reads a session afterwards."""
    output = state_dir / f"{session_key.replace(':', '_')}.jsonl"
    command = ["sessions", "export", session_key, "--state-dir", str(state_dir), "-o", str(output)]
    assert main(command) == 0
    entries = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    return [(entry["role"], entry["text"], entry["runId"]) for entry in entries]


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory) -> Recovery:
    """Acknowledge five turns, kill the gateway mid-run, restart it, resend every request."""
    state_dir = tmp_path_factory.mktemp("crash")
    with (
        gateway_process(state_dir, echo_latency_ms=ECHO_LATENCY_BEFORE_CRASH_MS) as (url, first),
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
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
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
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
    transcripts = {
        session_key: exported_transcript(state_dir, session_key)
        for session_key in dict.fromkeys(session_key for _, session_key in SENDS)
    }
    return Recovery(acked, resent, turns, second.stderr_lines, transcripts)


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
        assert (body["status"], body["runId"], body["sessionKey"]) == (
            "ok",
            a.idempotency_key,
            a.session_key,
        )
        assert body["reply"] == f"echo: {a.message}"
        assert "mergedInto" not in body
        assert recovery.turns[a.idempotency_key]["status"] == "ok"


def test_turn_running_at_the_crash_replies_as_if_it_had_not_been_interrupted(
    recovery: Recovery,
) -> None:
    """The rerun sees the conversation as it was before the turn: its message once."""
    replies = {key: body.get("reply") for key, (_, body) in recovery.resent.items()}

    assert replies == {a.idempotency_key: f"echo: {a.message}" for a in recovery.acked}


def test_turns_running_at_the_crash_count_one_more_attempt(recovery: Recovery) -> None:
    attempts = {
        a.idempotency_key: recovery.turns[a.idempotency_key]["attempts"] for a in recovery.acked
    }

    assert attempts == {
        "crash-a-1": 1,
        "crash-b-1": 1,
        "crash-a-2": 0,
        "crash-b-2": 0,
        "crash-a-3": 0,
    }


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


def test_each_session_transcript_holds_every_acknowledged_exchange_once_in_order(
    recovery: Recovery,
) -> None:
    """Nothing of the killed run survives, nothing is written twice, nothing else is there."""
    expected = {
        session_key: [
            entry
            for a in recovery.acked
            if a.session_key == session_key
            for entry in (
                ("user", a.message, a.idempotency_key),
                ("assistant", f"echo: {a.message}", a.idempotency_key),
            )
        ]
        for session_key in recovery.transcripts
    }

    assert recovery.transcripts == expected


def test_restart_logs_the_open_turns_it_recovered(recovery: Recovery) -> None:
    recovered = [line for line in recovery.restart_stderr if "recovered 5 open turns" in line]

    assert recovered, recovery.restart_stderr
    assert "WARNING" in recovered[0]


def test_gateway_accepts_connections_once_it_prints_listening(tmp_path: Path) -> None:
    """A client that connects the moment it reads the ``listening on`` line is not refused;
    it waits in the backlog until startup is complete, then gets its answer."""
    with gateway_process(tmp_path, echo_latency_ms=0) as (url, _):
        with socket.create_connection(
            (httpx2.URL(url).host, httpx2.URL(url).port or 80), timeout=CALL_TIMEOUT_S
        ):
            pass
        response = httpx2.get(f"{url}/health", timeout=CALL_TIMEOUT_S)

    assert response.status_code == 200
    assert response.json()["ok"] is True
