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
    117: "several processes: on a takeover (here a restart under the same name) a session's"
    " open turns resumed in acceptance order, behind turns accepted earlier elsewhere but"
    " handed over late, so a run that had written steps before it was cut off resumed after"
    " turns that saw its message and tool calls as unanswered: its reply was not its own",
    1265: "the same, after a takeover from a process cut off from the store",
    7291: "the same, adopted turns put ahead of older ones already in the owner's inbox",
    5779: "several processes: a turn taken over was submitted again and rejected queue_full"
    " by its new holder (the session had more open turns than queue_turns_max, accepted by"
    " several processes); the store does not record 'rejected' for a queued turn, so the"
    " client was told 'rejected' and the turn later ended otherwise (I1: ended twice)",
    8953: "the same",
    10985: "the same",
    5075: "a takeover queued a run's interrupted turns again and dropped the run's id from"
    " them; a crash before they ran again made the next life resume them one by one, and the"
    " first answered its steered companion's message too (not its own reply)",
    11691: "a fenced run's end decided which tool calls it closes once, before its write"
    " waited for storage; the run, ignoring its cancellation, wrote a step meanwhile, and"
    " that step's call was left without a result (I10; one process could do it too)",
}


BEFORE_EDGES = frozenset({129, 397, 841, 207, 1135, 1010171, 1049958, 1003061})


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_a_seed_that_once_found_a_bug_now_passes(seed: int) -> None:
    result = run_seed(seed, edges=seed not in BEFORE_EDGES)
    assert result.ok, (FOUND[seed], result.violations[:5], result.error[-800:])
