"""``python -m turngate.sim`` (also ``turngate sim``): run seeded schedules and check them.

    python -m turngate.sim --seed 42 [--profile chaos] [--trace]   one seed, verbose
    python -m turngate.sim --seeds 2000 [--start 0] [--jobs 2]     many seeds
    python -m turngate.sim --seeds 100..199                         a range

Prints the seed and parameters first (one seed) or seeds/s and violations (many). A failing
seed prints its replay command and its trace. Exit codes: 0 all passed, 1 an invariant was
violated, 2 a liveness failure (the world did not settle), 3 a crash (an exception escaped).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from turngate.sim.runner import FailureClass, SimResult, run_seed
from turngate.sim.world import Profile

CHUNK_SEEDS = 25


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """What a worker sends back for one seed (traces are rebuilt by replaying the seed)."""

    seed: int
    profile: str
    failure: str | None
    first: str
    acked: int
    lives: int


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    profile = Profile(args.profile) if args.profile else None
    if args.seed is not None:
        return _one(args.seed, profile, show_trace=args.trace)
    start, count = _seed_range(args.seeds, args.start)
    return _many(start, count, profile, max(1, args.jobs))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turngate sim", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run one seed and print its parameters")
    which.add_argument("--seeds", help="how many seeds (N), or a range A..B (inclusive)")
    parser.add_argument("--start", type=int, default=0, help="first seed with --seeds N")
    parser.add_argument("--profile", choices=[p.value for p in Profile], help="force a profile")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--trace", action="store_true", help="print the trace even on success")
    return parser


def _seed_range(text: str, start: int) -> tuple[int, int]:
    if ".." in text:
        low, high = (int(part) for part in text.split("..", 1))
        return low, high - low + 1
    return start, int(text)


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
    print(
        f"seed {seed}: {'ok' if result.ok else 'FAILED'}: {result.acked} turns acknowledged,"
        f" {result.replied} replied, {result.lives} gateway lives,"
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
    return SeedSummary(
        seed,
        result.params.profile.value,
        None if result.failure is None else result.failure.value,
        first if isinstance(first, str) else "".join(first),
        result.acked,
        result.lives,
    )


def _chunk(seeds: range, profile: Profile | None) -> list[SeedSummary]:
    return [_summarise(seed, profile) for seed in seeds]


def _many(start: int, count: int, profile: Profile | None, jobs: int) -> int:
    began = time.perf_counter()
    chunks = [
        range(low, min(low + CHUNK_SEEDS, start + count))
        for low in range(start, start + count, CHUNK_SEEDS)
    ]
    summaries: list[SeedSummary] = []
    if jobs == 1:
        for chunk in chunks:
            summaries.extend(_chunk(chunk, profile))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            for part in pool.map(_chunk, chunks, [profile] * len(chunks)):
                summaries.extend(part)
    elapsed = time.perf_counter() - began
    failed = [s for s in summaries if s.failure is not None]
    profiles = Counter(s.profile for s in summaries)
    mix = ", ".join(f"{name} {profiles[name]}" for name in sorted(profiles))
    print(
        f"{len(summaries)} seeds ({mix}) in {elapsed:.1f}s: {len(summaries) / elapsed:.0f} seeds/s,"
        f" {sum(s.acked for s in summaries)} turns acknowledged,"
        f" {sum(s.lives - 1 for s in summaries)} crashes; {len(failed)} failed"
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
