"""The outbox on PostgreSQL: messages owed to chat platforms, and how far their sending got.

As on SQLite (:mod:`turngate.store.sqlite_outbox`): orders are inserted by ``end_run`` in its
own transaction (:func:`insert_orders`); delivery workers read and record through
:class:`PostgresOutbox`, each call one short transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from turngate.store.base import Delivery, DeliveryOrder, DeliveryState
from turngate.store.rows import DELIVERY_COLUMNS, delivery_from_row
from turngate.types import WallS

if TYPE_CHECKING:
    from turngate.store.postgres import PostgresStore


async def insert_orders(
    db: AsyncConnection[tuple[Any, ...]], orders: Sequence[DeliveryOrder], at: WallS
) -> None:
    """Queue ``orders`` in the caller's transaction; an order already stored (same key: the
    same end written again) is kept as it is."""
    if not orders:
        return
    async with db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO deliveries (key, session_key, run_id, channel_id, conversation, text,"
            " next_attempt_wall, created_wall) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (key) DO NOTHING",
            [
                (o.key, o.session_key, o.run_id, o.channel_id, o.conversation, o.text, at, at)
                for o in orders
            ],
        )


class PostgresOutbox:
    """:class:`~turngate.store.base.Outbox` on the store's connection pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def pending(self, channel_id: str, limit: int) -> list[Delivery]:
        rows = await self._store.fetch(
            "read pending deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE channel_id = %s"
            " AND state = 'pending' ORDER BY delivery_id LIMIT %s",
            (channel_id, limit),
        )
        return [delivery_from_row(row) for row in rows]

    async def advance(self, delivery_id: int, parts_sent: int, at: WallS) -> None:
        del at  # the time a part went out is not kept: only the resume point matters
        async with self._store.writing("record a part delivered") as db:
            await db.execute(
                "UPDATE deliveries SET parts_sent = %s WHERE delivery_id = %s"
                " AND state = 'pending' AND parts_sent < %s",
                (parts_sent, delivery_id, parts_sent),
            )

    async def retry_later(
        self, delivery_id: int, attempts: int, next_attempt_wall: WallS, error: str
    ) -> None:
        async with self._store.writing("record a failed delivery attempt") as db:
            await db.execute(
                "UPDATE deliveries SET attempts = %s, next_attempt_wall = %s, last_error = %s"
                " WHERE delivery_id = %s AND state = 'pending'",
                (attempts, next_attempt_wall, error, delivery_id),
            )

    async def finish(
        self, delivery_id: int, state: DeliveryState, at: WallS, error: str | None = None
    ) -> None:
        outcome = "delivered" if state is DeliveryState.SENT else "delivery_failed"
        async with self._store.writing("record a delivery's end") as db:
            ended = await db.execute(
                "UPDATE deliveries SET state = %s, ended_wall = %s,"
                " last_error = COALESCE(%s, last_error)"
                " WHERE delivery_id = %s AND state = 'pending'",
                (state.value, at, error, delivery_id),
            )
            if ended.rowcount:
                # Every turn the run answered (a merged or steered message too) shows it.
                await db.execute(
                    "UPDATE turns SET delivery = %s WHERE run_id ="
                    " (SELECT run_id FROM deliveries WHERE delivery_id = %s)",
                    (outcome, delivery_id),
                )

    async def of_session(self, session_key: str, limit: int) -> list[Delivery]:
        rows = await self._store.fetch(
            "read a session's deliveries",
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE session_key = %s"
            " ORDER BY delivery_id DESC LIMIT %s",
            (session_key, limit),
        )
        return [delivery_from_row(row) for row in reversed(rows)]

    async def counts(self) -> dict[DeliveryState, int]:
        found = {state: 0 for state in DeliveryState}
        rows = await self._store.fetch(
            "count deliveries", "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
        )
        for state, count in rows:
            found[DeliveryState(state)] = int(count)
        return found
