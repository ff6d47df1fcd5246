"""A real ``turngate gateway`` command as a child process, for tests that need a whole
process: signals, crashes, two gateways on one state directory, start-up errors."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

OUTPUT: list[str] = []
"""Every line every gateway child process printed in this test session (for the check that
no credential ever reaches a log; see tests/conftest.py). Appends are atomic under the GIL."""

STARTUP_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0
LISTENING = re.compile(r"^turngate listening on (http://\S+) ")


def is_listening_line(line: str) -> bool:
    return LISTENING.match(line) is not None


def gateway_command(state_dir: Path, *args: str, port: int = 0) -> list[str]:
    """``turngate gateway`` on 127.0.0.1 with ``state_dir`` and ``args``."""
    return [
        sys.executable,
        "-m",
        "turngate",
        "gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        *args,
    ]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any ``TURNGATE_*`` of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNGATE_")}
    env.update(extra or {})
    return env


class GatewayProcess:
    """A ``turngate gateway`` child process and the lines it prints, read as they come."""

    def __init__(
        self,
        state_dir: Path,
        *,
        echo_latency_ms: int,
        log_level: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        command = gateway_command(
            state_dir,
            "--echo-latency-ms",
            str(echo_latency_ms),
            "--log-level",
            log_level,
            *args,
            port=port,
        )
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(env),
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
            OUTPUT.append(line)
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

    def url(self) -> str:
        """The base URL, once the process says it listens."""
        line = self.wait_for_line("stdout", is_listening_line, time.monotonic() + STARTUP_TIMEOUT_S)
        match = LISTENING.match(line)
        assert match is not None
        return match[1]

    def _why(self, what: str) -> str:
        return f"gateway pid {self.proc.pid}: {what}; stderr so far: {self.stderr_lines[-20:]}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(EXIT_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM, as a service manager sends it; does not wait."""
        os.kill(self.proc.pid, signal.SIGTERM)

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
    state_dir: Path,
    *,
    echo_latency_ms: int = 0,
    log_level: str = "warning",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, GatewayProcess]]:
    """A gateway child process; yields its URL, once it printed that it listens, and the
    process. It is always stopped (or killed) on the way out."""
    process = GatewayProcess(
        state_dir, echo_latency_ms=echo_latency_ms, log_level=log_level, args=args, env=env
    )
    try:
        yield process.url(), process
    finally:
        process.stop()
