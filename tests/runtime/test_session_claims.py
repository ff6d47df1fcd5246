"""Two engines on one store, as two gateway processes on one database: a session's turns run
in the process that holds its claim, wherever they were accepted; a process cut off from the
store past its claim loses its sessions to another, which resumes their turns, and its own
writes are refused from then on. On virtual time, exact and without sleeping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from tests.fake_models import Call, ScriptedModel
from turngate.core.keys import parse_session_key
from turngate.core.turn import Outcome, TurnState
from turngate.errors import StorageUnavailableError
from turngate.runtime.clock import LoopClock
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest, Ticket
from turngate.runtime.events import Event, EventBus, EventKind
from turngate.sim.loop import run_virtual
from turngate.store.base import Store, TurnRecord
from turngate.store.sqlite import SqliteStore

KEY = parse_session_key("agent:main:shared")
WALL_AT_ZERO = 1_800_000_000.0
TTL_S = 6.0
POLL_S = 0.5


class ProcessView:
    """One process's handle on a store shared with others: opening and closing it is the
    test's business (the database outlives the processes), and ``cut`` severs this process
    from it, as a network partition would (every call raises ``storage_unavailable``)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.cut = False

    async def open(self) -> None:
        """The test opened the store."""

    async def close(self) -> None:
        """The test closes the store."""

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not self.cut or not callable(attribute) or name in ("health", "notices"):
            return attribute

        async def refused(*args: object, **kwargs: object) -> None:
            raise StorageUnavailableError(f"process cut off from the store ({name})")

        return refused


def engine(name: str, view: ProcessView, model: ScriptedModel, events: list[Event]) -> Engine:
    bus = EventBus()
    bus.subscribe(events.append)
    settings = EngineSettings(process_name=name, claim_ttl_s=TTL_S, claim_poll_s=POLL_S)
    return Engine(
        cast(Store, view), model, settings=settings, clock=LoopClock(WALL_AT_ZERO), events=bus
    )


def kinds(events: list[Event], kind: EventKind) -> list[Event]:
    return [event for event in events if event.kind is kind]


async def submit(engine: Engine, message: str) -> Ticket:
    return await engine.submit(SubmitRequest(KEY, message, turn_id=message))


def test_a_turn_sent_to_another_process_is_run_by_the_holder_and_answered_where_sent(
    tmp_path: Path,
) -> None:
    a_events: list[Event] = []
    b_events: list[Event] = []
    outcomes: list[Outcome] = []

    async def main() -> None:
        store = SqliteStore(tmp_path / "shared.db")
        await store.open()
        try:
            a_model = ScriptedModel(then=Call(latency_s=1.0))
            b_model = ScriptedModel(then=Call(latency_s=1.0))
            async with (
                engine("a", ProcessView(store), a_model, a_events) as a,
                engine("b", ProcessView(store), b_model, b_events) as b,
            ):
                outcomes.append(await (await submit(a, "first")).wait())
                outcomes.append(await (await submit(b, "second")).wait())
                outcomes.append(await (await submit(a, "third")).wait())
                assert a.snapshot().sessions_held == 1
                assert b.snapshot().sessions_held == 0
        finally:
            await store.close()

    run_virtual(main())
    assert [(o.state, o.reply) for o in outcomes] == [
        (TurnState.REPLIED, "echo: first"),
        (TurnState.REPLIED, "echo: second"),
        (TurnState.REPLIED, "echo: third"),
    ]
    # Every turn ran in the process holding the session; "second" was handed to it.
    assert [e.turn_id for e in kinds(a_events, EventKind.STARTED)] == ["first", "second", "third"]
    assert kinds(b_events, EventKind.STARTED) == []
    assert [e.turn_id for e in kinds(b_events, EventKind.HANDED_OFF)] == ["second"]
    assert not [e for e in a_events + b_events if e.abnormal]


