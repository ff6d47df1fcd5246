"""The outbox, in every store: a message owed to a chat platform is written with the end
of its turn or not at all, sent in order, resumed where it stopped, and ends once."""

from __future__ import annotations

import pytest

from turngate.core.turn import Outcome, TurnState
from turngate.errors import StaleEpochError
from turngate.store.base import DeliveryOrder, DeliveryState, Store, TurnRecord

KEY = "agent:main:tg:direct:42"


def order(run_id: str, text: str = "hello", channel: str = "tg") -> DeliveryOrder:
    return DeliveryOrder(f"reply:{run_id}", KEY, run_id, channel, "42", text)


async def replied(store: Store, turn_id: str, epoch: int, *orders: DeliveryOrder) -> None:
    """Accept ``turn_id``, run it at ``epoch`` and end it replied, owing ``orders``."""
    await store.accept_turn(
        TurnRecord(turn_id, KEY, "main", f"m-{turn_id}", "followup", TurnState.ACCEPTED, 1.0, 60)
    )
    await store.start_run(KEY, turn_id, epoch, [turn_id], at=2.0)
    outcome = Outcome(turn_id, TurnState.REPLIED, turn_id, reply=f"r-{turn_id}")
    await store.end_run(KEY, turn_id, epoch, [outcome], [], at=3.0, orders=orders)


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store


@pytest.mark.asyncio
async def test_a_reply_owed_to_a_platform_is_pending_once_its_turn_has_ended(
    store: Store,
) -> None:
    await replied(store, "t1", 1, order("t1"))
    [pending] = await store.outbox.pending("tg", 10)
    assert (pending.order, pending.state, pending.parts_sent, pending.attempts) == (
        order("t1"),
        DeliveryState.PENDING,
        0,
        0,
    )
    assert pending.next_attempt_wall == pending.created_wall == 3.0
    assert await store.outbox.pending("other-channel", 10) == []


@pytest.mark.asyncio
async def test_a_stale_end_owes_nothing(store: Store) -> None:
    await replied(store, "t1", 1)
    outcome = Outcome("t1", TurnState.REPLIED, "t1", reply="late")
    with pytest.raises(StaleEpochError):
        await store.end_run(KEY, "t1", 1, [outcome], [], at=9.0, orders=[order("t1", "late")])
    assert await store.outbox.pending("tg", 10) == []


@pytest.mark.asyncio
async def test_deliveries_come_out_oldest_first_and_an_order_is_stored_once(
    store: Store,
) -> None:
    await replied(store, "t1", 1, order("t1", "first"), order("t1", "again"))
    await replied(store, "t2", 2, order("t2", "second"))
    texts = [d.order.text for d in await store.outbox.pending("tg", 10)]
    assert texts == ["first", "second"]
    assert [d.order.text for d in await store.outbox.pending("tg", 1)] == ["first"]


@pytest.mark.asyncio
async def test_parts_sent_and_failed_attempts_are_kept_for_the_next_attempt(
    store: Store,
) -> None:
    await replied(store, "t1", 1, order("t1"))
    [delivery] = await store.outbox.pending("tg", 10)
    await store.outbox.advance(delivery.delivery_id, 2, at=4.0)
    await store.outbox.advance(delivery.delivery_id, 1, at=4.5)  # never backwards
    await store.outbox.retry_later(delivery.delivery_id, 1, 10.0, "429 retry after 6s")
    [again] = await store.outbox.pending("tg", 10)
    assert (again.parts_sent, again.attempts, again.next_attempt_wall, again.last_error) == (
        2,
        1,
        10.0,
        "429 retry after 6s",
    )


@pytest.mark.asyncio
async def test_a_delivery_ends_once_and_every_turn_of_its_run_shows_how(
    store: Store,
) -> None:
    await replied(store, "t1", 1, order("t1"))
    await replied(store, "t2", 2, order("t2"))
    first, second = await store.outbox.pending("tg", 10)
    await store.outbox.finish(first.delivery_id, DeliveryState.SENT, at=5.0)
    await store.outbox.finish(first.delivery_id, DeliveryState.FAILED, at=6.0, error="late")
    await store.outbox.finish(second.delivery_id, DeliveryState.FAILED, at=7.0, error="gone")
    assert await store.outbox.pending("tg", 10) == []
    done = await store.outbox.of_session(KEY, 10)
    assert [(d.state, d.ended_wall, d.last_error) for d in done] == [
        (DeliveryState.SENT, 5.0, None),
        (DeliveryState.FAILED, 7.0, "gone"),
    ]
    turns = await store.session_turns(KEY, 10)
    assert [t.delivery for t in turns] == ["delivered", "delivery_failed"]
    assert await store.outbox.counts() == {
        DeliveryState.PENDING: 0,
        DeliveryState.SENT: 1,
        DeliveryState.FAILED: 1,
    }
