"""Claims: which gateway process runs a session's turns (see the rules in
:mod:`turngate.store.base`). Each test runs against every backend in
``tests/store/backends.py``; a holder is only a name, so one store plays every process.

A session is taken when nobody holds it, by its own holder (an earlier life of it), or once
its claim expired; taking it ends what the previous holder left (its run fenced, its running
turns queued again, its open tool calls closed). A holder that lost a session writes nothing
more to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from turngate.core.transcript import ToolCall, TranscriptItem
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode, SessionTakenError, StaleEpochError
from turngate.store.base import (
    INTERRUPTED_CALL_RESULT,
    Claimed,
    DeliveryOrder,
    SessionClaim,
    Store,
    TurnRecord,
)

KEY = "agent:main:claims"
OTHER = "agent:main:other"
TTL = 10.0


def record(turn_id: str, key: str = KEY) -> TurnRecord:
    return TurnRecord(turn_id, key, "main", "hi", "followup", TurnState.ACCEPTED, 1.0, 60.0)


def expired(turn_id: str) -> Outcome:
    return Outcome(turn_id, TurnState.EXPIRED, turn_id, code=ErrorCode.TURN_EXPIRED, message="x")


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


async def turn(store: Store, turn_id: str) -> TurnRecord:
    found = await store.get_turn(turn_id)
    assert found is not None
    return found


def summary(turns: Sequence[TurnRecord]) -> list[tuple[object, ...]]:
    return [(t.turn_id, t.state, t.attempts, t.run_id) for t in turns]


@pytest.mark.asyncio
async def test_a_free_session_is_taken_with_its_open_turns_in_acceptance_order(
    store: Store,
) -> None:
    for turn_id in ("t1", "t2", "t3"):
        await store.accept_turn(record(turn_id))
    await store.accept_turn(record("o1", key=OTHER))
    await store.end_turns([expired("t2")], at=1.5)
    await store.mark_queued(["t3"])
    claimed = await store.claim_session(KEY, "a", at=2.0, ttl_s=TTL)
    assert (claimed.claim, claimed.taken) == (SessionClaim(KEY, "a", 12.0, 0), True)
    assert summary(claimed.open_turns) == [
        ("t1", TurnState.ACCEPTED, 0, None),
        ("t3", TurnState.QUEUED, 0, None),
    ]
    assert await store.session_claim(KEY) == SessionClaim(KEY, "a", 12.0, 0)
    assert await store.session_claim(OTHER) == SessionClaim(OTHER, None, None, 0)


@pytest.mark.asyncio
async def test_another_holder_is_refused_before_expiry_and_told_who_holds_it(
    store: Store,
) -> None:
    await store.accept_turn(record("t1"))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0, holder="a")
    refused = await store.claim_session(KEY, "b", at=10.9, ttl_s=TTL)
    assert refused == Claimed(SessionClaim(KEY, "a", 11.0, 1), taken=False)
    assert await store.session_claim(KEY) == SessionClaim(KEY, "a", 11.0, 1)
    running = await turn(store, "t1")
    assert (running.state, running.run_id) == (TurnState.RUNNING, "t1")


@pytest.mark.asyncio
async def test_a_takeover_at_expiry_requeues_the_running_turns_and_fences_the_old_run(
    store: Store,
) -> None:
    for turn_id in ("t1", "t2", "t3"):
        await store.accept_turn(record(turn_id))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0, holder="a")
    await store.join_run(KEY, "t2", "t1", 1, at=2.5)
    calls = TranscriptItem.calls([ToolCall("c1", "search", "{}"), ToolCall("c2", "fetch", "{}")])
    found = TranscriptItem.tool_result("c1", "search", "found")
    await store.write_steps(KEY, "t1", 1, [TranscriptItem.user("hi", "t1"), calls, found], at=3.0)

    claimed = await store.claim_session(KEY, "b", at=11.0, ttl_s=TTL)

    assert (claimed.claim, claimed.taken) == (SessionClaim(KEY, "b", 21.0, 1), True)
    assert summary(claimed.open_turns) == [
        ("t1", TurnState.QUEUED, 1, "t1"),
        ("t2", TurnState.QUEUED, 1, "t1"),
        ("t3", TurnState.ACCEPTED, 0, None),
    ]
    stored = await turn(store, "t1")
    # It keeps the run it was part of (to resume with that run's other turns), not its start.
    assert (stored.run_id, stored.epoch, stored.started_wall) == ("t1", None, None)
    session = await store.session(KEY)
    assert session is not None
    assert (session.epoch, session.lease_run_id, session.lease_granted_wall) == (1, None, None)
    closing = (await store.transcript(KEY, 10))[3:]
    assert [(e.item.call_id, e.text, e.item.is_error, e.at_wall) for e in closing] == [
        ("c2", INTERRUPTED_CALL_RESULT, True, 11.0)
    ]
    # The old run is fenced out; the new holder's run takes the next epoch.
    replied = [Outcome("t1", TurnState.REPLIED, "t1", reply="late")]
    with pytest.raises(StaleEpochError):
        await store.end_run(KEY, "t1", 1, replied, [TranscriptItem.assistant("late")], at=12.0)
    with pytest.raises(StaleEpochError):
        await store.write_steps(KEY, "t1", 1, [TranscriptItem.assistant("late")], at=12.0)
    await store.start_run(KEY, "r2", 2, ["t1", "t2"], at=13.0, holder="b")
    assert (await turn(store, "t1")).state is TurnState.RUNNING
    assert len(await store.transcript(KEY, 10)) == 4


@pytest.mark.asyncio
async def test_an_earlier_life_of_the_holder_reclaims_at_once(store: Store) -> None:
    await store.accept_turn(record("t1"))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.start_run(KEY, "t1", 1, ["t1"], at=2.0, holder="a")
    claimed = await store.claim_session(KEY, "a", at=3.0, ttl_s=TTL)
    assert (claimed.claim, claimed.taken) == (SessionClaim(KEY, "a", 13.0, 1), True)
    assert summary(claimed.open_turns) == [("t1", TurnState.QUEUED, 1, "t1")]
    await store.start_run(KEY, "r2", 2, ["t1"], at=4.0, holder="a")


@pytest.mark.asyncio
async def test_renewal_extends_only_the_claims_still_held(store: Store) -> None:
    for key in (KEY, OTHER):
        await store.accept_turn(record(key, key=key))
        await store.claim_session(key, "a", at=1.0, ttl_s=TTL)
    await store.claim_session(OTHER, "b", at=11.0, ttl_s=TTL)  # a's claim expired: b takes it
    # KEY expired too, but nobody took it: it is still a's.
    held = await store.renew_claims("a", [KEY, OTHER, "agent:main:nobody"], at=12.0, ttl_s=TTL)
    assert held == {KEY}
    assert await store.session_claim(KEY) == SessionClaim(KEY, "a", 22.0, 0)
    assert await store.session_claim(OTHER) == SessionClaim(OTHER, "b", 21.0, 0)
    assert await store.renew_claims("a", [], at=13.0, ttl_s=TTL) == set()


@pytest.mark.asyncio
async def test_a_released_session_may_be_taken_by_another_at_once(store: Store) -> None:
    await store.accept_turn(record("t1"))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.release_claims("b", [KEY])  # not b's to release
    assert await store.session_claim(KEY) == SessionClaim(KEY, "a", 11.0, 0)
    await store.release_claims("a", [KEY, "agent:main:nobody"])
    await store.release_claims("a", [])
    assert await store.session_claim(KEY) == SessionClaim(KEY, None, None, 0)
    claimed = await store.claim_session(KEY, "b", at=2.0, ttl_s=TTL)
    assert (claimed.claim, claimed.taken) == (SessionClaim(KEY, "b", 12.0, 0), True)


@pytest.mark.asyncio
async def test_a_holder_that_lost_the_session_starts_no_run(store: Store) -> None:
    await store.accept_turn(record("t1"))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.claim_session(KEY, "b", at=11.0, ttl_s=TTL)
    with pytest.raises(SessionTakenError) as refused:
        await store.start_run(KEY, "t1", 1, ["t1"], at=12.0, holder="a")
    assert (refused.value.session_key, refused.value.holder) == (KEY, "a")
    assert isinstance(refused.value, StaleEpochError)
    assert (await turn(store, "t1")).state is TurnState.ACCEPTED
    assert await store.session_epoch(KEY) == 0
    # The holder at a stale epoch is refused for the epoch, not the claim.
    with pytest.raises(StaleEpochError) as stale:
        await store.start_run(KEY, "t1", 2, ["t1"], at=12.0, holder="b")
    assert not isinstance(stale.value, SessionTakenError)
    await store.start_run(KEY, "t1", 1, ["t1"], at=12.0, holder="b")


@pytest.mark.asyncio
async def test_a_holder_that_lost_a_session_ends_none_of_the_turns_given(store: Store) -> None:
    await store.accept_turn(record("t1"))
    await store.accept_turn(record("o1", key=OTHER))
    await store.claim_session(KEY, "a", at=1.0, ttl_s=TTL)
    await store.claim_session(OTHER, "a", at=1.0, ttl_s=TTL)
    await store.renew_claims("a", [KEY], at=11.0, ttl_s=TTL)
    await store.claim_session(OTHER, "b", at=11.0, ttl_s=TTL)
    notice = DeliveryOrder("notice:t1", KEY, "t1", "telegram", "chat-1", "expired")
    with pytest.raises(SessionTakenError) as refused:
        await store.end_turns([expired("t1"), expired("o1")], at=12.0, orders=[notice], holder="a")
    assert (refused.value.session_key, refused.value.holder) == (OTHER, "a")
    assert (await turn(store, "t1")).state is TurnState.ACCEPTED
    assert (await turn(store, "o1")).state is TurnState.ACCEPTED
    assert await store.outbox.of_session(KEY, 10) == []
    await store.end_turns([expired("t1")], at=13.0, orders=[notice], holder="a")
    assert (await turn(store, "t1")).state is TurnState.EXPIRED
    assert [d.order for d in await store.outbox.of_session(KEY, 10)] == [notice]


@pytest.mark.asyncio
async def test_claimable_sessions_are_free_own_or_expired_ones_with_open_turns_oldest_first(
    store: Store,
) -> None:
    free, own, live, lapsed, done = (f"agent:main:{name}" for name in "abcde")
    for turn_id, key in (
        ("f1", free),
        ("x1", live),
        ("o1", own),
        ("e1", lapsed),
        ("f2", free),
        ("d1", done),
    ):
        await store.accept_turn(record(turn_id, key=key))
    await store.end_turns([expired("d1")], at=1.0)
    await store.claim_session(own, "a", at=1.0, ttl_s=100.0)
    await store.claim_session(live, "b", at=1.0, ttl_s=100.0)
    await store.claim_session(lapsed, "b", at=1.0, ttl_s=4.0)
    everything = await store.claimable("a", at=10.0, limit=100)
    assert list(everything.items()) == [(free, ["f1", "f2"]), (own, ["o1"]), (lapsed, ["e1"])]
    oldest = await store.claimable("a", at=10.0, limit=2)
    assert list(oldest.items()) == [(free, ["f1"]), (own, ["o1"])]
    assert list(await store.claimable("b", at=3.0, limit=100)) == [free, live, lapsed]


@pytest.mark.asyncio
async def test_turns_are_read_by_id_and_a_sessions_open_ones_in_acceptance_order(
    store: Store,
) -> None:
    for turn_id in ("t1", "t2", "t3"):
        await store.accept_turn(record(turn_id))
    await store.end_turns([expired("t2")], at=2.0)
    found = await store.get_turns(["t3", "t1", "nope"])
    assert sorted((t.turn_id, t.state) for t in found) == [
        ("t1", TurnState.ACCEPTED),
        ("t3", TurnState.ACCEPTED),
    ]
    assert await store.get_turns([]) == []
    assert [t.turn_id for t in await store.open_turns(KEY)] == ["t1", "t3"]
    assert await store.open_turns(OTHER) == []


@pytest.mark.asyncio
async def test_a_session_the_store_does_not_know_is_not_taken(store: Store) -> None:
    claimed = await store.claim_session(OTHER, "a", at=1.0, ttl_s=TTL)
    assert claimed == Claimed(SessionClaim(OTHER, None, None, 0), taken=False)
    assert await store.session_claim(OTHER) is None
    assert await store.renew_claims("a", [OTHER], at=2.0, ttl_s=TTL) == set()


@pytest.mark.asyncio
async def test_a_singleton_is_held_by_one_process_until_it_expires_or_is_released(
    store: Store,
) -> None:
    name = "channel:tg"
    assert await store.hold_singleton(name, "a", at=1.0, ttl_s=TTL)
    assert not await store.hold_singleton(name, "b", at=2.0, ttl_s=TTL)
    assert await store.hold_singleton(name, "a", at=9.0, ttl_s=TTL)  # renewed until 19
    assert not await store.hold_singleton(name, "b", at=18.9, ttl_s=TTL)
    assert await store.hold_singleton(name, "b", at=19.0, ttl_s=TTL)  # a's expired
    assert not await store.hold_singleton(name, "a", at=20.0, ttl_s=TTL)
    await store.release_singleton(name, "a")  # not a's: nothing happens
    assert not await store.hold_singleton(name, "a", at=20.0, ttl_s=TTL)
    await store.release_singleton(name, "b")
    assert await store.hold_singleton(name, "a", at=20.0, ttl_s=TTL)
    assert await store.hold_singleton("channel:other", "b", at=20.0, ttl_s=TTL)
