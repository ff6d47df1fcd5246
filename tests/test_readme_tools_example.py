"""The README's "An agent with tools (MCP)" example, run as the README says: its
``turngate.toml`` (read from README.md, only the stand-in model's port and the paths made
absolute), ``examples/demo_model.py`` and a ``turngate gateway`` as child processes on
ephemeral 127.0.0.1 ports, the gateway starting ``examples/mcp_notes_server.py`` over stdio.

The chat goes through ``/chat.send`` (what ``turngate send`` calls), with the README's own
messages; the replies, the log line it shows and the transcript ``turngate sessions show``
prints must be the README's (times and call ids aside). So the README cannot drift from what
the code does.

Every wait is bounded: for a line a child prints, or for an HTTP answer.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest

from tests.gateway.process import GatewayProcess, clean_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADING = "### An agent with tools (MCP)"
DEMO_MODEL = ROOT / "examples" / "demo_model.py"
NOTES_SERVER = ROOT / "examples" / "mcp_notes_server.py"
README_MODEL_URL = "http://127.0.0.1:18790/v1"
SESSION = "agent:main:main"
WAIT_S = 30.0
"""The longest any one wait takes (the gateway's start, the notes server's import of the SDK,
a turn): far above what they take, for a busy machine."""
STOP_S = 10.0
DEMO_LISTENING = re.compile(r"^demo model listening on (http://127\.0\.0\.1:\d+/v1)$")
SEND = re.compile(r'^\$ \.venv/bin/turngate send "(.*)"$')
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
CALL_ID = re.compile(r"\bcall_[0-9a-f]+\b")


# -- what the README says -----------------------------------------------------------------------


def section() -> str:
    """The README's section on agents with tools, up to the next heading of its level or
    above."""
    text = README.read_text(encoding="utf-8")
    assert text.count(HEADING) == 1, f"README.md: one {HEADING!r} section expected"
    body = text[text.index(HEADING) + len(HEADING) :]
    end = re.search(r"^#{2,3} ", body, re.MULTILINE)
    return body if end is None else body[: end.start()]


def blocks(kind: str) -> list[str]:
    """The section's fenced blocks of ``kind`` (``toml``, ``text``), in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", section(), re.MULTILINE | re.DOTALL)


def readme_toml() -> str:
    [toml] = blocks("toml")
    return toml


def readme_log_line() -> str:
    """The log line the README says the gateway prints once the notes tools are offered."""
    [line] = [b.strip() for b in blocks("text") if "offers" in b and "\n" not in b.strip()]
    return line


def readme_chat() -> tuple[list[tuple[str, str]], list[str]]:
    """The README's chat: each message sent with its reply, and the transcript lines
    ``sessions show`` printed."""
    [chat] = [b for b in blocks("text") if SEND.match(b.splitlines()[0])]
    lines = chat.splitlines()
    sends = [(m[1], lines[i + 1]) for i, line in enumerate(lines) if (m := SEND.match(line))]
    transcript = lines[lines.index("transcript (times UTC):") + 1 :]
    return sends, transcript


