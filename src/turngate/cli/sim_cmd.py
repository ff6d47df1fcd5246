"""``turngate sim``: listed here for ``turngate --help`` only.

``main`` hands ``turngate sim ...`` to :mod:`turngate.sim.command` before parsing, since the
simulator's options are its own (``python -m turngate.sim`` takes the same).
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the deterministic simulator: seeded schedules of clients, model latencies, faults and
crashes against the real runtime, checked for turngate's invariants. See 'turngate sim --help'.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add a ``sim`` entry to ``commands`` (never parsed: see the module docstring)."""
    commands.add_parser(
        "sim",
        help="run the deterministic simulator (turngate sim --help)",
        description=DESCRIPTION,
        epilog="examples:\n  turngate sim --seed 42 --trace\n  turngate sim --seeds 200 --jobs 2\n",
    )