def test_a_process_cut_off_past_its_claim_loses_the_session_and_its_writes_are_refused(
    tmp_path: Path,
) -> None:
    a_events: list[Event] = []
    b_events: list[Event] = []
    seen: dict[str, Outcome] = {}
    stored: dict[str, tuple[TurnState, str | None, int]] = {}
    transcript: list[tuple[str, str]] = []

    async def main() -> None:
        store = SqliteStore(tmp_path / "shared.db")
        await store.open()
        try:
            # The cut-off process's model takes 30 s; the other's answers at once.
            a_model = ScriptedModel(then=Call(latency_s=30.0))
            b_model = ScriptedModel(then=Call(latency_s=None))
            a_view = ProcessView(store)
            async with (
                engine("a", a_view, a_model, a_events) as a,
                engine("b", ProcessView(store), b_model, b_events) as b,
            ):
                slow = await submit(a, "slow")
                await asyncio.sleep(0.1)  # virtual: a claimed the session and runs "slow"
                a_view.cut = True
                after = await submit(b, "after")  # handed to a, which cannot be told
                seen["after"] = await after.wait()
                await asyncio.sleep(30.0)  # a's run ends; its end waits for the store
                a_view.cut = False
                seen["slow"] = await slow.wait()
            for turn_id in ("slow", "after"):
                record = await store.get_turn(turn_id)
                assert record is not None
                stored[turn_id] = (record.state, record.reply, record.attempts)
            transcript.extend((e.kind.value, e.text) for e in await store.transcript(str(KEY), 100))
        finally:
            await store.close()

    run_virtual(main())
    # b took the session once a's claim expired, and ran both turns: each replied once.
    assert {k: (o.state, o.reply) for k, o in seen.items()} == {
        "after": (TurnState.REPLIED, "echo: after"),
        "slow": (TurnState.REPLIED, "echo: slow"),
    }
    assert stored == {
        "slow": (TurnState.REPLIED, "echo: slow", 1),
        "after": (TurnState.REPLIED, "echo: after", 0),
    }
    taken_at = kinds(b_events, EventKind.RECOVERED)[0].at
    assert TTL_S <= taken_at <= TTL_S + 2 * POLL_S
    assert [e.turn_id for e in kinds(b_events, EventKind.STARTED)] == ["slow", "after"]
    # a's run ended after it: its end was refused, and a let the session go.
    assert len(kinds(a_events, EventKind.STALE_WRITE_REFUSED)) == 1
    assert len(kinds(a_events, EventKind.SESSION_LOST)) == 1
    assert transcript == [
        ("user", "slow"),
        ("assistant", "echo: slow"),
        ("user", "after"),
        ("assistant", "echo: after"),
    ]


@pytest.mark.parametrize("name", ["a", "b"])
def test_a_restarted_process_takes_its_own_sessions_back_at_once(tmp_path: Path, name: str) -> None:
    """Under its own name at once; under another only once the claim expired."""
    events: list[Event] = []
    outcome: list[Outcome] = []

    async def main() -> None:
        store = SqliteStore(tmp_path / "shared.db")
        await store.open()
        try:
            await store.accept_turn(_record("left"))
            await store.claim_session(str(KEY), "a", WALL_AT_ZERO, TTL_S)
            model = ScriptedModel(then=Call(latency_s=None))
            async with engine(name, ProcessView(store), model, events) as restarted:
                ticket = await restarted.submit(SubmitRequest(KEY, "left", turn_id="left"))
                outcome.append(await ticket.wait())
        finally:
            await store.close()

    run_virtual(main())
    assert outcome[0].reply == "echo: left"
    started = kinds(events, EventKind.STARTED)[0].at
    if name == "a":
        assert started == 0.0
    else:
        assert TTL_S <= started <= TTL_S + 2 * POLL_S


def _record(turn_id: str) -> TurnRecord:
    return TurnRecord(
        turn_id=turn_id,
        session_key=str(KEY),
        agent_id="main",
        message=turn_id,
        queue_mode="followup",
        state=TurnState.ACCEPTED,
        accepted_wall=WALL_AT_ZERO,
        timeout_s=900.0,
    )
