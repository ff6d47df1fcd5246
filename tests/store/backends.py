"""The store backends the contract suite (``test_store_contract.py``) runs against, each as
an async context manager that yields an opened, empty store. A backend added to
:data:`BACKENDS` runs the whole specification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from turngate.config import GatewayConfig
from turngate.store.base import Store
from turngate.store.configured import open_store


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """The default store: SQLite in a fresh state directory."""
    store = open_store(GatewayConfig(state_dir=tmp_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "sqlite": sqlite_store,
}
