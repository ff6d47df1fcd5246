"""A gateway on PostgreSQL (``store = "postgresql://..."``), against a real server the suite
starts (``tests/postgres_server.py``): turns are accepted, run and answered as on SQLite; the
command line reads the same store; and a database restart in the middle of the load loses
nothing acknowledged: each turn a client was told about ends with exactly one outcome."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.postgres_server import PostgresServer
from tests.support import running_gateway
from turngate.cli import main
from turngate.errors import StorageUnavailableError, StoreError
from turngate.store.postgres import PostgresStore, safe_url

SESSIONS = 5
TURNS_PER_SESSION = 6
ANSWER_WAIT_S = 60.0
"""How long a client keeps asking for its turn's outcome through a database restart."""


DATABASE_UP = threading.Event()
DATABASE_UP.set()
"""Set while the test's database is not being restarted (a test restarting it clears it)."""


def send(
    client: httpx2.Client,
    key: str,
    message: str,
    run_id: str,
    database_up: threading.Event = DATABASE_UP,
) -> dict[str, Any]:
    """``POST /chat.send`` until the turn has its outcome: an answer that is not one (the
    database restarting) is asked again with the same idempotency key, as a client would,
    once the restart is over (``database_up``); the pool's reconnection may take one or two
    more attempts."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    body = {"sessionKey": key, "message": message, "idempotencyKey": run_id}
    while True:
        try:
            answer = client.post("/chat.send", json=body)
        except httpx2.TransportError:
            answer = None
        if answer is not None and answer.json().get("status") not in (None, "pending"):
            result: dict[str, Any] = answer.json()
            return result
        left = deadline - time.monotonic()
        if left <= 0 or not database_up.wait(left):
            raise AssertionError(f"{run_id}: no outcome in {ANSWER_WAIT_S}s: {answer}")


def test_a_gateway_on_postgresql_answers_and_the_cli_reads_its_sessions(
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ["--state-dir", str(tmp_path / "cli")]
    monkeypatch.setenv("TURNGATE_STORE", postgres_url)
    with (
        running_gateway(tmp_path / "state", store=postgres_url, echo_latency_ms=0) as url,
        httpx2.Client(base_url=url, timeout=ANSWER_WAIT_S) as client,
    ):
        replies = [
            send(client, f"agent:main:s{i}", f"hello {i}", f"pg-{i}")["reply"] for i in range(3)
        ]
        store = client.get("/console/api/gateway").json()["store"]
        assert (store["kind"], store["path"]) == ("postgresql", safe_url(postgres_url))
        storage = client.get("/health").json()["storage"]
        assert (storage["kind"], storage["path"], storage["writable"]) == (
            "postgresql",
            safe_url(postgres_url),
            True,
        )
        # Beside the running gateway: the schema step and the sessions commands.
        assert main(["db", "upgrade", *config]) == 0
        assert main(["sessions", "list", "--json", *config]) == 0
    assert replies == ["echo: hello 0", "echo: hello 1", "echo: hello 2"]
    out = capsys.readouterr().out
    assert "schema up to date" in out
    assert {f'"agent:main:s{i}"' for i in range(3)} <= set(out.replace(",", " ").split())


@pytest.mark.asyncio
async def test_a_second_gateway_under_the_same_instance_name_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    first = PostgresStore(postgres_url, instance="gw")
    await first.open()
    try:
        second = PostgresStore(postgres_url, instance="gw")
        with pytest.raises(StoreError, match="another gateway process runs as instance 'gw'"):
            await second.open()
        # Another name shares the database; a reader is not a gateway: it opens beside one.
        other = PostgresStore(postgres_url, instance="gw-2")
        await other.open()
        await other.close()
        reader = PostgresStore(postgres_url, readonly=True, instance="gw")
        await reader.open()
        assert await reader.count_sessions() == 0
        await reader.close()
    finally:
        await first.close()
    # Once the first has closed, another may open under its name.
    third = PostgresStore(postgres_url, instance="gw")
    await third.open()
    await third.close()


def test_a_database_restart_mid_load_loses_no_acknowledged_turn(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    results: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []
    under_way = threading.Event()
    database_up = threading.Event()
    database_up.set()

    def session_client(url: str, index: int) -> None:
        try:
            with httpx2.Client(base_url=url, timeout=ANSWER_WAIT_S) as client:
                for turn in range(TURNS_PER_SESSION):
                    run_id = f"r-{index}-{turn}"
                    key = f"agent:main:load{index}"
                    results[run_id] = send(client, key, run_id, run_id, database_up)
                    if len(results) >= SESSIONS:
                        under_way.set()
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
            under_way.set()

    with running_gateway(tmp_path / "state", store=postgres_url, echo_latency_ms=20) as url:
        clients = [threading.Thread(target=session_client, args=(url, i)) for i in range(SESSIONS)]
        for thread in clients:
            thread.start()
        assert under_way.wait(ANSWER_WAIT_S)  # some turns are done: the load is under way
        left = SESSIONS * TURNS_PER_SESSION - len(results)
        database_up.clear()
        postgres.restart()
        database_up.set()
        for thread in clients:
            thread.join(ANSWER_WAIT_S * TURNS_PER_SESSION)
        with httpx2.Client(base_url=url, timeout=ANSWER_WAIT_S) as client:
            stored = {run_id: client.get(f"/turns/{run_id}").json() for run_id in results}
    assert failures == []
    assert left > 0  # the restart came in the middle of the load
    assert len(results) == SESSIONS * TURNS_PER_SESSION
    for run_id, answer in results.items():
        assert answer["status"] == "ok", answer
        assert answer["reply"] == f"echo: {run_id}"
        # One outcome, stored: the turn ran once (a retry found it, it did not run again).
        assert stored[run_id]["status"] == "ok"
        assert stored[run_id]["reply"] == f"echo: {run_id}"


@pytest.mark.asyncio
async def test_a_store_whose_lock_another_took_during_a_restart_writes_nothing(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """The database restarts: the first gateway's lock on its instance name dies with its
    connection, and a second gateway under that name, starting meanwhile, takes it. The first
    must not write again."""
    first = PostgresStore(postgres_url)
    await first.open()
    second = PostgresStore(postgres_url)
    try:
        postgres.restart()
        await second.open()
        for _ in range(2):  # the first attempt may fail on a connection the restart broke
            with pytest.raises(StorageUnavailableError) as refused:
                await first.probe()
        assert "another gateway process took instance 'local'" in refused.value.message
        await second.probe()  # the one holding the lock writes
    finally:
        await first.close()
        await second.close()
