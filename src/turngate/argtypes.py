"""Command-line value checks shared by the ``turngate`` commands and the simulator's own
parser: each is an argparse ``type=`` that refuses a value with the reason."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ``>= low``, or a usage error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_at_least(low: float) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number ``>= low``, or a usage error that says so."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number >= {low:g} (got {text})")
        return value

    parse.__name__ = f"number >= {low:g}"
    return parse


# -- times -----------------------------------------------------------------------------------
