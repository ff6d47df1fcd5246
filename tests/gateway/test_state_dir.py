"""One gateway per state directory (issue 9, fault 2), and a state directory the gateway
cannot use is one line, not a traceback (fault 8).

Two ``make run`` in two terminals share ``~/.turngate``: the second must refuse to start and
say who holds the directory, while the first one goes on serving and read-only commands keep
working beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2

from tests.gateway.process import EXIT_TIMEOUT_S, clean_env, gateway_command, gateway_process
from turngate.store.statedir import LOCK_FILE

CALL_TIMEOUT_S = 10.0


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """A turngate command to its end (a gateway that refuses to start ends at once)."""
    return subprocess.run(
        [sys.executable, "-m", "turngate", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def run_gateway(state_dir: Path, port: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command(state_dir, port=port),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listening" not in result.stdout
    return lines[0]


def test_a_second_gateway_on_a_state_dir_in_use_refuses_naming_the_holder(tmp_path: Path) -> None:
    with (
        gateway_process(tmp_path) as (url, first),
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        sent = client.post("/chat.send", json={"sessionKey": "agent:main:a", "message": "one"})
        assert sent.status_code == 200

        line = assert_one_line_refusal(run_gateway(tmp_path))
        assert "in use by another turngate gateway" in line
        assert f"pid {first.proc.pid}" in line
        assert url in line
        assert "state_dir_in_use" in line
        # Even when it asks for the very same port, it is told about the state directory.
        port = int(url.rsplit(":", 1)[1])
        assert "in use by another turngate gateway" in assert_one_line_refusal(
            run_gateway(tmp_path, port)
        )

        # The first gateway was not disturbed.
        again = client.post("/chat.send", json={"sessionKey": "agent:main:a", "message": "two"})
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "ok"
        assert client.get("/health").json()["status"] == "live"

        # Read-only commands work beside it.
        listed = run_command("sessions", "--state-dir", str(tmp_path), "list", "--json")
        assert listed.returncode == 0, listed.stderr
        keys = [json.loads(row)["sessionKey"] for row in listed.stdout.splitlines()]
        assert keys == ["agent:main:a"]
        shown = run_command("sessions", "--state-dir", str(tmp_path), "show", "agent:main:a")
        assert shown.returncode == 0, shown.stderr
        assert "[user] two" in shown.stdout


def test_a_killed_gateway_leaves_no_stale_lock(tmp_path: Path) -> None:
    with gateway_process(tmp_path) as (_, first):
        first.kill()
    with (
        gateway_process(tmp_path) as (url, _),
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as client,
    ):
        assert client.get("/health").status_code == 200


def test_a_state_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    line = assert_one_line_refusal(run_gateway(blocker / "state"))
    assert str(blocker / "state") in line
    assert "state_dir_unusable" in line


def test_a_state_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    # Root may write anywhere, so the obstacle is one no permission lifts.
    (tmp_path / LOCK_FILE).mkdir()
    line = assert_one_line_refusal(run_gateway(tmp_path))
    assert str(tmp_path) in line
    assert "state_dir_unusable" in line


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "turngate.db").mkdir()
    line = assert_one_line_refusal(run_gateway(tmp_path))
    assert "turngate.db" in line
    assert "storage_unavailable" in line
