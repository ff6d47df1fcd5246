"""The agent loop: a turn whose model calls tools runs them, feeds their results back and
calls the model again until it answers, all under the turn's lease (virtual time)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from tests.fake_models import Call, ScriptedModel
from tests.harness import DB_NAME, EngineHarness
from tests.runtime.tool_fakes import FakeTool, FakeTools, ask
from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.transcript import EntryKind, unanswered_calls
from turngate.core.turn import TurnState, Usage
from turngate.errors import ErrorCode
from turngate.runtime.activity import ToolFinished, ToolStarted
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest
from turngate.runtime.events import EventKind
from turngate.sim.loop import run_virtual
from turngate.store.base import INTERRUPTED_CALL_RESULT, TranscriptEntry
from turngate.tools.base import Toolbox

KEY = parse_session_key("agent:main:main")
WALL = 1_800_000_000.0


def harness(
    tmp_path: Path, model: ScriptedModel, tools: FakeTools, **settings: object
) -> EngineHarness:
    return EngineHarness(
        tmp_path,
        model,
        EngineSettings(**settings),  # type: ignore[arg-type]
        toolbox=Toolbox([tools]),
        max_steps=4,
        wall_at_zero=WALL,
        check_invariants=True,
    )


async def transcript(engine: Engine) -> list[TranscriptEntry]:
    return await engine.store.transcript(str(KEY), 100)


def shape(entries: list[TranscriptEntry]) -> list[tuple[str, str]]:
    """``(kind, text or the calls' ids)`` per entry."""
    return [
        (
            entry.kind.value,
            ",".join(call.id for call in entry.item.tool_calls)
            if entry.kind is EntryKind.TOOL_CALLS
            else entry.text,
        )
        for entry in entries
    ]


def test_a_tool_call_runs_its_result_goes_back_and_the_model_answers(tmp_path: Path) -> None:
    tools = FakeTools([FakeTool("weather", latency_s=2.0)])
    model = ScriptedModel(
        [Call(reply="Let me look.", tool_calls=ask(("c1", "weather", "Lisbon")), latency_s=1.0)],
        then=Call(reply="Sunny in Lisbon.", latency_s=1.0),
    )

    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "weather in Lisbon?", stream=True))
        assert ticket.deltas is not None
        deltas = [delta async for _, delta in ticket.deltas]
        outcome = await ticket.outcome
        assert (outcome.state, outcome.reply) == (
            TurnState.REPLIED,
            "Let me look.\n\nSunny in Lisbon.",
        )
        assert engine.clock.now() == 4.0  # 1 s model, 2 s tool, 1 s model
        assert "".join(d for d in deltas if isinstance(d, str)) == outcome.reply
        activity = [d for d in deltas if not isinstance(d, str)]
        assert [type(a) for a in activity] == [ToolStarted, ToolFinished]
        finished = activity[1]
        assert isinstance(finished, ToolFinished)
        assert finished.result.content == 'weather: {"q": "Lisbon"}'
        assert finished.duration_s == 2.0
        assert shape(await transcript(engine)) == [
            ("user", "weather in Lisbon?"),
            ("assistant", "Let me look."),
            ("tool_calls", "c1"),
            ("tool_result", 'weather: {"q": "Lisbon"}'),
            ("assistant", "Sunny in Lisbon."),
        ]

    harness(tmp_path, model, tools).run(scenario)
    first, second = model.requests
    assert [tool.name for tool in first.tools] == ["weather"]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    assert second.messages[2].content == 'weather: {"q": "Lisbon"}'
    assert tools.calls[0].context.session_key == str(KEY)


def test_parallel_calls_run_concurrently_each_result_written_as_it_comes(tmp_path: Path) -> None:
    tools = FakeTools([FakeTool("slow", latency_s=3.0), FakeTool("fast", latency_s=1.0)])
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "slow", "a"), ("c2", "fast", "b")))],
        then=Call(reply="both done"),
    )

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "do both"))).outcome
        assert outcome.reply == "both done"
        assert engine.clock.now() == 3.0  # not 4: the calls overlapped
        entries = await transcript(engine)
        assert shape(entries) == [
            ("user", "do both"),
            ("tool_calls", "c1,c2"),
            ("tool_result", 'fast: {"q": "b"}'),
            ("tool_result", 'slow: {"q": "a"}'),
            ("assistant", "both done"),
        ]
        assert [e.at_wall - WALL for e in entries] == [0.0, 0.0, 1.0, 3.0, 3.0]

    harness(tmp_path, model, tools).run(scenario)


def test_a_hanging_tool_meets_its_deadline_and_the_model_sees_an_error_result(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("stuck", hang=True)], call_timeout_s=5.0)
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "stuck", "x")))], then=Call(reply="it timed out")
    )

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "try it"))).outcome
        assert (outcome.state, outcome.reply) == (TurnState.REPLIED, "it timed out")
        assert engine.clock.now() == 5.0
        result = (await transcript(engine))[2]
        assert result.item.is_error
        assert result.text == "tool stuck did not finish within 5s and was cancelled"

    harness(tmp_path, model, tools).run(scenario)
    assert tools.ended() == [("stuck", "cancelled")]


