"""The ``turngate`` command: a thin ``main`` over one module per command family.

Each command module has ``register(commands)``, which adds its subcommand(s) with
``set_defaults(func=...)``; ``func`` takes the parsed and resolved arguments
(:func:`turngate.cli.common.resolve`) and returns the exit code. Errors a user can cause are
raised as :class:`~turngate.errors.TurngateError` and printed here as one line, with the exit
code of their class (:class:`turngate.cli.common.ExitCode`), the same for every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias, cast

from turngate import __version__
from turngate.cli import (
    channels_cmd,
    config_cmd,
    cron_cmd,
    db_cmd,
    doctor_cmd,
    gateway_cmd,
    sessions_cmd,
    sim_cmd,
    status_cmd,
    turn_cmds,
)
from turngate.cli.common import CliError, CliParser, ExitCode, UsageError, exit_code_of, resolve
from turngate.errors import TurngateError

if TYPE_CHECKING:  # argparse's action class is generic for type checkers only
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

COMMANDS: tuple[Callable[[SubParsers], None], ...] = (
    gateway_cmd.register,
    turn_cmds.register,
    sessions_cmd.register,
    cron_cmd.register,
    channels_cmd.register,
    status_cmd.register,
    config_cmd.register,
    db_cmd.register,
    doctor_cmd.register,
    sim_cmd.register,
)
"""Every command family, in the order ``turngate --help`` lists them."""

INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells expect."""

DESCRIPTION = """\
turngate: a self-hosted gateway between chat clients and LLM agents. One turn per session at a
time, every turn accounted for.

Run 'turngate COMMAND --help' for a command's options and examples.
"""

EPILOG = """\
shared options (accepted before or after a subcommand, where the command uses them):
  --url URL         the running gateway (env TURNGATE_URL; default http://127.0.0.1:18789)
  --token TOKEN     the gateway token (env TURNGATE_TOKEN, better than the flag)
  --state-dir DIR   state directory (env TURNGATE_STATE_DIR; default ~/.turngate)
  --config FILE     TOML config file (env TURNGATE_CONFIG; default STATE_DIR/turngate.toml)
  --json            JSON output, with the HTTP API's field names (default: text)

exit codes (the same for every command):
  0   done
  1   a check found problems (probe: a call failed)
  2-5 send: the turn failed (2), was aborted (3), rejected (4), expired (5)
  6   refused: the gateway said no (bad input, missing or wrong token), or no such
      session or job
  7   the gateway could not be reached, did not answer in time, or is not turngate
  8   the configuration is invalid (TOML file, environment, a missing API key variable)
  9   the state directory cannot be used (in use by another gateway, not writable)
  10  the address cannot be listened on (port in use: the holder is named)
  11  storage is unavailable (the database cannot be opened or written)
  64  the command line is wrong (unknown option, bad value)
  130 interrupted (Ctrl-C)

examples:
  turngate gateway
  turngate send "hello"
  turngate sessions list
"""


def build_parser() -> CliParser:
    """The whole ``turngate`` parser (except ``sim``'s own options)."""
    parser = CliParser(prog="turngate", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"turngate {__version__}")
    # The subparsers are CliParsers (one-line usage errors); command modules see them as the
    # plain ArgumentParsers of their register() signature.
    commands = cast("SubParsers", parser.add_subparsers(title="commands", metavar="COMMAND"))
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``turngate`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except TurngateError as exc:
        message = " ".join(exc.message.splitlines())
        if not isinstance(exc, CliError):
            message += f" [{exc.code.value}]"  # the stable code, for scripts and searches
        if not isinstance(exc, UsageError):
            message = f"turngate: {message}"
        print(message, file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): nothing left to say, and nowhere to say it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK


def _run(argv: list[str]) -> int:
    if argv[:1] == ["sim"]:
        from turngate.sim.command import main as sim_main

        return sim_main(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help()
        return ExitCode.OK
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else ExitCode.OK
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:  # an option but no command ("turngate --json")
        raise UsageError("turngate: a command is required (see 'turngate --help')")
    return int(func(resolve(args)))
