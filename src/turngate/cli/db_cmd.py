"""``turngate db``: the store's schema, created or brought up to date without starting a
gateway (a deploy step before the new gateway processes start)."""

from __future__ import annotations

import argparse
import asyncio

from turngate.cli.common import ExitCode, flag, print_help_of, state_options
from turngate.config import load_config
from turngate.store.base import Store
from turngate.store.configured import describe_store, open_store

DESCRIPTION = """\
The configured store's schema (store = "postgresql://..." in the TOML file, or TURNGATE_STORE;
SQLite in the state directory otherwise). A gateway creates and migrates the schema itself
when it starts; 'db upgrade' does only that, so that a deploy can migrate once, before the new
gateway processes start.
"""
EPILOG = """\
examples:
  turngate db upgrade
  TURNGATE_STORE=postgresql://turngate@db:5432/turngate turngate db upgrade
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``db`` and its subcommand to ``commands``."""
    group = commands.add_parser(
        "db",
        parents=[state_options()],
        help="create or migrate the store's schema",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    group.set_defaults(func=print_help_of(group))
    sub = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    upgrade = sub.add_parser(
        "upgrade",
        parents=[state_options()],
        help="create the schema, or bring it to this version",
        description="Create the store's schema, or migrate it to this turngate's version,"
        " keeping its data. Safe to run while gateways use the store, and more than once.",
        epilog="examples:\n  turngate db upgrade\n",
    )
    upgrade.set_defaults(func=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> ExitCode:
    """``turngate db upgrade``."""
    config = load_config(args.config, overrides={"state_dir": flag(args, "state_dir")})

    async def upgrade() -> None:
        store: Store
        if config.store is not None:
            from turngate.store.postgres import PostgresStore  # psycopg only when configured

            # Beside running gateways: migrate without taking the store's lock.
            store = PostgresStore(config.store, exclusive=False)
        else:
            store = open_store(config)
        await store.open()  # opening for writing creates or migrates the schema
        await store.close()

    asyncio.run(upgrade())
    print(f"{describe_store(config)}: schema up to date")
    return ExitCode.OK
