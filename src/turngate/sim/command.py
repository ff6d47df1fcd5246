"""``python -m turngate.sim`` (also ``turngate sim``): run seeded schedules and check them.

    python -m turngate.sim --seed 42 [--profile chaos] [--trace]   one seed, verbose
    python -m turngate.sim --seeds 2000 [--start 0] [--jobs 2]     many seeds
    python -m turngate.sim --seeds 100..199                         a range

Prints the seed and parameters first (one seed) or seeds/s and violations (many). A failing
seed prints its replay command and its trace. While many seeds run, their progress goes to
stderr: ``seeds 1200/2000 (60%), 41 seeds/s, 0 failed, ETA 19s``, one line rewritten in place
on a terminal, a plain line every tenth of the seeds (or every 30 s) otherwise; stdout keeps
the summary alone. Exit codes: 0 all passed, 1 an invariant was violated, 2 a liveness
failure (the world did not settle), 3 a crash (an exception escaped).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TextIO

from turngate.argtypes import int_at_least
from turngate.sim.channel import PlatformShape
from turngate.sim.runner import FailureClass, SimResult, run_seed
from turngate.sim.surfaces import Surface
from turngate.sim.world import Profile

CHUNK_SEEDS = 25
PROGRESS_REDRAW_S = 0.25
"""On a terminal, the progress line is redrawn at most this often."""
PROGRESS_STEP = 0.1
"""Elsewhere (CI logs), a progress line each time this fraction of the seeds is done..."""
PROGRESS_PLAIN_S = 30.0
"""...or when this long has passed since the last one, whichever comes first."""
EXIT_USAGE = 64
"""A wrong command line: the same code as every ``turngate`` command."""


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What a worker sends back for one seed (traces are rebuilt by replaying the seed)."""

    seed: int
    profile: str
    failure: str | None
    first: str
    acked: int
    lives: int
    edges: bool
    """Whether its clients went through the gateway's edges (``sim/surfaces.py``)."""
    channel: bool = False
    """Whether people on a chat platform wrote through a channel (``sim/channel_world.py``)."""
    discord: bool = False
    """Whether that platform was Discord-shaped (``sim/discord.py``)."""
    tool_calls: int = 0
    """Tool calls its model made (``sim/tools.py``)."""
    processes: int = 1
    """Gateway processes sharing its store (``sim/cluster.py``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    profile = Profile(args.profile) if args.profile else None
    if args.seed is not None:
        return _one(args.seed, profile, show_trace=args.trace)
    low, count = args.seeds
    return _many(args.start if low is None else low, count, profile, args.jobs)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit code 64, as for every ``turngate`` command."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="turngate sim",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  turngate sim --seed 42 --trace\n  turngate sim --seeds 200 --jobs 2\n"
        "  turngate sim --seeds 100..199",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--seed", metavar="N", type=int_at_least(0), help="run one seed and print its parameters"
    )
    which.add_argument(
        "--seeds",
        metavar="N|A..B",
        type=_seed_range,
        help="how many seeds (N >= 1), or a range A..B (inclusive)",
    )
    parser.add_argument(
        "--start", metavar="N", type=int_at_least(0), default=0, help="first seed with --seeds N"
    )
    parser.add_argument(
        "--profile", choices=[p.value for p in Profile], help="force a profile (default: seeded)"
    )
    parser.add_argument(
        "--jobs", metavar="N", type=int_at_least(1), default=1, help="worker processes (default 1)"
    )
    parser.add_argument("--trace", action="store_true", help="print the trace even on success")
    return parser


def _seed_range(text: str) -> tuple[int | None, int]:
    """``N`` (count; first seed from --start: None) or ``A..B`` (first seed, count)."""
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
        else:
            low, high = None, int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number of seeds N nor a range A..B"
        ) from None
    if low is None:
        if high < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1 seed (got {high})")
        return None, high
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"range {text}: need 0 <= A <= B")
    return low, high - low + 1


def replay_command(seed: int, profile: Profile | None) -> str:
    """The command that replays ``seed`` exactly."""
    flag = f" --profile {profile.value}" if profile else ""
    return f"python -m turngate.sim --seed {seed}{flag}"


def _one(seed: int, profile: Profile | None, *, show_trace: bool) -> int:
    result = run_seed(seed, profile)
    print(f"seed {seed}")
    print(f"params {result.params.line()}")
    if show_trace or not result.ok:
        print("trace:")
        for line in result.trace.lines():
            print(line)
    _report(result, profile)
    processes = f"{result.processes} gateway processes, " if result.processes > 1 else ""
    print(
        f"seed {seed}: {'ok' if result.ok else 'FAILED'}: {result.acked} turns acknowledged,"
        f" {result.replied} replied, {processes}{result.lives} gateway lives,"
        f" {result.virtual_s:.1f}s virtual"
    )
    return 0 if result.failure is None else result.failure.exit_code


def _report(result: SimResult, profile: Profile | None) -> None:
    if result.ok:
        return
    assert result.failure is not None
    print(f"FAILED ({result.failure.value}): seed {result.seed}")
    for violation in result.violations[:20]:
        print(f"  {violation.line()}")
    if result.error:
        print(result.error)
    print(f"replay: {replay_command(result.seed, profile)}")


def _summarise(seed: int, profile: Profile | None) -> SeedSummary:
    result = run_seed(seed, profile)
    first = result.violations[0].line() if result.violations else result.error.splitlines()[-1:]
    channel = result.params.channel
    return SeedSummary(
        seed,
        result.params.profile.value,
        None if result.failure is None else result.failure.value,
        first if isinstance(first, str) else "".join(first),
        result.acked,
        result.lives,
        result.params.surfaces != (Surface.ENGINE,),
        channel is not None,
        channel is not None and channel.shape is PlatformShape.DISCORD,
        result.tool_calls,
        result.processes,
    )


def _chunk(seeds: range, profile: Profile | None) -> list[SeedSummary]:
    return [_summarise(seed, profile) for seed in seeds]


def _many(start: int, count: int, profile: Profile | None, jobs: int) -> int:
    began = time.perf_counter()
    summaries: list[SeedSummary] = []
    progress = Progress(count, sys.stderr, began=began)
    for part in _summaries(start, count, profile, jobs):
        summaries.extend(part)
        progress.advance(part, time.perf_counter())
    progress.clear()
    elapsed = time.perf_counter() - began
    failed = [s for s in summaries if s.failure is not None]
    profiles = Counter(s.profile for s in summaries)
    mix = ", ".join(f"{name} {profiles[name]}" for name in sorted(profiles))
    print(
        f"{len(summaries)} seeds ({mix}) in {elapsed:.1f}s: {len(summaries) / elapsed:.0f} seeds/s,"
        f" {sum(s.acked for s in summaries)} turns acknowledged,"
        f" {sum(s.lives - s.processes for s in summaries)} crashes,"
        f" {sum(s.edges for s in summaries)} seeds through the gateway's edges,"
        f" {sum(s.channel for s in summaries)} with a chat platform"
        f" ({sum(s.discord for s in summaries)} Discord),"
        f" {sum(bool(s.tool_calls) for s in summaries)} with tool calls"
        f" ({sum(s.tool_calls for s in summaries)} calls),"
        f" {sum(s.processes > 1 for s in summaries)} with several gateway processes;"
        f" {len(failed)} failed"
    )
    for summary in failed[:20]:
        print(f"  seed {summary.seed} ({summary.failure}): {summary.first}")
        print(f"    replay: {replay_command(summary.seed, profile)}")
    if not failed:
        print(f"sim: {len(summaries)} passed, 0 failed")
        return 0
    first = failed[0]
    print(f"trace of seed {first.seed}:")
    _one(first.seed, profile, show_trace=True)
    print(f"sim: {len(summaries) - len(failed)} passed, {len(failed)} failed")
    return FailureClass(first.failure or "crash").exit_code


def _summaries(
    start: int, count: int, profile: Profile | None, jobs: int
) -> Iterable[list[SeedSummary]]:
    """The seeds' summaries in seed order, a few at a time (one seed at a time in this
    process, a chunk at a time from worker processes)."""
    if jobs == 1:
        for seed in range(start, start + count):
            yield [_summarise(seed, profile)]
        return
    chunks = [
        range(low, min(low + CHUNK_SEEDS, start + count))
        for low in range(start, start + count, CHUNK_SEEDS)
    ]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        yield from pool.map(_chunk, chunks, [profile] * len(chunks))


def progress_line(done: int, total: int, failed: int, elapsed_s: float) -> str:
    """``seeds 1200/2000 (60%), 41 seeds/s, 0 failed, ETA 19s``."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = _eta((total - done) / rate) if rate > 0 else "?"
    shown_rate = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
    percent = 100 * done // total if total else 100
    return f"seeds {done}/{total} ({percent}%), {shown_rate} seeds/s, {failed} failed, ETA {eta}"