def test_an_abort_mid_tool_cancels_every_call_and_closes_each_with_a_cancelled_result(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("quick", latency_s=1.0), FakeTool("stuck", hang=True)])
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "quick", "a"), ("c2", "stuck", "b")))]
    )

    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "go"))
        await asyncio.sleep(2.0)
        assert await engine.abort(KEY) == [ticket.turn_id]
        outcome = await ticket.outcome
        assert (outcome.state, outcome.code) == (TurnState.ABORTED, ErrorCode.USER_ABORT)
        entries = await transcript(engine)
        assert shape(entries) == [
            ("user", "go"),
            ("tool_calls", "c1,c2"),
            ("tool_result", 'quick: {"q": "a"}'),
            (
                "tool_result",
                "cancelled: the turn ended (user_abort) before this tool call returned",
            ),
        ]
        assert entries[3].item.is_error
        assert unanswered_calls([e.item for e in entries]) == []
        # The next turn's model call is valid: every call has its result.
        assert (await (await engine.submit(SubmitRequest(KEY, "again"))).outcome).reply

    events = harness(tmp_path, model, tools).run(scenario)
    assert tools.ended() == [("quick", "returned"), ("stuck", "cancelled")]
    assert [e.kind for e in events].count(EventKind.ENDED) == 2


def test_a_message_steered_during_a_tool_call_reaches_the_next_model_step(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("search", latency_s=5.0)])
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "search", "trips")))], then=Call(reply="Lisbon it is")
    )

    async def scenario(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "plan a trip"))
        await asyncio.sleep(1.0)
        steer = await engine.submit(SubmitRequest(KEY, "make it Lisbon", mode=QueueMode.STEER))
        one, two = await first.outcome, await steer.outcome
        assert one.reply == two.reply == "Lisbon it is"
        assert two.merged
        assert two.run_id == first.turn_id
        assert shape(await transcript(engine)) == [
            ("user", "plan a trip"),
            ("tool_calls", "c1"),
            ("tool_result", 'search: {"q": "trips"}'),
            ("user", "make it Lisbon"),
            ("assistant", "Lisbon it is"),
        ]

    harness(tmp_path, model, tools).run(scenario)
    assert [m.content for m in model.requests[1].messages][-1] == "make it Lisbon"


def test_a_message_steered_during_the_final_step_runs_as_a_follow_up(tmp_path: Path) -> None:
    model = ScriptedModel(then=Call(latency_s=2.0))

    async def scenario(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "plan a trip"))
        await asyncio.sleep(1.0)
        steer = await engine.submit(SubmitRequest(KEY, "make it Lisbon", mode=QueueMode.STEER))
        one, two = await first.outcome, await steer.outcome
        assert (one.reply, two.reply) == ("echo: plan a trip", "echo: make it Lisbon")
        assert not two.merged
        assert engine.clock.now() == 4.0

    harness(tmp_path, model, FakeTools([])).run(scenario)


def test_max_steps_fails_the_turn_and_keeps_its_steps(tmp_path: Path) -> None:
    tools = FakeTools([FakeTool("again")])
    model = ScriptedModel(then=Call(reply="", tool_calls=ask(("c", "again", "x"))))

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "loop"))).outcome
        assert (outcome.state, outcome.code) == (TurnState.FAILED, ErrorCode.MAX_STEPS)
        assert "still calling tools after 4 model steps (max_steps)" in outcome.message
        entries = await transcript(engine)
        assert [e.kind for e in entries].count(EntryKind.TOOL_RESULT) == 4
        assert unanswered_calls([e.item for e in entries]) == []

    harness(tmp_path, model, tools).run(scenario)
    assert model.calls == 4


def test_a_long_tool_loop_renews_its_lease_and_one_that_stops_progressing_is_reaped(
    tmp_path: Path,
) -> None:
    # Each step: 4 s of model, 6 s of tool; 3 steps take 30 s, three times the stall timeout.
    tools = FakeTools([FakeTool("work", latency_s=6.0)])
    step = Call(reply="", tool_calls=ask(("c", "work", "x")), latency_s=4.0)
    model = ScriptedModel([step, step, step, Call(hang=True)])

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "work"))).outcome
        assert (outcome.state, outcome.code) == (TurnState.ABORTED, ErrorCode.STALLED)
        assert engine.clock.now() == 30.0 + 10.0  # no progress in step 4 for 10 s
        entries = await transcript(engine)
        assert [e.kind for e in entries].count(EntryKind.TOOL_RESULT) == 3

    harness(tmp_path, model, tools, stall_timeout_s=10.0, abort_grace_s=1.0).run(scenario)


