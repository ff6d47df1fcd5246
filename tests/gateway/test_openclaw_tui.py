"""OpenClaw's own TUI, unchanged, against turngate: ``openclaw tui --url ... --token ...
--session ...`` in a pseudo-terminal, read off the screen as a person would. ``make test``
installs OpenClaw (scripts/install-openclaw-cli.sh).

The TUI counts itself connected only once its start-up calls are answered (the first,
``sessions.subscribe``, is fatal when refused); then a typed message goes out as
``chat.send`` and its reply is drawn from the run's ``chat`` events, and another client's
message to the session is drawn from its ``session.message`` event.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.gateway.test_openclaw_cli import CLI, NODE
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import running_gateway

SCREEN_WAIT_S = 60.0
ANSI = re.compile(
    r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]"
)
CONNECTED = re.compile(r"(?<!dis)connected \| idle")
BROKEN = (
    "subscription failed",
    "subscribe failed",
    "message not sent",
    "run error",
    "description failed",
    "unknown method",
)
"""What the TUI writes when a call of its own fails: none may appear."""

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and CLI.exists()),
    reason="OpenClaw's CLI is not installed: make test installs it"
    " (scripts/install-openclaw-cli.sh)",
)


class Screen:
    """The TUI's output so far, colour and cursor codes removed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def wait_for(self, pattern: re.Pattern[str] | str, timeout_s: float = SCREEN_WAIT_S) -> None:
        """Read until ``pattern`` is on the screen; fail with what is there after
        ``timeout_s``."""
        found = pattern.search if isinstance(pattern, re.Pattern) else (lambda t: pattern in t)
        deadline = time.monotonic() + timeout_s
        while not found(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(
                    f"not on the TUI's screen after {timeout_s}s: {pattern!r}\n{self.tail()}"
                )
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the TUI exited
                    pytest.fail(f"the TUI exited before {pattern!r} was shown\n{self.tail()}")
                self.text += ANSI.sub("", chunk.decode("utf-8", "replace"))

    def type(self, text: str) -> None:
        """Type ``text`` and press Enter."""
        os.write(self.fd, text.encode() + b"\r")

    def tail(self) -> str:
        return self.text[-3000:]


@contextmanager
def tui(url: str, home: Path, session: str) -> Iterator[Screen]:
    """``openclaw tui`` on a 120x40 pseudo-terminal, stopped (its process group) on exit."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "40",
    }
    ws_url = url.replace("http://", "ws://")
    command = [str(NODE), str(CLI), "tui", "--url", ws_url, "--token", TOKEN, "--session", session]
    process = subprocess.Popen(
        command,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    try:
        yield Screen(leader)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(leader)


def test_the_tui_connects_and_a_typed_message_shows_its_reply(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with (
        running_gateway(tmp_path / "state", token=TOKEN, echo_latency_ms=50) as url,
        tui(url, home, "agent:main:tui") as screen,
    ):
        screen.wait_for(CONNECTED)
        screen.type("hello from the tui")
        screen.wait_for("echo: hello from the tui")
        screen.type("and a second one")
        screen.wait_for("echo: and a second one")
        # Another client's message to the session shows up live (``session.message``).
        answer = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:main:tui", "message": "sent by another client"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=SCREEN_WAIT_S,
        )
        assert answer.json()["reply"] == "echo: sent by another client"
        screen.wait_for("sent by another client")
        assert not [broken for broken in BROKEN if broken in screen.text], screen.tail()
