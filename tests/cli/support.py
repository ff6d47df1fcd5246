"""Running the ``turngate`` command as a user does: a child process, a clean environment."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.gateway.process import OUTPUT, clean_env

COMMAND_TIMEOUT_S = 30.0
"""The deadline of one command (each one here takes well under a second or two)."""
STDERR: list[str] = []
"""Every line any command run here wrote to stderr (tests/cli/conftest.py reads it)."""


@dataclass(frozen=True, slots=True)
class Run:
    """What one command did."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.err.splitlines() if line.strip()]

    def one_error_line(self) -> str:
        """stderr's only line (asserting there is exactly one, and no traceback)."""
        assert "Traceback" not in self.err, self.err
        assert len(self.err_lines) == 1, self.err
        return self.err_lines[0]


def turngate(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Run:
    """``turngate ARGS`` in a child process, without the caller's ``TURNGATE_*`` variables.

    Its output joins the lines the session-wide credential check reads (tests/conftest.py):
    no command may ever print a token."""
    done = subprocess.run(
        [sys.executable, "-m", "turngate", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=cwd,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    OUTPUT.extend(done.stdout.splitlines())
    OUTPUT.extend(done.stderr.splitlines())
    STDERR.extend(done.stderr.splitlines())
    return Run(done.returncode, done.stdout, done.stderr)
