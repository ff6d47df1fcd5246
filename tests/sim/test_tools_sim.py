"""Tool-using seeds: the real agent loop against the simulator's tool-calling model and its
faulty tools (``sim/tools.py``).

A share of the seeds give their model tools; its steps call them (concurrently), the tools
take time, fail, hang past their deadline or swallow cancellation, and the seed's aborts,
lease expiries, crashes and storage outages land mid-tool. The usual checks run, plus I10
(every tool call has exactly one result). The planted bugs that prove I10 can fail live with
the others, in ``test_planted_bugs.py``.
"""

from __future__ import annotations

import pytest

from turngate.sim.runner import run_seed
from turngate.sim.tools import TOOLS_SHARE, draw_tools


def tool_seeds(count: int) -> list[int]:
    """The first ``count`` seeds whose model calls tools."""
    return [seed for seed in range(200) if draw_tools(seed, 1.0) is not None][:count]


def test_about_a_third_of_the_seeds_have_tools() -> None:
    share = sum(draw_tools(seed, 1.0) is not None for seed in range(2000)) / 2000
    assert abs(share - TOOLS_SHARE) < 0.05


@pytest.mark.parametrize("seed", tool_seeds(6))
def test_a_tool_seed_runs_clean_and_calls_its_tools(seed: int) -> None:
    result = run_seed(seed)
    assert result.ok, (result.violations[:5], result.error[-800:])
    assert result.tool_calls > 0


def test_the_tool_seeds_meet_the_endings_they_are_there_for() -> None:
    # Across a few seeds: tools that fail or time out (error results the model sees), runs
    # cut by max_steps, and gateway crashes while tool calls ran (closed by the recovery).
    seen: set[str] = set()
    for seed in tool_seeds(30):
        result = run_seed(seed)
        assert result.ok, (seed, result.violations[:3], result.error[-500:])
        lines = result.trace.lines()
        if any("tool_called" in line and "state=error" in line for line in lines):
            seen.add("error result")
        if any("code=max_steps" in line for line in lines):
            seen.add("max_steps")
        if result.lives > result.processes:
            seen.add("crash")
    assert seen == {"error result", "max_steps", "crash"}
