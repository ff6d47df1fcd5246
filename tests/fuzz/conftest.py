"""The fuzz's session summary, and the counts ``make fuzz`` requires.

``TURNGATE_FUZZ_MIN_HTTP`` and ``TURNGATE_FUZZ_MIN_WS``, when set, are the least numbers of
HTTP requests and WebSocket frames the session must have sent; a run that sent fewer fails.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz.faults import TALLY

SHORT_RUN: list[str] = []


def _minimum(name: str) -> int:
    return int(os.environ.get(name, "0"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not TALLY.used:
        return
    wanted = {
        "HTTP requests": (_minimum("TURNGATE_FUZZ_MIN_HTTP"), TALLY.http_requests),
        "WS frames": (_minimum("TURNGATE_FUZZ_MIN_WS"), TALLY.ws_frames),
    }
    for what, (minimum, sent) in wanted.items():
        if sent < minimum:
            SHORT_RUN.append(f"fuzz: only {sent} {what} sent, {minimum} required")
    if SHORT_RUN and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.used:
        return
    terminalreporter.write_line(TALLY.summary())
    for line in TALLY.distinct_lines():
        terminalreporter.write_line(line)
    for line in SHORT_RUN:
        terminalreporter.write_line(line, red=True)
