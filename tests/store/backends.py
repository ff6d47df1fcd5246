"""The store backends the contract suite (``test_store_contract.py``) runs against, each as
an async context manager that yields an opened, empty store. A backend added to
:data:`BACKENDS` runs the whole specification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from turngate.config import GatewayConfig
from turngate.store.base import Store
from turngate.store.configured import open_store


@asynccontextmanager
async def opened(config: GatewayConfig) -> AsyncIterator[Store]:
    """The store ``config`` names, open for the block."""
    store = open_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def sqlite_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """The default store: SQLite in a fresh state directory."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return opened(GatewayConfig(state_dir=tmp_path))


def postgres_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Store]:
    """PostgreSQL: a database of its own on the session's server (``tests/conftest.py``)."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    url: str = request.getfixturevalue("postgres_url")
    return opened(GatewayConfig(state_dir=tmp_path, store=url))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Store]]] = {
    "sqlite": sqlite_store,
    "postgresql": postgres_store,
}