def test_a_tool_call_longer_than_the_stall_timeout_runs_to_its_own_deadline(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("build", latency_s=25.0)], call_timeout_s=60.0)
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c", "build", "x")))], then=Call(reply="built")
    )

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "build it"))).outcome
        assert (outcome.state, outcome.reply) == (TurnState.REPLIED, "built")

    harness(tmp_path, model, tools, stall_timeout_s=10.0).run(scenario)


def test_a_wedged_tool_stops_renewing_at_its_deadline_and_its_late_result_is_refused(
    tmp_path: Path,
) -> None:
    # The tool swallows cancellation for 100 s: its 5 s deadline cannot stop it.
    tools = FakeTools([FakeTool("wedged", wedged_s=100.0)], call_timeout_s=5.0)
    model = ScriptedModel([Call(reply="", tool_calls=ask(("c", "wedged", "x")))])

    async def scenario(engine: Engine) -> None:
        outcome = await (await engine.submit(SubmitRequest(KEY, "go"))).outcome
        assert (outcome.state, outcome.code) == (TurnState.ABORTED, ErrorCode.STALLED)
        # Renewed until 5 s + 5 s of grace (the last at 6.67 s), then 10 s of stall timeout
        # and 1 s of abort grace: fenced.
        assert 15.0 <= engine.clock.now() <= 21.0
        await asyncio.sleep(120.0)  # the tool returns; its run's write is refused
        entries = await transcript(engine)
        assert [e.kind for e in entries].count(EntryKind.TOOL_RESULT) == 1
        assert entries[-1].text.startswith("cancelled: the turn ended (stalled)")

    events = harness(tmp_path, model, tools, stall_timeout_s=10.0, abort_grace_s=1.0).run(scenario)
    assert [e.kind for e in events].count(EventKind.STEP_REFUSED) == 1


def test_after_a_crash_mid_tool_the_call_is_closed_and_the_turn_resumes_without_repeating_itself(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("slow", latency_s=50.0)])
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "slow", "x")))], then=Call(reply="done after all")
    )
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    first = harness(tmp_path, model, tools)

    async def main() -> str:
        async with first.engine() as engine:
            ticket = await engine.submit(SubmitRequest(KEY, "long job"))
            await asyncio.sleep(10.0)
            # The file as a crash now would leave it: everything committed so far.
            backup = sqlite3.connect(crashed / DB_NAME)
            engine.store.db.backup(backup)  # type: ignore[attr-defined]
            backup.close()
            await engine.abort(KEY)
            await ticket.outcome
        second = harness(crashed, model, tools)
        async with second.engine() as engine:
            await asyncio.sleep(60.0)
            turns = await engine.store.session_turns(str(KEY), 10)
            assert [(t.state, t.attempts) for t in turns] == [(TurnState.REPLIED, 1)]
            assert shape(await transcript(engine)) == [
                ("user", "long job"),
                ("tool_calls", "c1"),
                ("tool_result", INTERRUPTED_CALL_RESULT),
                ("assistant", "done after all"),
            ]
            return turns[0].reply or ""

    assert run_virtual(main()) == "done after all"
    shutil.rmtree(crashed)


def test_a_tool_run_reports_the_usage_of_all_its_model_steps_and_stores_it(
    tmp_path: Path,
) -> None:
    tools = FakeTools([FakeTool("search")])
    metered = {"usage": lambda request, reply: (len(request.messages), len(reply))}
    model = ScriptedModel(
        [Call(reply="", tool_calls=ask(("c1", "search", "x")), **metered)],  # type: ignore[arg-type]
        then=Call(reply="found", **metered),  # type: ignore[arg-type]
    )

    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "find it"))
        outcome = await ticket.outcome
        # Step 1: 1 message, no text; step 2: 3 messages (user, calls, result), "found".
        assert outcome.usage == Usage(1 + 3, len("found"))
        stored = await engine.store.get_turn(ticket.turn_id)
        assert stored is not None
        assert stored.outcome() == outcome

    harness(tmp_path, model, tools).run(scenario)


def test_a_message_steered_during_the_last_step_runs_on_its_own(tmp_path: Path) -> None:
    tools = FakeTools([FakeTool("again", latency_s=1.0)])
    step = Call(reply="", tool_calls=ask(("c", "again", "x")))
    model = ScriptedModel([step] * 4, then=Call())

    async def scenario(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "loop"))
        await asyncio.sleep(3.5)  # during step 4's tool call: max_steps is 4
        steer = await engine.submit(SubmitRequest(KEY, "then this", mode=QueueMode.STEER))
        one, two = await first.outcome, await steer.outcome
        assert (one.state, one.code) == (TurnState.FAILED, ErrorCode.MAX_STEPS)
        assert (two.state, two.reply) == (TurnState.REPLIED, "echo: then this")
        assert not two.merged

    harness(tmp_path, model, tools).run(scenario)
