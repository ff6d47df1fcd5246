"""The five field reports (../shared/seeds/), replayed against the real runtime on virtual
time, with the simulator's invariant checker watching every event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.transcript import EntryKind
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest
from turngate.runtime.events import Event, EventBus, EventKind
from turngate.runtime.owner import SessionOwner
from turngate.sim.checkers import Checker
from turngate.sim.loop import run_virtual
from turngate.sim.world import ignore_cancellation_for
from turngate.store.sqlite import SqliteStore

KEY = parse_session_key("agent:test:main")
WALL_AT_ZERO = 1_800_000_000.0
# Every test here runs on the virtual clock: these are scenario times, and cost nothing.
WEDGED_NAP_S = 3600.0
USER_AWAY_S = 60.0


class Model:
    """A model with a fixed latency; ``stuck`` calls never end and ignore cancellation."""

    name = "model"

    def __init__(self, latency_s: float, stuck: set[int] | None = None) -> None:
        self.latency_s = latency_s
        self.stuck = stuck or set()
        self.calls = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        self.calls += 1
        if self.calls in self.stuck:
            while True:  # a run whose cleanup never happens: it swallows every cancellation
                try:
                    await asyncio.sleep(WEDGED_NAP_S)
                except asyncio.CancelledError:
                    continue
        await asyncio.sleep(self.latency_s)
        yield TextDelta("reply to: " + request.messages[-1].content)
        yield Finish("stop")


Scenario = Callable[[Engine], Awaitable[None]]


def run(tmp_path: Path, model: Model, scenario: Scenario, **settings: float) -> list[Event]:
    """Run ``scenario`` on a fresh engine with the checker on; fail on any violation."""
    events: list[Event] = []

    async def main() -> None:
        store = SqliteStore(tmp_path / "turngate.db")
        bus = EventBus()
        grace = settings.get("abort_grace_s", 1.0)

        def lease_of(session_key: str) -> tuple[str | None, int]:
            row = store.db.execute(
                "SELECT lease_run_id, epoch FROM sessions WHERE key = ?", (session_key,)
            ).fetchone()
            return (None, 0) if row is None else (row[0], row[1])

        checker = Checker(grace, lease_of, WALL_AT_ZERO)
        bus.subscribe(events.append)
        bus.subscribe(checker.on_event)
        engine = Engine(
            store,
            model,
            settings=EngineSettings(abort_grace_s=grace, **settings),  # type: ignore[arg-type]
            clock=LoopClock(WALL_AT_ZERO),
            events=bus,
        )
        async with engine:
            await scenario(engine)
        assert checker.violations == []

    run_virtual(main())
    return events


async def send(engine: Engine, message: str, mode: QueueMode = QueueMode.FOLLOWUP) -> Outcome:
    ticket = await engine.submit(SubmitRequest(KEY, message, mode=mode))
    return await ticket.outcome


@pytest.mark.parametrize("latency_s", [0.0, 0.05, 0.3, 1.5, 2.6])
@pytest.mark.parametrize("gap_s", [0.0, 1.0])
def test_seeds_000_001_sequential_sends_all_get_real_replies(
    tmp_path: Path, latency_s: float, gap_s: float
) -> None:
    async def probe(engine: Engine) -> None:
        for index in range(1, 11):
            message = f"Reply containing literal: ok-{index}"
            outcome = await send(engine, message, QueueMode.REJECT)
            assert outcome.state is TurnState.REPLIED, outcome
            assert outcome.reply == f"reply to: {message}"
            await asyncio.sleep(gap_s)

    run(tmp_path, Model(latency_s), probe)


def test_seeds_000_001_a_send_on_the_tick_the_reply_arrives_is_served(tmp_path: Path) -> None:
    async def eager_client(engine: Engine) -> None:
        replies: list[str | None] = []
        for index in range(10):
            outcome = await send(engine, f"m{index}", QueueMode.REJECT)
            replies.append(outcome.reply)  # no await between the reply and the next send
        assert replies == [f"reply to: m{index}" for index in range(10)]
        assert engine.clock.now() == pytest.approx(10 * 0.05)

    run(tmp_path, Model(0.05), eager_client)


def test_seed_002_a_run_whose_cleanup_never_happens_frees_its_session_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def wedged(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "the wedged one"))
        await asyncio.sleep(USER_AWAY_S)  # virtual time: the user comes back later
        started = engine.clock.now()
        outcome = await send(engine, "anyone there?")
        assert outcome.reply == "reply to: anyone there?"
        assert engine.clock.now() - started <= 10.0
        stuck = await first.outcome
        assert (stuck.state, stuck.code) == (TurnState.ABORTED, ErrorCode.STALLED)

    with caplog.at_level(logging.WARNING, logger="turngate"):
        events = run(tmp_path, Model(0.1, stuck={1}), wedged, stall_timeout_s=10.0)
    [fenced] = [e for e in events if e.kind is EventKind.FENCED]
    assert fenced.at == 10.0 + 1.0
    assert any(
        str(KEY) in record.getMessage() and "fenced" in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
    )


def test_seed_003_lanes_and_a_recovery_never_run_two_turns_of_one_session(
    tmp_path: Path,
) -> None:
    async def two_lanes(engine: Engine) -> None:
        async def lane(name: str, count: int, pause_s: float) -> list[Outcome]:
            outcomes = []
            for index in range(count):
                ticket = await engine.submit(
                    SubmitRequest(KEY, f"{name}-{index}", lane=name, timeout_s=600.0)
                )
                outcomes.append(await ticket.outcome)
                await asyncio.sleep(pause_s)
            return outcomes

        channel, heartbeat = await asyncio.gather(
            lane("channel", 12, 0.3), lane("heartbeat", 4, 7.0)
        )
        ended = channel + heartbeat
        assert len(ended) == 16
        stalled = [o for o in ended if o.state is TurnState.ABORTED]
        assert [o.code for o in stalled] == [ErrorCode.STALLED]
        assert all(o.reply == f"reply to: {o.turn_id and ''}" or o.reply for o in ended if o.reply)
        transcript = await engine.store.transcript(str(KEY), 100)
        users = [e.text for e in transcript if e.kind is EntryKind.USER]
        assert len(users) == len(set(users)) == 15

    events = run(tmp_path, Model(0.5, stuck={3}), two_lanes, stall_timeout_s=5.0)
    acquired = [e for e in events if e.kind is EventKind.LEASE_ACQUIRED]
    assert [e.epoch for e in acquired] == list(range(1, 17))


def test_seed_004_a_callback_from_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    class LateModel(Model):
        async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
            self.calls += 1
            if self.calls == 1:
                await ignore_cancellation_for(30.0)  # swallows cancellation
                yield TextDelta("a reply nobody may see")
                yield Finish("stop")
                return
            async for event in super().stream(request):
                yield event

    async def closed_then_late(engine: Engine) -> None:
        late = await send(engine, "first")
        assert late.code is ErrorCode.STALLED
        assert (await send(engine, "second")).reply == "reply to: second"
        ignored = asyncio.Event()
        engine.events.subscribe(
            lambda e: ignored.set() if e.kind is EventKind.STALE_IGNORED else None
        )
        await ignored.wait()
        transcript = await engine.store.transcript(str(KEY), 10)
        assert [e.text for e in transcript] == ["second", "reply to: second"]
        record = await engine.store.get_turn(late.turn_id)
        assert record is not None
        assert record.outcome() == late

    events = run(tmp_path, LateModel(0.1), closed_then_late, stall_timeout_s=5.0)
    assert [e.at for e in events if e.kind is EventKind.STALE_IGNORED][-1] == 30.0


def test_seed_002_a_run_end_that_is_never_reported_still_frees_the_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The field report's lock leaked because a path skipped the cleanup. Skip ours for the
    # first run: it finishes, but nobody is ever told.
    reported = SessionOwner._run_exited
    skipped: list[str] = []

    def run_exited(self: SessionOwner, run_id: str, epoch: int, task: object) -> None:
        if not skipped:
            skipped.append(run_id)
            return
        reported(self, run_id, epoch, task)  # type: ignore[arg-type]

    monkeypatch.setattr(SessionOwner, "_run_exited", run_exited)

    async def leaked(engine: Engine) -> None:
        first = await engine.submit(SubmitRequest(KEY, "first"))
        second = await engine.submit(SubmitRequest(KEY, "second"))
        lost = await first.outcome
        assert (lost.state, lost.code) == (TurnState.ABORTED, ErrorCode.STALLED)
        # Its last progress (the reply, at 0.1 s) plus stall_timeout, plus the abort grace.
        assert engine.clock.now() == pytest.approx(0.1 + 10.0 + 1.0)
        assert (await second.outcome).reply == "reply to: second"
        assert engine.clock.now() == pytest.approx(0.1 + 10.0 + 1.0 + 0.1)

    with caplog.at_level(logging.WARNING, logger="turngate"):
        run(tmp_path, Model(0.1), leaked, stall_timeout_s=10.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fenced" in text and str(KEY) in text for text in warnings)
