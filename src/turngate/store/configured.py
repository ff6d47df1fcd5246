"""The store a gateway's configuration names: the one place the gateway, the command line and
the simulator open theirs from.

By default SQLite, in the state directory (:data:`DB_FILE`; the state directory's lock,
:class:`~turngate.store.statedir.StateDirLock`, keeps a second gateway off it); with
``store = "postgresql://..."``, PostgreSQL (:class:`~turngate.store.postgres.PostgresStore`),
which several gateway processes may share, each under its own name (``instance``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from turngate.config import GatewayConfig
from turngate.store.base import Store
from turngate.store.sqlite import SqliteStore
from turngate.store.sqlite_checkpoint import CheckpointMode

DB_FILE = "turngate.db"
"""The SQLite database's file in the state directory."""


def sqlite_path(config: GatewayConfig) -> Path:
    """Where the configured SQLite database is."""
    return config.state_path / DB_FILE


def open_store(
    config: GatewayConfig,
    *,
    readonly: bool = False,
    connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
    checkpoints: CheckpointMode = "inline",
) -> Store:
    """The configured store, not yet opened (:meth:`Store.open`). ``readonly`` for commands
    that only read it (SQLite's file is then opened read-only); ``connection_factory`` is
    SQLite's (the simulator's fails its disk); ``checkpoints`` where SQLite's WAL checkpoints
    run (a gateway's in a worker thread, see :mod:`~turngate.store.sqlite_checkpoint`)."""
    if config.store is not None:
        from turngate.store.postgres import PostgresStore  # psycopg only when configured

        return PostgresStore(config.store, readonly=readonly, instance=config.process_name)
    return SqliteStore(
        sqlite_path(config),
        durability=config.sqlite_durability,
        readonly=readonly,
        connection_factory=connection_factory,
        checkpoints=checkpoints,
    )


def describe_store(config: GatewayConfig) -> str:
    """The store as the start-up log names it (a URL without its password)."""
    if config.store is not None:
        from turngate.store.postgres import safe_url

        return f"PostgreSQL {safe_url(config.store)}"
    return f"{DB_FILE}, durability {config.sqlite_durability}"
