"""The fake model server, started for each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers.fakes import FakeModelServer, running


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    """A scripted OpenAI/Anthropic fake on an ephemeral loopback port."""
    with running(FakeModelServer()) as fake:
        yield fake