def _eta(seconds: float) -> str:
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """How far a run of many seeds is, on ``out``: on a terminal one line rewritten in place
    (``\\r``), at most every :data:`PROGRESS_REDRAW_S`; otherwise a plain line each
    :data:`PROGRESS_STEP` of the seeds or every :data:`PROGRESS_PLAIN_S`."""

    def __init__(self, total: int, out: TextIO, *, began: float, tty: bool | None = None) -> None:
        self.total = total
        self.out = out
        self.began = began
        self.tty = out.isatty() if tty is None else tty
        self.done = 0
        self.failed = 0
        self._shown_at = began
        self._shown_step = 0
        self._width = 0

    def advance(self, summaries: Sequence[SeedSummary], now: float) -> None:
        """Count ``summaries`` as done at ``now`` (``time.perf_counter()``); show it if due."""
        self.done += len(summaries)
        self.failed += sum(1 for s in summaries if s.failure is not None)
        line = progress_line(self.done, self.total, self.failed, now - self.began)
        finished = self.done >= self.total
        if self.tty:
            if finished or now - self._shown_at >= PROGRESS_REDRAW_S:
                # Padded to the last line's width: a shorter line must cover a longer one.
                self.out.write(f"\r{line:<{self._width}}")
                self._width = len(line)
                self._shown(now)
            return
        step = int(self.done / self.total / PROGRESS_STEP) if self.total else 0
        if step > self._shown_step or now - self._shown_at >= PROGRESS_PLAIN_S:
            self.out.write(line + "\n")
            self._shown_step = step
            self._shown(now)

    def clear(self) -> None:
        """On a terminal, blank the progress line, so that what follows starts clean."""
        if self.tty and self._width:
            self.out.write(f"\r{'':<{self._width}}\r")
            self.out.flush()

    def _shown(self, now: float) -> None:
        self._shown_at = now
        self.out.flush()
