"""The store tests' fixture: an opened, empty store of each backend in
``tests/store/backends.py``, so that a test written against the ``Store`` protocol specifies
every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.store.backends import BACKENDS
from turngate.store.base import Store


@pytest_asyncio.fixture(params=sorted(BACKENDS))
async def backend_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """An opened, empty store of each backend."""
    async with BACKENDS[request.param](request) as opened:
        yield opened
