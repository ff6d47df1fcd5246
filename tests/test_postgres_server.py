"""The throwaway PostgreSQL server the suite starts by itself (tests/postgres_server.py)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import postgres_server
from tests.postgres_server import (
    HOST,
    PostgresServer,
    PostgresStartError,
    binaries_or_skip,
    start_or_skip,
)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with start_or_skip() as started:
        yield started


def process_uid(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_answers_select_1_over_loopback_tcp(server: PostgresServer) -> None:
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # inet_server_addr() is NULL over a Unix socket: this proves the TCP path.
        row = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
    assert row == ("127.0.0.1", server.port)


def test_settings_are_those_of_a_test_server(server: PostgresServer) -> None:
    names = ["fsync", "synchronous_commit", "full_page_writes", "max_connections"]
    with psycopg.connect(server.url) as conn:
        values = [conn.execute(f"SHOW {name}").fetchone() for name in names]
    assert values == [("off",), ("off",), ("off",), ("200",)]


def test_each_database_is_separate(server: PostgresServer) -> None:
    first = server.create_database("separate_one")
    second = server.create_database("separate_two")
    assert first.endswith("/separate_one")
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (n int)")
    with psycopg.connect(second) as conn:
        row = conn.execute("SELECT to_regclass('only_here')").fetchone()
    assert row == (None,)


def test_create_database_refuses_names_that_need_quoting(server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="database name"):
        server.create_database('x"; DROP DATABASE postgres; --')


def test_server_does_not_run_as_root(server: PostgresServer) -> None:
    with psycopg.connect(server.url) as conn:
        row = conn.execute("SELECT pg_backend_pid(), current_setting('data_directory')").fetchone()
        assert row is not None
        backend_pid, data_directory = row
        # Read while the connection is open: its backend process ends with it.
        uids = (process_uid(server.pid), process_uid(backend_pid))
    assert Path(data_directory) == server.data_dir
    for uid in uids:
        assert uid != 0
    assert Path(data_directory).stat().st_uid != 0


def test_restart_keeps_data_and_port(server: PostgresServer) -> None:
    url = server.create_database("survives_restart")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 42 AS n")
    port, pid = server.port, server.pid
    server.restart()
    assert server.port == port
    assert server.pid != pid
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone() == (42,)


def test_stop_frees_the_port_and_removes_the_directory() -> None:
    server = start_or_skip()
    port, pid, root = server.port, server.pid, server.root
    server.stop()
    assert refuses_connections(port)
    assert not root.exists()
    assert not Path(f"/proc/{pid}").exists()
    server.stop()  # a second stop is harmless


def test_leaving_the_block_on_an_exception_stops_the_server() -> None:
    server = PostgresServer(binaries_or_skip())
    seen: list[tuple[int, Path]] = []

    def fail_inside() -> None:
        with server:
            seen.append((server.port, server.root))
            raise LookupError("the test body failed")

    with pytest.raises(LookupError):
        fail_inside()
    [(port, root)] = seen
    assert not server.running
    assert refuses_connections(port)
    assert not root.exists()


def test_a_port_taken_after_it_was_chosen_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        picks: list[int] = [taken.getsockname()[1]]

        def taken_then_free() -> int:
            picks.append(real_free_port())
            return picks[-2]

        real_free_port = postgres_server.free_port
        monkeypatch.setattr(postgres_server, "free_port", taken_then_free)
        with start_or_skip() as server:
            assert server.port == picks[1]
            with psycopg.connect(server.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_taken_port_fails_with_the_log_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Path] = []

    def recording_mkdtemp(prefix: str, dir: str | None) -> str:
        made.append(Path(real_mkdtemp(prefix=prefix, dir=dir)))
        return str(made[-1])

    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        server = PostgresServer(binaries_or_skip(), port=taken.getsockname()[1])
        # A fixed port is not retried: the failure names the cause and shows the server's log.
        with pytest.raises(PostgresStartError, match=r"(?s)log:.*Address already in use"):
            server.start()
    assert not server.running
    assert len(made) == 1
    assert not made[0].exists()
