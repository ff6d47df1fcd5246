"""Seeds that found real bugs in the runtime, kept as regressions.

Each seed's parameters come from its draw, so a seed keeps exercising its scenario as long as
the simulator's drawing code is unchanged (the trace test pins that too). Seeds found before
clients went through the gateway's edges run without them, as they were found.
"""

from __future__ import annotations

import pytest

from turngate.sim.runner import run_seed

FOUND = {
    129: "turns ended at restart (deadline passed while down) were never emitted as ended",
    397: "a run cancelled while its transcript write awaited the commit left an aborted turn"
    " with its exchange in the transcript",
    841: "a stopping engine kept clients waiting until runs that ignore cancellation unwound",
    207: "on a full disk, a reply already written down waited for the next turn's start to be"
    " written too, and a crash in between lost its ended event",
    1135: "the same, with the disk full from the first second",
    1010171: "a cancel carried out late (an earlier write of its step waited for storage) was"
    " fenced at once: its abort grace counted from when the revoke was decided",
    1049958: "the world looked settled while a just-accepted turn still sat in its owner's"
    " inbox (snapshot.settled ignored posted commands), so the run ended before it ran",
    1003061: "a client's abort refused while its session waited for storage (503, by design)"
    " crashed the simulated client instead of being let be",
}


BEFORE_EDGES = frozenset({129, 397, 841, 207, 1135, 1010171, 1049958, 1003061})


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_a_seed_that_once_found_a_bug_now_passes(seed: int) -> None:
    result = run_seed(seed, edges=seed not in BEFORE_EDGES)
    assert result.ok, (FOUND[seed], result.violations[:5], result.error[-800:])
