"""The outbox on SQLite: messages owed to chat platforms, and how far their sending got.

Orders are inserted by ``end_run`` inside its own transaction (:func:`insert_orders`), so a
reply and the duty to send it are written together or not at all; delivery workers then read
and record through :class:`SqliteOutbox`, each call one short transaction like every other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from turngate.store.base import Delivery, DeliveryOrder, DeliveryState
from turngate.store.rows import DELIVERY_COLUMNS, delivery_from_row
from turngate.store.sqlite_commit import GroupCommits
from turngate.types import WallS

COLUMNS = DELIVERY_COLUMNS


def insert_orders(db: sqlite3.Connection, orders: Sequence[DeliveryOrder], at: WallS) -> None:
    """Queue ``orders`` in the caller's transaction; an order already stored (same key: the
    same end written again) is kept as it is."""
    db.executemany(
        "INSERT INTO deliveries (key, session_key, run_id, channel_id, conversation, text,"
        " next_attempt_wall, created_wall) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(key) DO NOTHING",
        [
            (o.key, o.session_key, o.run_id, o.channel_id, o.conversation, o.text, at, at)
            for o in orders
        ],
    )


class SqliteOutbox:
    """:class:`~turngate.store.base.Outbox` on the store's connection.

    ``present`` is False for a read-only open of a file older than the outbox: it then reads
    no deliveries (and a read-only store writes none).
    """

    def __init__(self, tx: GroupCommits) -> None:
        self._tx = tx
        self.present = True

    async def pending(self, channel_id: str, limit: int) -> list[Delivery]:
        if not self.present:
            return []
        rows = self._tx.rows(
            "read pending deliveries",
            f"SELECT {COLUMNS} FROM deliveries WHERE channel_id = ? AND state = 'pending'"
            " ORDER BY delivery_id LIMIT ?",
            (channel_id, limit),
        )
        return [delivery_from_row(row) for row in rows]

    async def advance(self, delivery_id: int, parts_sent: int, at: WallS) -> None:
        del at  # the time a part went out is not kept: only the resume point matters
        async with self._tx.write("record a part delivered") as db:
            db.execute(
                "UPDATE deliveries SET parts_sent = ? WHERE delivery_id = ? AND state = 'pending'"
                " AND parts_sent < ?",
                (parts_sent, delivery_id, parts_sent),
            )

    async def retry_later(
        self, delivery_id: int, attempts: int, next_attempt_wall: WallS, error: str
    ) -> None:
        async with self._tx.write("record a failed delivery attempt") as db:
            db.execute(
                "UPDATE deliveries SET attempts = ?, next_attempt_wall = ?, last_error = ?"
                " WHERE delivery_id = ? AND state = 'pending'",
                (attempts, next_attempt_wall, error, delivery_id),
            )

    async def finish(
        self, delivery_id: int, state: DeliveryState, at: WallS, error: str | None = None
    ) -> None:
        outcome = "delivered" if state is DeliveryState.SENT else "delivery_failed"
        async with self._tx.write("record a delivery's end") as db:
            ended = db.execute(
                "UPDATE deliveries SET state = ?, ended_wall = ?,"
                " last_error = COALESCE(?, last_error)"
                " WHERE delivery_id = ? AND state = 'pending'",
                (state.value, at, error, delivery_id),
            ).rowcount
            if ended:
                # Every turn the run answered (a merged or steered message too) shows it.
                db.execute(
                    "UPDATE turns SET delivery = ? WHERE run_id ="
                    " (SELECT run_id FROM deliveries WHERE delivery_id = ?)",
                    (outcome, delivery_id),
                )

    async def of_session(self, session_key: str, limit: int) -> list[Delivery]:
        if not self.present:
            return []
        rows = self._tx.rows(
            "read a session's deliveries",
            f"SELECT {COLUMNS} FROM deliveries WHERE session_key = ?"
            " ORDER BY delivery_id DESC LIMIT ?",
            (session_key, limit),
        )
        return [delivery_from_row(row) for row in reversed(rows)]

    async def counts(self) -> dict[DeliveryState, int]:
        found = {state: 0 for state in DeliveryState}
        if not self.present:
            return found
        rows = self._tx.rows(
            "count deliveries", "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
        )
        for state, count in rows:
            found[DeliveryState(state)] = int(count)
        return found