def substituted(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced by its value; each key must occur exactly once."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the README's turngate.toml should hold {old!r} once"
        text = text.replace(old, new)
    return text


def normalized(lines: list[str]) -> list[str]:
    """Transcript lines without what differs from run to run: times and tool call ids."""
    return [CALL_ID.sub("call_ID", TIME.sub("TIME", line)) for line in lines]


# -- the processes ------------------------------------------------------------------------------


class DemoModel:
    """``examples/demo_model.py`` on an ephemeral port, as a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO_MODEL), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.output.append(line.rstrip("\n"))
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def url(self) -> str:
        """Its base URL, from the first line it prints."""
        try:
            line = self._lines.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"demo model: silent for {WAIT_S}s") from None
        match = DEMO_LISTENING.match(line or "")
        assert match, f"demo model: {self.output} (exit {self.proc.poll()})"
        return match[1]

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_S)
        finally:
            self._reader.join(STOP_S)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def demo_model() -> Iterator[str]:
    """The stand-in model's base URL."""
    model = DemoModel()
    try:
        yield model.url()
    finally:
        model.stop()


def wait_for_stderr(gateway: GatewayProcess, line_end: str) -> None:
    """Return once the gateway printed a stderr line ending with ``line_end``."""
    if any(line.endswith(line_end) for line in gateway.stderr_lines):
        return  # printed already (maybe before its "listening" line)
    deadline = time.monotonic() + WAIT_S
    gateway.wait_for_line("stderr", lambda line: line.endswith(line_end), deadline)


def sessions_show(state_dir: Path, *options: str) -> str:
    """``turngate sessions show`` of the README's session, as a user runs it."""
    command = [sys.executable, "-m", "turngate", "sessions", "show", SESSION, *options]
    done = subprocess.run(
        [*command, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def brief(entry: dict[str, Any]) -> tuple[str, Any]:
    """A transcript entry of ``sessions show --json`` in brief."""
    if entry["role"] == "toolCalls":
        return ("toolCalls", [(c["name"], json.loads(c["arguments"])) for c in entry["toolCalls"]])
    if entry["role"] == "toolResult":
        return ("toolResult", (entry["toolName"], entry["text"], entry["isError"]))
    return (entry["role"], entry["text"])


# -- the example --------------------------------------------------------------------------------


def test_the_readme_agent_calls_its_notes_tool_and_quotes_the_result(
    tmp_path: Path, demo_model: str
) -> None:
    notes = tmp_path / "notes.json"
    state_dir = tmp_path / "state"
    config = tmp_path / "turngate.toml"
    config.write_text(
        substituted(
            readme_toml(),
            {
                README_MODEL_URL: demo_model,
                '".venv/bin/python"': json.dumps(sys.executable),
                '"examples/mcp_notes_server.py"': json.dumps(str(NOTES_SERVER)),
                '"notes.json"': json.dumps(str(notes)),
            },
        ),
        encoding="utf-8",
    )
    sends, readme_transcript = readme_chat()
    assert [message for message, _ in sends] == ["note buy milk", "what are my notes?"]

    gateway = GatewayProcess(
        state_dir, echo_latency_ms=0, log_level="info", args=("--config", str(config))
    )
    try:
        url = gateway.url()
        # The README's log line: the notes tools are offered (before it, a turn has none).
        wait_for_stderr(gateway, readme_log_line())
        with httpx2.Client(base_url=url, timeout=WAIT_S) as http:
            replies = []
            for message, _ in sends:
                answer = http.post("/chat.send", json={"sessionKey": SESSION, "message": message})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["status"] == "ok", body
                replies.append(body["reply"])
            health = http.get("/health").json()
    finally:
        gateway.stop()

    # The replies are the README's, and each quotes its tool's result.
    assert replies == [reply for _, reply in sends]
    added, listed = replies
    assert "Saved note 1: buy milk" in added
    assert "1. buy milk" in listed

    # The transcript has each call, with its arguments, and its result under the call's id.
    shown = json.loads(sessions_show(state_dir, "--json"))
    transcript = shown["transcript"]
    assert [brief(entry) for entry in transcript] == [
        ("user", "note buy milk"),
        ("toolCalls", [("notes__add_note", {"text": "buy milk"})]),
        ("toolResult", ("notes__add_note", "Saved note 1: buy milk", False)),
        ("assistant", added),
        ("user", "what are my notes?"),
        ("toolCalls", [("notes__list_notes", {})]),
        ("toolResult", ("notes__list_notes", "1. buy milk", False)),
        ("assistant", listed),
    ]
    for call, result in ((transcript[1], transcript[2]), (transcript[5], transcript[6])):
        assert result["toolCallId"] == call["toolCalls"][0]["id"]
    # ... and sessions show prints it as the README shows it.
    text = sessions_show(state_dir).splitlines()
    printed = text[text.index("transcript (times UTC):") + 1 :]
    assert normalized(printed) == normalized(readme_transcript)

    # The tool did its work: the note is in the file the README's config names.
    saved = json.loads(notes.read_text(encoding="utf-8"))
    assert [note["text"] for note in saved] == ["buy milk"]

    # /health: the server, its tools as offered (delete_note denied by the README's config).
    [server] = health["toolServers"]
    assert (server["name"], server["state"], server["tools"]) == ("main/notes", "ready", 3)
