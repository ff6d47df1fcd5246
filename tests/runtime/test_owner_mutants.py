"""Tests written for the mutation run (`make mutants`, docs/mutants.md) over the session owner.

Each kills mutants of ``runtime/owner.py`` the engine's tests let survive: what an operator's
unstick and a user's abort of a queued turn do, what the events of a cancelled, fenced or
steered run say, what is stored for a turn that waited, and that a fenced run's late output
reaches nobody. docs/mutants.md lists which.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.fake_models import Call, ScriptedModel, echo_last
from tests.harness import EngineHarness
from tests.runtime.tool_fakes import FakeTool, FakeTools, ask
from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.turn import TurnState
from turngate.errors import ErrorCode, StorageUnavailableError
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest
from turngate.runtime.events import Event, EventBus, EventKind
from turngate.sim.loop import run_virtual
from turngate.store.sqlite import SqliteStore
from turngate.tools.base import Toolbox

KEY = parse_session_key("agent:main:main")
WALL = 1_800_000_000.0
"""The wall clock at virtual time 0."""


def harness(tmp_path: Path, model: ScriptedModel, **settings: Any) -> EngineHarness:
    return EngineHarness(tmp_path, model, EngineSettings(**settings), wall_at_zero=WALL)


def of(events: list[Event], kind: EventKind) -> list[Event]:
    return [e for e in events if e.kind is kind]


def starts(engine: Engine) -> list[asyncio.Event]:
    """Events set as the first, second, ... turn starts (subscribe before submitting)."""
    started = [asyncio.Event() for _ in range(3)]
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.STARTED and len(seen) < len(started):
            seen.append(event)
            started[len(seen) - 1].set()

    engine.events.subscribe(on_event)
    return started


def test_an_operator_unstick_fences_the_running_run_at_once_and_serves_the_next(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        first_started, *_ = starts(engine)
        stuck = await engine.submit(SubmitRequest(KEY, "stuck"))
        nxt = await engine.submit(SubmitRequest(KEY, "next"))
        await first_started.wait()
        await asyncio.sleep(1.0)
        assert await engine.unstick(KEY) == [stuck.turn_id]
        ended = await stuck.outcome
        assert (ended.state, ended.code) == (TurnState.ABORTED, ErrorCode.USER_ABORT)
        assert ended.message == (
            f"session {KEY}: run {stuck.turn_id} aborted by the user"
            "; the run ignored cancellation and was fenced"
        )
        assert engine.clock.now() == 1.0
        assert (await nxt.outcome).reply == "echo: next"
        assert engine.clock.now() == 1.5
        assert await engine.unstick(KEY) == []

    events = harness(
        tmp_path,
        ScriptedModel([Call(hang=True)], then=Call(latency_s=0.5)),
        stall_timeout_s=60.0,
    ).run(scenario)
    [cancel] = of(events, EventKind.CANCEL_REQUESTED)
    [fenced] = of(events, EventKind.FENCED)
    assert (cancel.at, cancel.code, fenced.at) == (1.0, ErrorCode.USER_ABORT, 1.0)
    # The run did stop when cancelled, but only after it was fenced: its end is ignored.
    [stale] = of(events, EventKind.STALE_IGNORED)
    assert (stale.at, stale.run_id, stale.epoch, stale.detail) == (
        1.0,
        fenced.run_id,
        1,
        "ignored end (RunCancelled) from a run that no longer holds the session",
    )
    [unstuck] = of(events, EventKind.UNSTUCK)
    assert unstuck.detail == f"forced free by an operator; ended 1 turn(s): {fenced.run_id}"


def test_a_user_can_abort_one_queued_turn_by_its_id_and_the_running_one_goes_on(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        first_started, *_ = starts(engine)
        running = await engine.submit(SubmitRequest(KEY, "running"))
        waiting = await engine.submit(SubmitRequest(KEY, "waiting"))
        behind = await engine.submit(SubmitRequest(KEY, "behind"))
        await first_started.wait()
        await asyncio.sleep(0.5)  # the owner has taken both in
        for ticket in (waiting, behind):
            record = await engine.store.get_turn(ticket.turn_id)
            assert record is not None
            assert record.state is TurnState.QUEUED
        assert await engine.abort(KEY, waiting.turn_id) == [waiting.turn_id]
        aborted = await waiting.outcome
        assert (aborted.state, aborted.code) == (TurnState.ABORTED, ErrorCode.USER_ABORT)
        assert engine.clock.now() == 0.5
        assert (await running.outcome).reply == "echo: running"
        assert (await behind.outcome).reply == "echo: behind"
        assert engine.clock.now() == 2.0

    events = harness(tmp_path, ScriptedModel(then=Call(latency_s=1.0))).run(scenario)
    accepted = [e.turn_id for e in of(events, EventKind.ACCEPTED)]
    assert len(accepted) == 3
    queued = [(e.at, e.session_key, e.turn_id, e.lane) for e in of(events, EventKind.QUEUED)]
    assert queued == [(0.0, str(KEY), turn_id, "direct") for turn_id in accepted]
    assert of(events, EventKind.CANCEL_REQUESTED) == []


def test_a_stalled_runs_cancellation_and_fencing_say_how_old_it_was_and_since_when_silent(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        await asyncio.sleep(2.0)
        zombie = await engine.submit(SubmitRequest(KEY, "zombie"))
        await asyncio.sleep(2.0)
        nxt = await engine.submit(SubmitRequest(KEY, "next", stream=True))
        assert nxt.deltas is not None
        deltas = [delta async for delta in nxt.deltas]
        assert (await zombie.outcome).code is ErrorCode.STALLED
        outcome = await nxt.outcome
        assert outcome.reply == "echo: next"
        # Only the run serving the turn streams to it: never the fenced run's late reply.
        assert deltas == [(nxt.turn_id, "echo: next")]
        assert engine.clock.now() == 12.5

    events = harness(
        tmp_path,
        ScriptedModel(
            [Call(reply="too late", chunks=1, ignore_cancel_s=10.0)],
            then=Call(reply=echo_last, chunks=1, latency_s=4.5),
        ),
        stall_timeout_s=5.0,
        abort_grace_s=1.0,
    ).run(scenario)
    [cancel] = of(events, EventKind.CANCEL_REQUESTED)
    assert (cancel.at, cancel.code, cancel.epoch) == (7.0, ErrorCode.STALLED, 1)
    assert cancel.detail == "cancelling run: stalled (run age 5.0s, no progress for 5.0s)"
    [fenced] = of(events, EventKind.FENCED)
    zombie_run = fenced.run_id
    assert (fenced.at, fenced.epoch) == (8.0, 1)
    assert fenced.detail == (
        "run ignored cancellation past abort_grace; epoch fenced (run age 6.0s)"
    )
    # The late reply (at 12 s) arrives while the next run holds the session: the owner
    # ignores both its delta and its end, and says so.
    assert [(e.at, e.run_id, e.epoch, e.detail) for e in of(events, EventKind.STALE_IGNORED)] == [
        (12.0, zombie_run, 1, "ignored progress from a run that no longer holds the session"),
        (
            12.0,
            zombie_run,
            1,
            "ignored end (RunReplied) from a run that no longer holds the session",
        ),
    ]
    assert {(e.run_id, e.epoch) for e in of(events, EventKind.PROGRESS)} == {
        (e.run_id, 2) for e in of(events, EventKind.LEASE_ACQUIRED) if e.epoch == 2
    }


def test_a_lane_turn_is_reported_under_its_lane_from_queued_to_ended(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "direct"))
        cron = await engine.submit(SubmitRequest(KEY, "from cron", lane="cron"))
        await first.outcome
        await cron.outcome

    events = harness(tmp_path, ScriptedModel(then=Call(latency_s=1.0))).run(scenario)
    for kind in (EventKind.QUEUED, EventKind.STARTED, EventKind.ENDED):
        assert [e.lane for e in of(events, kind)] == ["direct", "cron"], kind


def test_a_turn_that_expires_while_waiting_is_stored_with_when_it_ended(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        slow = await engine.submit(SubmitRequest(KEY, "slow"))
        hurried = await engine.submit(SubmitRequest(KEY, "hurried", timeout_s=2.0))
        assert (await hurried.outcome).state is TurnState.EXPIRED
        record = await engine.store.get_turn(hurried.turn_id)
        assert record is not None
        assert (record.state, record.ended_wall) == (TurnState.EXPIRED, WALL + 2.0)
        await slow.outcome

    harness(tmp_path, ScriptedModel(then=Call(latency_s=3.0))).run(scenario)


def test_a_steered_turn_is_reported_and_stored_as_started_in_the_running_run(
    tmp_path: Path,
) -> None:
    # The run's tool call returns at 1.0 s: the steered turn joins it then, before step 2.
    tools = FakeTools([FakeTool("search", latency_s=1.0)])
    model = ScriptedModel([Call(reply="", tool_calls=ask(("c1", "search", "trips")))])

    async def scenario(engine: Engine) -> None:
        first_started, steer_started, _ = starts(engine)
        first = await engine.submit(SubmitRequest(KEY, "plan a trip"))
        await first_started.wait()
        await asyncio.sleep(0.5)
        steer = await engine.submit(SubmitRequest(KEY, "make it Lisbon", mode=QueueMode.STEER))
        await steer_started.wait()
        record = await engine.store.get_turn(steer.turn_id)
        assert record is not None
        assert (record.state, record.run_id, record.epoch, record.started_wall) == (
            TurnState.RUNNING,
            first.turn_id,
            1,
            WALL + 1.0,
        )
        await first.outcome
        await steer.outcome

    events = EngineHarness(
        tmp_path, model, EngineSettings(), wall_at_zero=WALL, toolbox=Toolbox([tools])
    ).run(scenario)
    [_, joined] = of(events, EventKind.STARTED)
    assert (joined.at, joined.epoch, joined.wait_s, joined.ready_wait_s, joined.detail) == (
        1.0,
        1,
        0.5,
        0.0,
        "steered into the running turn",
    )
    assert joined.run_id == of(events, EventKind.STARTED)[0].turn_id


def test_a_start_that_waits_for_storage_is_retried_with_doubling_pauses_and_the_run_timed_from_it(
    tmp_path: Path,
) -> None:
    class CommitsFail(sqlite3.Connection):
        """COMMIT fails as on a failing disk while :attr:`failing` is set; once
        :attr:`armed`, the next COMMIT goes through and sets it, for 0.3 s."""

        armed = False
        failing = False

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            if sql == "COMMIT" and CommitsFail.failing:
                super().execute("ROLLBACK")
                raise sqlite3.OperationalError("disk I/O error")
            cursor = super().execute(sql, parameters)
            if sql == "COMMIT" and CommitsFail.armed:
                CommitsFail.armed, CommitsFail.failing = False, True
                asyncio.get_running_loop().call_later(0.3, setattr, CommitsFail, "failing", False)
            return cursor

    events: list[Event] = []

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(events.append)
        engine = Engine(
            SqliteStore(tmp_path / "turngate.db", connection_factory=CommitsFail),
            ScriptedModel([Call()], then=Call(latency_s=4.9)),
            settings=EngineSettings(stall_timeout_s=5.0),
            clock=LoopClock(WALL),
            events=bus,
        )
        async with engine:
            # A first turn: this process holds the session from then on (no claim to write).
            warm = await engine.submit(SubmitRequest(KEY, "warm"))
            assert (await warm.outcome).reply == "echo: warm"
            await asyncio.sleep(1.0)
            # The turn is written down; the write that starts its run is not, until 1.3 s.
            CommitsFail.armed = True
            ticket = await engine.submit(SubmitRequest(KEY, "hello", turn_id="hello"))
            await asyncio.sleep(0.1)
            with pytest.raises(StorageUnavailableError, match="waiting for storage"):
                await engine.abort(KEY)
            outcome = await ticket.outcome
            # Its stall clock started when the run did (1.35 s), not when it was decided.
            assert outcome.reply == "echo: hello"
            assert engine.clock.now() == pytest.approx(1.35 + 4.9)

    run_virtual(main())
    failed = of(events, EventKind.STORAGE_FAILED)
    assert [e.at for e in failed] == pytest.approx([1.0, 1.05, 1.15])
    for event, pause in zip(failed, ("0.05", "0.1", "0.2"), strict=True):
        assert event.detail.startswith(f"start a run failed, trying again in {pause}s: storage ")
    assert {e.run_id for e in failed} == {"hello"}
    [start] = [e for e in of(events, EventKind.STARTED) if e.turn_id == "hello"]
    assert (start.at, start.wait_s, start.ready_wait_s, start.lane) == pytest.approx(
        (1.35, 0.35, 0.35, "direct")
    )


def test_the_agents_system_prompt_comes_first_in_what_the_model_is_sent(tmp_path: Path) -> None:
    model = ScriptedModel(then=Call(latency_s=0.1))

    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "hello"))
        assert (await ticket.outcome).reply == "echo: hello"

    harness(tmp_path, model, system_prompt="Answer in one line.").run(scenario)
    [request] = model.requests
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Answer in one line."),
        ("user", "hello"),
    ]
