"""The CLI tests' own session check: whatever the commands were made to do, none of them
printed a traceback (the equivalent of ``grep -r Traceback`` over their captured stderr)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.support import STDERR


@pytest.fixture(scope="package", autouse=True)
def no_traceback_in_any_command_s_stderr() -> Iterator[None]:
    """Fails (at the end of tests/cli) if any command run there printed a traceback."""
    yield
    tracebacks = [line for line in STDERR if "Traceback" in line]
    assert not tracebacks, f"{len(tracebacks)} tracebacks in the commands' stderr"
