"""A seed is a complete description of a schedule: replaying it gives the same trace, byte
for byte, in a fresh process with a different hash seed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from turngate.core.session import SessionCore
from turngate.sim.command import main
from turngate.types import Epoch, RunId

REPLAY_TIMEOUT_S = 120.0


SIM_DIR = re.compile(rb"turngate-sim-[A-Za-z0-9_]+")
"""The seed's scratch directory, a fresh name in each run (storage errors quote it)."""


def replay(seed: int, hash_seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-m", "turngate.sim", "--seed", str(seed), "--trace"],
        capture_output=True,
        env=env,
        timeout=REPLAY_TIMEOUT_S,
        check=True,
    )
    return SIM_DIR.sub(b"turngate-sim-DIR", done.stdout)


# 106 and 402: a crash cuts many waiting clients' connections at once, and the order in which
# they wake and retry must not follow the objects' addresses. 540 runs two gateway processes
# that pause and crash: takeovers, late writes refused, restarts.
@pytest.mark.parametrize("seed", [3, 106, 129, 402, 540, 841])
def test_a_seed_replays_to_the_same_trace_byte_for_byte(seed: int) -> None:
    first = replay(seed, "1")
    assert first == replay(seed, "2")
    assert b"gateway life 1 starts" in first
    assert first.startswith(f"seed {seed}\nparams profile=".encode())


def test_a_failing_seed_prints_its_replay_command_and_trace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def holds(self: SessionCore, run_id: RunId, epoch: Epoch) -> bool:
        del run_id, epoch
        return self.active is not None

    monkeypatch.setattr(SessionCore, "_holds", holds)
    assert main(["--seed", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (invariant): seed 5" in out
    assert "I6 at t=" in out
    assert "replay: python -m turngate.sim --seed 5" in out
    assert "L1 lease_acquired" in out


def test_many_seeds_report_their_rate_and_no_failures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "40..59"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("20 seeds (")
    assert "seeds/s" in out
    assert out.rstrip().endswith("sim: 20 passed, 0 failed")
