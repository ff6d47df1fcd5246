"""A full disk on a real gateway: refused work is never acknowledged, acknowledged work is
never lost, and the session answers again without a restart (issue 9, fault 1; seed 002's
silent session, by a different road).

SQLite's ``PRAGMA max_page_count`` makes the database "full" on any filesystem, without root.
It is set on the gateway's own connection, on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.gateway.test_ws_protocol import session
from tests.support import EventWaiter, GatedEchoProvider, gateway_config, serve
from turngate.gateway.app import create_app
from turngate.runtime.events import Event, EventBus
from turngate.store.configured import DB_FILE
from turngate.store.sqlite import SqliteStore

KEY = "agent:main:disk"
BIG = "x" * 30_000
"""A message whose turn needs new database pages: its writes fail on a full disk."""
CALL_TIMEOUT_S = 30.0
UNLIMITED_PAGES = 1_073_741_823


@dataclass
class Disk:
    """The gateway's store, and a way to fill and free its disk from the test thread."""

    store: SqliteStore
    loop: asyncio.AbstractEventLoop

    def _on_loop(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``action`` on the gateway's loop, between two of its group transactions."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            db = self.store.db
            if db.in_transaction:
                self.loop.call_soon(run)  # a group commit is pending: let it finish first
                return
            try:
                done.set_result(action(db))
            except BaseException as exc:  # handed to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=CALL_TIMEOUT_S)

    def fill(self) -> None:
        """No room left: the file may not grow, and its free pages are taken up, so any
        write that needs a page fails with SQLITE_FULL."""

        def full(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS filler (blob BLOB)")
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            size = 1 << 16
            while size:
                try:
                    db.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
                except sqlite3.OperationalError:
                    size //= 2

        self._on_loop(full)

    def free(self) -> None:
        def room(db: sqlite3.Connection) -> None:
            db.execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")
            db.execute("DELETE FROM filler")

        self._on_loop(room)


@dataclass
class Gateway:
    url: str
    events: EventWaiter
    provider: GatedEchoProvider
    disk: Disk


@contextmanager
def gateway_with_disk(tmp_path: Path) -> Iterator[Gateway]:
    events = EventWaiter()
    loops: list[asyncio.AbstractEventLoop] = []

    def note_loop(event: Event) -> None:
        if not loops:
            loops.append(asyncio.get_running_loop())

    bus = EventBus()
    bus.subscribe(events.record)
    bus.subscribe(note_loop)
    provider = GatedEchoProvider()
    store = SqliteStore(tmp_path / DB_FILE)
    app = create_app(
        gateway_config(tmp_path, abort_grace_s=0.5), provider=provider, store=store, events=bus
    )
    with serve(app) as url:
        # The first event tells the test which loop the gateway runs on.
        first = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:main:warmup", "message": "warm up", "wait": False},
        )
        assert first.status_code == 202
        provider.open()
        events.wait_for("ended")
        provider.close()
        yield Gateway(url, events, provider, Disk(store, loops[0]))


async def ws_send(url: str, message: str, key: str) -> dict[str, Any]:
    """``chat.send`` over the WebSocket protocol; its response frame."""
    async with session(url) as client:
        request_id = await client.send_message(KEY, message, key)
        [answer] = await client.response(request_id)
        return answer


def test_a_full_disk_refuses_new_turns_keeps_acknowledged_ones_and_recovers_without_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with gateway_with_disk(tmp_path) as gw, httpx2.Client(timeout=CALL_TIMEOUT_S) as http:
        # Acknowledged while the disk has room; its run waits at the provider's gate.
        owed = http.post(
            f"{gw.url}/chat.send",
            json={"sessionKey": KEY, "message": BIG, "idempotencyKey": "owed", "wait": False},
        )
        assert owed.status_code == 202, owed.text
        gw.events.wait_for("started", 2)

        gw.disk.fill()
        gw.provider.open()  # the run replies; writing its end down needs room
        failed = gw.events.wait_for("storage_failed")[0]
        assert failed.session_key == KEY
        assert failed.run_id == "owed"

        health = http.get(f"{gw.url}/health")
        assert health.status_code == 503
        body = health.json()
        assert body["ok"] is False
        assert body["status"] == "degraded"
        assert "full" in body["storage"]["reason"]
        assert body["storage"]["waitingSessions"] == [KEY]
        metrics = http.get(f"{gw.url}/metrics").text
        assert "turngate_storage_writable 0.0" in metrics
        assert "turngate_storage_write_failures_total 0.0" not in metrics

        # A new turn is refused, clearly, and not acknowledged.
        refused = http.post(
            f"{gw.url}/chat.send",
            json={"sessionKey": KEY, "message": BIG + "2", "idempotencyKey": "later"},
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert http.get(f"{gw.url}/turns/later").status_code == 404
        ws_refusal = asyncio.run(ws_send(gw.url, BIG + "3", "later-ws"))
        assert not ws_refusal["ok"]
        assert ws_refusal["error"]["details"]["code"] == "storage_unavailable"
        assert ws_refusal["error"]["retryable"] is True
        unstick = http.post(f"{gw.url}/sessions/unstick", json={"sessionKey": KEY})
        assert unstick.status_code == 503, unstick.text
        assert unstick.json()["error"]["code"] == "storage_unavailable"
        assert KEY in unstick.json()["error"]["message"]

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any(KEY in r.getMessage() and "storage" in r.getMessage() for r in warnings)

        # Space comes back: the owed turn ends by itself, and the session answers again.
        gw.disk.free()
        gw.events.wait_for("storage_recovered")
        ended = [e for e in gw.events.wait_for("ended", 2) if e.turn_id == "owed"]
        assert [e.state for e in ended] == ["replied"]
        turn = http.get(f"{gw.url}/turns/owed").json()
        assert turn["status"] == "ok"
        assert BIG in turn["reply"]
        again = http.post(
            f"{gw.url}/chat.send",
            json={"sessionKey": KEY, "message": BIG + "2", "idempotencyKey": "later"},
        )
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "ok"
        healthy = http.get(f"{gw.url}/health")
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "live"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
