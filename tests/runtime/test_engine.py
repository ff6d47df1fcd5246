"""The real runtime on a virtual clock: exact times, no sleeping, same result every run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.fake_models import Call, ScriptedModel, echo_last
from tests.harness import EngineHarness, Scenario
from tests.support import TOOL_EXCHANGE, store_exchange
from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, IdempotencyConflictError, StorageUnavailableError
from turngate.providers.base import ChatMessage, ToolCallDelta
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest
from turngate.runtime.events import Event, EventKind
from turngate.store.sqlite import SqliteStore

KEY = parse_session_key("agent:main:main")


def run_engine(
    tmp_path: Path, provider: ScriptedModel, scenario: Scenario, **settings: Any
) -> list[Event]:
    """Run ``scenario`` against a fresh engine on the virtual clock; return its events."""
    return EngineHarness(tmp_path, provider, EngineSettings(**settings)).run(scenario)


def echo_after(latency_s: float = 0.0) -> ScriptedModel:
    """Echoes every message after ``latency_s``, in 3 deltas; like the echo provider, it
    does not wait at all when the latency is 0."""
    return ScriptedModel(then=Call(latency_s=latency_s or None))


async def send(engine: Engine, message: str, **fields: object) -> Outcome:
    ticket = await engine.submit(SubmitRequest(KEY, message, **fields))  # type: ignore[arg-type]
    return await ticket.outcome


def at(events: list[Event], kind: EventKind, turn_id: str | None = None) -> list[float]:
    return [e.at for e in events if e.kind is kind and (turn_id is None or e.turn_id == turn_id)]


@pytest.mark.parametrize("latency_s", [0.0, 0.05, 0.3, 2.5])
def test_sequential_sends_each_get_their_own_real_reply(tmp_path: Path, latency_s: float) -> None:
    async def scenario(engine: Engine) -> None:
        for index in range(10):
            outcome = await send(engine, f"ok-{index}")
            assert outcome.state is TurnState.REPLIED
            assert outcome.reply == f"echo: ok-{index}"
            assert engine.clock.now() == pytest.approx((index + 1) * latency_s)

    events = run_engine(tmp_path, echo_after(latency_s), scenario)
    assert not [e for e in events if e.abnormal]


def test_a_send_in_the_same_tick_as_the_previous_reply_is_never_refused(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "one", mode=QueueMode.REJECT))
        # Send the next one from a callback on the very future that delivers the reply.
        second: asyncio.Future[asyncio.Task[Outcome]] = asyncio.get_running_loop().create_future()
        first.outcome.add_done_callback(
            lambda _: second.set_result(
                asyncio.ensure_future(send(engine, "two", mode=QueueMode.REJECT))
            )
        )
        assert (await first.outcome).reply == "echo: one"
        assert (await (await second)).reply == "echo: two"

    run_engine(tmp_path, echo_after(0.05), scenario)


def test_the_session_is_released_in_the_store_before_the_outcome_is_delivered(
    tmp_path: Path,
) -> None:
    released_at_delivery: list[bool] = []

    async def scenario(engine: Engine) -> None:
        store = engine.store
        assert isinstance(store, SqliteStore)

        def check(event: Event) -> None:
            if event.kind is EventKind.DELIVERED:
                row = store.db.execute(
                    "SELECT lease_run_id FROM sessions WHERE key = ?", (event.session_key,)
                ).fetchone()
                released_at_delivery.append(row[0] != event.run_id)

        engine.events.subscribe(check)
        await asyncio.gather(*(send(engine, f"m{i}") for i in range(5)))

    run_engine(tmp_path, echo_after(0.1), scenario)
    assert released_at_delivery == [True] * 5


def test_a_stalled_run_is_aborted_at_stall_timeout_and_the_next_turn_is_served(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        stuck = await engine.submit(SubmitRequest(KEY, "stuck"))
        nxt = await engine.submit(SubmitRequest(KEY, "next"))
        aborted = await stuck.outcome
        assert (aborted.state, aborted.code) == (TurnState.ABORTED, ErrorCode.STALLED)
        assert engine.clock.now() == 5.0
        replied = await nxt.outcome
        assert replied.reply == "echo: next"
        assert engine.clock.now() == 5.5

    events = run_engine(
        tmp_path,
        ScriptedModel([Call(hang=True)], then=Call(latency_s=0.5)),
        scenario,
        stall_timeout_s=5.0,
    )
    [cancel] = [e for e in events if e.kind is EventKind.CANCEL_REQUESTED]
    assert (cancel.at, cancel.code, cancel.session_key) == (5.0, ErrorCode.STALLED, str(KEY))


def test_a_run_that_ignores_cancellation_is_fenced_and_its_late_result_ignored(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        ignored = asyncio.Event()
        engine.events.subscribe(
            lambda e: ignored.set() if e.kind is EventKind.STALE_IGNORED else None
        )
        zombie = await engine.submit(SubmitRequest(KEY, "zombie"))
        nxt = await engine.submit(SubmitRequest(KEY, "next"))
        aborted = await zombie.outcome
        assert aborted.code is ErrorCode.STALLED
        assert "fenced" in aborted.message
        assert engine.clock.now() == 5.0 + 1.0
        assert (await nxt.outcome).reply == "echo: next"
        await ignored.wait()
        transcript = await engine.store.transcript(str(KEY), 10)
        assert [e.text for e in transcript] == ["next", "echo: next"]

    events = run_engine(
        tmp_path,
        ScriptedModel(
            [Call(reply="too late", chunks=1, ignore_cancel_s=30.0)],
            then=Call(reply=echo_last, chunks=1),
        ),
        scenario,
        stall_timeout_s=5.0,
        abort_grace_s=1.0,
    )
    [fenced] = [e for e in events if e.kind is EventKind.FENCED]
    ignored = [e for e in events if e.kind is EventKind.STALE_IGNORED]
    assert fenced.at == 6.0
    assert {(e.at, e.run_id, e.epoch) for e in ignored} == {(30.0, fenced.run_id, 1)}


def test_a_retried_send_gets_the_first_outcome_and_never_a_second_run(tmp_path: Path) -> None:
    provider = echo_after(1.0)

    async def scenario(engine: Engine) -> None:
        first, again = await asyncio.gather(
            send(engine, "hello", turn_id="key-1"), send(engine, "hello", turn_id="key-1")
        )
        later = await send(engine, "hello", turn_id="key-1")
        assert first == again == later
        assert first.turn_id == "key-1"
        with pytest.raises(IdempotencyConflictError, match="key-1"):
            await engine.submit(SubmitRequest(KEY, "different", turn_id="key-1"))

    run_engine(tmp_path, provider, scenario)
    assert len(provider.requests) == 1


def test_each_turn_sends_the_bounded_transcript_to_the_provider(tmp_path: Path) -> None:
    provider = echo_after()

    async def scenario(engine: Engine) -> None:
        for index in range(5):
            await send(engine, f"m{index}")

    run_engine(tmp_path, provider, scenario, history_entries_max=4)
    last = provider.requests[-1].messages
    assert [(m.role, m.content) for m in last] == [
        ("user", "m2"),
        ("assistant", "echo: m2"),
        ("user", "m3"),
        ("assistant", "echo: m3"),
        ("user", "m4"),
    ]


def test_turns_left_open_by_a_stop_resume_on_the_next_start(tmp_path: Path) -> None:
    ids: list[str] = []

    async def first_life(engine: Engine) -> None:
        started = asyncio.Event()
        engine.events.subscribe(lambda e: started.set() if e.kind is EventKind.STARTED else None)
        for index in range(3):
            ticket = await engine.submit(SubmitRequest(KEY, f"m{index}"))
            ids.append(ticket.turn_id)
        await started.wait()  # stop while the first run is in flight
        assert engine.clock.now() < 10.0

    async def second_life(engine: Engine) -> None:
        for turn_id, index in zip(ids, range(3), strict=True):
            outcome = await send(engine, f"m{index}", turn_id=turn_id)
            assert outcome.reply == f"echo: m{index}"
        record = await engine.store.get_turn(ids[0])
        assert record is not None
        assert record.attempts == 1

    run_engine(tmp_path, echo_after(10.0), first_life)
    events = run_engine(tmp_path, echo_after(0.1), second_life)
    started = [e.turn_id for e in events if e.kind is EventKind.STARTED]
    assert started == ids


def test_a_turn_waiting_behind_a_slow_one_expires_at_its_own_deadline(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        slow = await engine.submit(SubmitRequest(KEY, "slow"))
        hurried = await engine.submit(SubmitRequest(KEY, "hurried", timeout_s=2.0))
        expired = await hurried.outcome
        assert (expired.state, expired.code) == (TurnState.EXPIRED, ErrorCode.TURN_EXPIRED)
        assert engine.clock.now() == 2.0
        assert (await slow.outcome).state is TurnState.REPLIED

    run_engine(tmp_path, echo_after(3.0), scenario)


def test_a_free_session_starts_its_next_turn_without_delay(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        await asyncio.gather(*(send(engine, f"m{i}") for i in range(20)))

    events = run_engine(tmp_path, echo_after(0.2), scenario)
    waits = [e.ready_wait_s for e in events if e.kind is EventKind.STARTED]
    assert len(waits) == 20
    assert max(w for w in waits if w is not None) == 0.0


def test_a_streaming_client_receives_the_reply_as_deltas_then_the_outcome(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "hello there", stream=True))
        assert ticket.deltas is not None
        chunks = [text async for _, text in ticket.deltas if isinstance(text, str)]
        outcome = await ticket.outcome
        assert len(chunks) == 3
        assert "".join(chunks) == outcome.reply == "echo: hello there"
        again = await engine.submit(
            SubmitRequest(KEY, "hello there", turn_id=ticket.turn_id, stream=True)
        )
        assert again.deltas is not None
        assert [text async for _, text in again.deltas] == []
        assert (await again.outcome).reply == "echo: hello there"

    run_engine(tmp_path, echo_after(0.1), scenario)


def test_deltas_streamed_faster_than_the_owner_takes_them_reach_the_client_joined(
    tmp_path: Path,
) -> None:
    """A model whose deltas come all at once (no pause between them) renews its lease once
    and reaches a streaming client in one delta, whole."""

    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "hello there", stream=True))
        assert ticket.deltas is not None
        chunks = [text async for _, text in ticket.deltas if isinstance(text, str)]
        assert chunks == ["echo: hello there"]
        assert (await ticket.outcome).reply == "echo: hello there"

    model = ScriptedModel(then=Call(latency_s=0.1, chunks=3, interval_s=None))
    run_engine(tmp_path, model, scenario)


@pytest.mark.parametrize(
    ("history_entries_max", "history"),
    [
        (
            10,
            [
                ChatMessage("user", "weather in Lisbon?"),
                ChatMessage("assistant", "Let me look.", tool_calls=TOOL_EXCHANGE[2].tool_calls),
                ChatMessage.tool_result("c1", "weather", "sunny, 24°C"),
                ChatMessage.tool_result("c2", "forecast", "arguments are not JSON", is_error=True),
                ChatMessage("assistant", "Sunny, 24°C."),
            ],
        ),
        # The bound keeps both results but not their calls: the results are not sent.
        (3, [ChatMessage("assistant", "Sunny, 24°C.")]),
    ],
)
def test_a_run_sends_the_stored_tool_calls_and_results_back_to_the_model(
    tmp_path: Path, history_entries_max: int, history: list[ChatMessage]
) -> None:
    asyncio.run(store_exchange(tmp_path, str(KEY), TOOL_EXCHANGE, at=0.0))
    provider = echo_after(0.1)

    async def scenario(engine: Engine) -> None:
        assert (await send(engine, "thanks")).reply == "echo: thanks"

    run_engine(tmp_path, provider, scenario, history_entries_max=history_entries_max)
    [request] = provider.requests
    assert list(request.messages) == [*history, ChatMessage("user", "thanks")]


def test_a_turn_whose_provider_reports_no_usage_has_none(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        ticket = await engine.submit(SubmitRequest(KEY, "hi"))
        outcome = await ticket.outcome
        assert outcome.reply == "echo: hi"
        assert outcome.usage is None
        stored = await engine.store.get_turn(ticket.turn_id)
        assert stored is not None
        assert stored.outcome() == outcome

    run_engine(tmp_path, echo_after(0.1), scenario)


def test_a_model_that_calls_a_tool_when_none_are_offered_fails_the_turn(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        outcome = await send(engine, "look it up")
        assert (outcome.state, outcome.code) == (TurnState.FAILED, ErrorCode.BAD_RESPONSE)
        assert outcome.message == (
            "session agent:main:main: scripted: the model called a tool, but no tools are offered"
        )
        assert await engine.store.transcript(str(KEY), 10) == []

    lookup = ToolCallDelta(0, "call_1", "lookup", '{"q": "it"}')
    run_engine(tmp_path, ScriptedModel(then=Call(tool_calls=(lookup,))), scenario)


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 4, 5])
def test_a_submit_cancelled_while_its_turn_is_being_stored_still_gets_the_turn_run_once(
    tmp_path: Path, yields: int
) -> None:
    # A channel's connection ends while its accept waits for the commit: the platform sends
    # the message again. The turn must run (once), and the redelivery must get its outcome.
    async def scenario(engine: Engine) -> None:
        request = SubmitRequest(KEY, "hello", turn_id="dc:1001")
        first = asyncio.ensure_future(engine.submit(request))
        for _ in range(yields):
            await asyncio.sleep(0)
        assert first.cancel()  # still storing
        with pytest.raises(asyncio.CancelledError):
            await first
        again = await engine.submit(request)
        outcome = await again.outcome
        assert (outcome.state, outcome.reply) == (TurnState.REPLIED, "echo: hello")
        [turn] = await engine.store.session_turns(str(KEY), 10)
        assert turn.state is TurnState.REPLIED

    events = run_engine(tmp_path, echo_after(0.1), scenario)
    assert len([e for e in events if e.kind is EventKind.STARTED]) == 1


def test_a_run_whose_history_cannot_be_read_yet_waits_for_storage_and_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restarting while a run starts: its transcript read fails twice, is tried
    again, and the turn gets its real reply, not a failure."""
    original = SqliteStore.transcript
    failures = 2

    async def flaky(self: SqliteStore, session_key: str, limit: int) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise StorageUnavailableError("storage test: the database is restarting")
        return await original(self, session_key, limit)

    monkeypatch.setattr(SqliteStore, "transcript", flaky)

    async def scenario(engine: Engine) -> None:
        outcome = await send(engine, "hello")
        assert (outcome.state, outcome.reply) == (TurnState.REPLIED, "echo: hello")

    events = run_engine(tmp_path, echo_after(0.0), scenario)
    failed = [e for e in events if e.kind is EventKind.STORAGE_FAILED]
    assert len(failed) == 2
    assert all("read the session's transcript" in e.detail for e in failed)
