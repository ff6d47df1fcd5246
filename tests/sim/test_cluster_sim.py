"""Seeds with several gateway processes on one store (``sim/cluster.py``).

About one seed in six runs two or three processes on one SQLite store, each with its own
name, event bus and short claim timings; clients spread their turns over them; processes
crash (their claims left to expire) and pause (cut off from the store past their claim), and
one checker sees every process's events. The planted bugs that prove its checks can fail live
with the others, in ``test_planted_bugs.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from turngate.core.turn import TurnState
from turngate.errors import StorageUnavailableError, StoreError
from turngate.sim.cluster import Downtime, ProcessView
from turngate.sim.loop import run_virtual
from turngate.sim.runner import run_seed, seed_params
from turngate.sim.surfaces import Surface
from turngate.store.base import SessionClaim, TurnRecord
from turngate.store.rows import CLAIM_SELECT, claim_from_row
from turngate.store.sqlite import SqliteStore

KEY = "agent:sim:main"


def cluster_seeds(count: int, start: int = 0) -> list[int]:
    """The first ``count`` seeds from ``start`` that run several gateway processes."""
    found: list[int] = []
    seed = start
    while len(found) < count:
        if seed_params(seed).cluster is not None:
            found.append(seed)
        seed += 1
    return found


def test_about_one_seed_in_six_runs_several_processes() -> None:
    share = sum(seed_params(seed).cluster is not None for seed in range(2000)) / 2000
    assert 0.13 < share < 0.21, share


def test_seeds_with_a_feature_of_one_engine_keep_one_process() -> None:
    for seed in range(600):
        params = seed_params(seed)
        if params.cluster is not None:
            assert params.channel is None
            assert params.surfaces == (Surface.ENGINE,)
            assert (params.zombies, params.crash_after_commit) == (0, 0)
    # Seeds found before several processes joined replay the schedule they found.
    assert all(seed_params(seed, edges=False).cluster is None for seed in range(200))


@pytest.mark.parametrize("seed", cluster_seeds(4, start=2000))
def test_a_seed_with_several_processes_runs_clean(seed: int) -> None:
    result = run_seed(seed)
    assert result.ok, (result.violations[:5], result.error[-800:])
    assert result.processes > 1
    assert any(" p2.L1 " in line for line in result.trace.lines())


def test_the_cluster_seeds_meet_the_faults_they_are_there_for() -> None:
    # Across a few seeds: turns handed to the process holding their session, sessions taken
    # over from a process paused or crashed past its claim, that process's late writes
    # refused and its owner stepping down, and a restarted process taking its own back.
    seen: set[str] = set()
    for seed in cluster_seeds(40, start=2000):
        result = run_seed(seed)
        assert result.ok, (seed, result.violations[:3], result.error[-500:])
        for line in result.trace.lines():
            words = line.split()
            if words[1] == "#":  # the simulator's marker: "# p1: takes <key> over from p2"
                if words[3:5] == ["cut", "off"]:
                    seen.add("paused")
                elif words[3] == "takes" and words[-3:-1] == ["over", "from"]:
                    taker, holder = words[2].rstrip(":"), words[-1]
                    seen.add("took its own back" if taker == holder else "took over")
            elif words[2] == "handed_off":
                seen.add("handed off")
            elif words[2] == "session_lost":
                seen.add("session lost")
            elif words[2] in ("stale_write_refused", "step_refused"):
                seen.add("late write refused")
    assert seen == {
        "handed off",
        "session lost",
        "late write refused",
        "paused",
        "took over",
        "took its own back",
    }


def test_a_process_is_in_trouble_while_down_and_until_it_caught_up() -> None:
    downtime = Downtime(takeover_s=8.0)
    spell = downtime.begin("p1", 10.0)
    assert downtime.blocked("p1", 50.0, 0.0)  # still down
    spell.end = 12.0
    assert downtime.blocked("p1", 12.0 + 2.0, 0.0)
    assert not downtime.blocked("p2", 11.0, 0.0)
    assert not downtime.blocked("p1", 9.0, 0.0)
    # Its sessions wait for another process to take them, a claim's time after it stopped.
    assert downtime.delays(17.5, 0.0)
    assert not downtime.delays(30.0, 0.0)


def test_a_process_view_is_cut_off_then_dead_and_reports_the_sessions_it_takes(
    tmp_path: Path,
) -> None:
    taken: list[tuple[str, str, SessionClaim | None]] = []
    raised: list[type[Exception]] = []

    async def main() -> None:
        store = SqliteStore(tmp_path / "shared.db")
        await store.open()
        try:
            view = ProcessView(store, "p1", store_claim(store), lambda *got: taken.append(got))
            await view.accept_turn(record("t1"))
            claimed = await view.claim_session(KEY, "p1", 1000.0, 6.0)
            assert claimed.taken
            for flag in ("cut", "dead"):
                setattr(view, flag, True)
                try:
                    await view.get_turn("t1")
                except StoreError as exc:
                    raised.append(type(exc))
            await asyncio.wait_for(view.quiet(), 1.0)  # nothing under way
        finally:
            await store.close()

    run_virtual(main())
    assert [(name, key) for name, key, _ in taken] == [("p1", KEY)]
    assert taken[0][2] == SessionClaim(KEY, None, None, 0)
    assert raised == [StorageUnavailableError, StoreError]


def store_claim(store: SqliteStore) -> Callable[[str], SessionClaim | None]:
    """A session's claim as ``store`` has it now."""

    def claim_of(session_key: str) -> SessionClaim | None:
        row = store.db.execute(CLAIM_SELECT.format(p="?"), (session_key,)).fetchone()
        return None if row is None else claim_from_row(row)

    return claim_of


def record(turn_id: str) -> TurnRecord:
    return TurnRecord(
        turn_id=turn_id,
        session_key=KEY,
        agent_id="sim",
        message=turn_id,
        queue_mode="followup",
        state=TurnState.ACCEPTED,
        accepted_wall=1000.0,
        timeout_s=60.0,
    )
