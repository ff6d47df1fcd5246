"""The store contract: what every backend does, whatever it is built on (see the rules in
:mod:`turngate.store.base`). Each test runs against every backend in
``tests/store/backends.py``.

A turn moves only as the core's transition table says, in the store too: a write the table
forbids changes nothing. The lease is fenced by its epoch: only the run holding it may write,
and a run that lost it writes nothing.
"""

from __future__ import annotations

import pytest

from turngate.core.transcript import TranscriptItem
from turngate.core.turn import TERMINAL_STATES, Outcome, TurnState
from turngate.errors import ErrorCode, StaleEpochError
from turngate.store.base import Store, TurnRecord

KEY = "agent:main:contract"
OTHER = "agent:main:other"


def record(turn_id: str, key: str = KEY, message: str = "hi") -> TurnRecord:
    return TurnRecord(turn_id, key, "main", message, "followup", TurnState.ACCEPTED, 1.0, 60.0)


def outcome(turn_id: str, state: TurnState, run_id: str | None = None) -> Outcome:
    if state is TurnState.REPLIED:
        return Outcome(turn_id, state, run_id or turn_id, reply="ok")
    return Outcome(turn_id, state, run_id or turn_id, code=ErrorCode.INTERNAL, message="ended")


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


async def state_of(store: Store, turn_id: str) -> TurnState:
    found = await store.get_turn(turn_id)
    assert found is not None
    return found.state


@pytest.mark.asyncio
async def test_a_turn_is_stored_once_whatever_the_retries(store: Store) -> None:
    assert await store.accept_turn(record("t1")) is None
    again = await store.accept_turn(record("t1", message="a retry with other text"))
    assert again is not None
    assert again.message == "hi"
    assert await state_of(store, "t1") is TurnState.ACCEPTED
    assert await store.get_turn("nope") is None


@pytest.mark.asyncio
async def test_the_lease_is_taken_at_the_next_epoch_only_and_only_while_free(
    store: Store,
) -> None:
    await store.accept_turn(record("t1"))
    await store.accept_turn(record("t2"))
    with pytest.raises(StaleEpochError):
        await store.start_run(KEY, "t1", 2, ["t1"], at=2.0)  # not the next epoch
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0)
    assert await store.session_epoch(KEY) == 1
    with pytest.raises(StaleEpochError):
        await store.start_run(KEY, "t2", 2, ["t2"], at=3.0)  # held
    assert await state_of(store, "t2") is TurnState.ACCEPTED


@pytest.mark.asyncio
async def test_a_run_that_lost_its_lease_writes_nothing(store: Store) -> None:
    await store.accept_turn(record("t1"))
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0)
    done = [outcome("t1", TurnState.REPLIED)]
    exchange = [TranscriptItem.user("hi", "t1"), TranscriptItem.assistant("ok")]
    with pytest.raises(StaleEpochError):
        await store.end_run(KEY, "t1", 2, done, exchange, at=3.0)  # a stale epoch
    with pytest.raises(StaleEpochError):
        await store.write_steps(KEY, "zz", 1, exchange, at=3.0)  # not the holder
    assert await store.transcript(KEY, 10) == []
    assert await state_of(store, "t1") is TurnState.RUNNING
    await store.end_run(KEY, "t1", 1, done, exchange, at=3.0)
    assert [e.text for e in await store.transcript(KEY, 10)] == ["hi", "ok"]
    assert await state_of(store, "t1") is TurnState.REPLIED
    with pytest.raises(StaleEpochError):
        await store.end_run(KEY, "t1", 1, done, exchange, at=4.0)  # released already


@pytest.mark.asyncio
@pytest.mark.parametrize("end", sorted(TERMINAL_STATES))
async def test_a_terminal_turn_never_changes_again(store: Store, end: TurnState) -> None:
    await store.accept_turn(record("t1"))
    first = TurnState.REJECTED if end is TurnState.REJECTED else TurnState.FAILED
    await store.end_turns([outcome("t1", first)], at=2.0)
    await store.end_turns([outcome("t1", end)], at=3.0)
    assert await state_of(store, "t1") is first
    await store.mark_queued(["t1"])
    assert await state_of(store, "t1") is first


@pytest.mark.asyncio
async def test_a_turn_ends_only_as_the_transition_table_ends_it(store: Store) -> None:
    for turn_id in ("queued", "running", "accepted"):
        await store.accept_turn(record(turn_id, key=f"agent:main:{turn_id}"))
    await store.mark_queued(["queued"])
    await store.start_run("agent:main:running", "running", 1, ["running"], at=2.0)
    # Refused by the table: a reply before the run started; a busy refusal once it runs.
    await store.end_turns(
        [outcome("queued", TurnState.REPLIED), outcome("running", TurnState.REJECTED)], at=3.0
    )
    assert await state_of(store, "queued") is TurnState.QUEUED
    assert await state_of(store, "running") is TurnState.RUNNING
    # Allowed: a queued turn expires, a refused one is rejected as it is accepted.
    await store.end_turns(
        [outcome("queued", TurnState.EXPIRED), outcome("accepted", TurnState.REJECTED)], at=4.0
    )
    assert await state_of(store, "queued") is TurnState.EXPIRED
    assert await state_of(store, "accepted") is TurnState.REJECTED


@pytest.mark.asyncio
async def test_a_restarted_holder_reclaiming_its_session_requeues_the_running_turns_and_frees_it(
    store: Store,
) -> None:
    await store.accept_turn(record("t1"))
    await store.accept_turn(record("t2", key=OTHER))
    await store.claim_session(KEY, "local", at=1.0, ttl_s=10.0)
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0, holder="local")
    claimed = await store.claim_session(KEY, "local", at=5.0, ttl_s=10.0)
    assert claimed.taken
    assert [(t.turn_id, t.state, t.attempts, t.run_id) for t in claimed.open_turns] == [
        ("t1", TurnState.QUEUED, 1, "t1")
    ]
    assert await state_of(store, "t2") is TurnState.ACCEPTED  # another session: untouched
    # The session is free again, at the epoch the crashed run had: the next run takes 2.
    await store.start_run(KEY, "t1b", 2, ["t1"], at=6.0, holder="local")
    assert await state_of(store, "t1") is TurnState.RUNNING


@pytest.mark.asyncio
async def test_sessions_are_listed_most_recently_active_first(store: Store) -> None:
    for i, key in enumerate((KEY, OTHER)):
        await store.accept_turn(record(f"t{i}", key=key))
        await store.start_run(key, f"t{i}", 1, [f"t{i}"], at=2.0 + i)
        await store.end_run(key, f"t{i}", 1, [outcome(f"t{i}", TurnState.REPLIED)], [], at=3.0 + i)
    assert [s.key for s in await store.sessions(10)] == [OTHER, KEY]
    assert [s.key for s in await store.sessions(1, offset=1)] == [KEY]
    described = await store.session(KEY)
    assert described is not None
    assert (described.turns_total, described.lease_run_id) == (1, None)
    assert await store.count_sessions() == 2
    assert [t.turn_id for t in await store.session_turns(KEY, 10)] == ["t0"]
