"""``turngate status`` against a real gateway, and ``turngate doctor`` against a real state
directory, port and configuration file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import psycopg
import pytest

from tests.support import EventWaiter, running_gateway
from turngate.cli import doctor_cmd, main, status_cmd
from turngate.cli.common import resolve
from turngate.config_agents import AgentConfig, CronJobConfig, HeartbeatConfig
from turngate.config_providers import ProviderConfig
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.runtime.events import EventBus
from turngate.store.postgres_schema import SCHEMA_VERSION
from turngate.store.statedir import StateDirLock

CALL_TIMEOUT_S = 20.0
STALL_TIMEOUT_S = 0.2
MISSING_KEY_ENV = "TURNGATE_TEST_DOCTOR_MISSING_KEY"
A_MONTH_S = 30 * 86400.0
"""A heartbeat period no test run straddles a tick of."""


def turngate(*argv: str) -> int:
    """Run ``status`` or ``doctor`` as the ``turngate`` command would (it registers them)."""
    parser = argparse.ArgumentParser(prog="turngate")
    commands = parser.add_subparsers(required=True)
    status_cmd.register(commands)
    doctor_cmd.register(commands)
    args = resolve(parser.parse_args(argv))
    code: int = args.func(args)
    return code


@pytest.fixture(autouse=True)
def no_turngate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's TURNGATE_* variables (a token, a state dir) must not steer these tests."""
    for name in list(os.environ):
        if name.startswith("TURNGATE_"):
            monkeypatch.delenv(name)


class WedgedProvider:
    """Makes no progress and swallows cancellation until :meth:`release` (thread-safe), like
    the stuck runs of the field reports."""

    name = "wedged"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._gates: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def release(self) -> None:
        with self._lock:
            self._released = True
            gates, self._gates = self._gates, []
        for loop, gate in gates:
            loop.call_soon_threadsafe(gate.set)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        gate = asyncio.Event()
        with self._lock:
            if self._released:
                gate.set()
            else:
                self._gates.append((asyncio.get_running_loop(), gate))
        while not gate.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # wedged: ignores the watchdog
                await gate.wait()
        yield TextDelta("too late")
        yield Finish("stop")


def lanes() -> tuple[AgentConfig, ...]:
    return (
        AgentConfig(
            id="main",
            heartbeat=HeartbeatConfig(every=A_MONTH_S),
            cron=(CronJobConfig(id="digest", schedule="0 9 * * *", message="daily digest"),),
        ),
    )


@contextlib.contextmanager
def gateway_with_a_stalled_session(state_dir: Path) -> Iterator[str]:
    """A gateway whose session ``agent:main:main`` has a run the watchdog is revoking, in
    vain: it stays listed as stalled until the gateway stops."""
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    model = WedgedProvider()
    with running_gateway(
        state_dir,
        provider=model,
        events=bus,
        agents=lanes(),
        stall_timeout_s=STALL_TIMEOUT_S,
        abort_grace_s=CALL_TIMEOUT_S,
    ) as url:
        try:
            accepted = httpx2.post(
                f"{url}/chat.send",
                json={"sessionKey": "agent:main:main", "message": "hi", "wait": False},
                timeout=CALL_TIMEOUT_S,
            )
            assert accepted.status_code == 202
            waiter.wait_for("cancel_requested")
            yield url
        finally:
            model.release()


def test_status_lists_a_stalled_session_with_its_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway_with_a_stalled_session(tmp_path) as url:
        code = turngate("status", "--url", url)
        text = capsys.readouterr().out
        json_code = turngate("status", "--url", url, "--json")
        health = json.loads(capsys.readouterr().out)
    assert code == json_code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"up: turngate {health['version']} at {url}, live, up ")
    assert lines[1].startswith(f"state dir: {tmp_path} (held by pid {os.getpid()}, since ")
    assert "sessions: 1 stored, 1 active, 1 running, 0 queued" in lines
    [stalled] = [line for line in lines if line.startswith("  agent:main:main  run ")]
    age = re.search(r"  revoking  age ([0-9.]+)s, no progress for ", stalled)
    assert age is not None
    assert float(age.group(1)) >= STALL_TIMEOUT_S
    assert lines[lines.index(stalled) - 1] == "stalled (1):"
    assert "slow: none" in lines
    assert "channels: none" in lines
    assert any(
        line.startswith("  heartbeat main on agent:main:main:heartbeat every ") for line in lines
    )
    assert any(line.startswith("  cron digest (main, 0 9 * * *): next in ") for line in lines)
    assert "  echo (echo): main echo" in lines
    [lease] = health["stalled"]
    assert lease["sessionKey"] == "agent:main:main"
    assert lease["state"] == "revoking"
    assert lease["ageS"] >= STALL_TIMEOUT_S


def test_health_tells_uptime_address_lock_holder_lanes_and_providers(tmp_path: Path) -> None:
    local = ProviderConfig(id="local", kind="openai", base_url="http://me:secret@127.0.0.1:9/v1")
    with running_gateway(tmp_path, agents=lanes(), providers=(local,)) as url:
        health = httpx2.get(f"{url}/health", timeout=CALL_TIMEOUT_S).json()
    assert health["uptimeS"] >= 0
    assert health["address"] == url
    assert health["stateDir"] == str(tmp_path)
    assert health["lock"]["pid"] == os.getpid()
    assert health["process"] == {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "name": "local",
        "sessionsHeld": 0,
    }
    assert health["leasesHeld"] == 0
    assert (health["storage"]["kind"], health["storage"]["path"]) == (
        "sqlite",
        str(tmp_path / "turngate.db"),
    )
    status = status_cmd.render(health, url)
    assert (
        f"process: local, pid {os.getpid()} on {socket.gethostname()}, 0 sessions held, 0 running"
        in status
    )
    assert f"storage: sqlite {tmp_path / 'turngate.db'}, writable" in status
    [beat] = health["lanes"]["heartbeat"]
    assert beat["nextTickAt"] % A_MONTH_S == 0
    assert beat["nextTickAt"] > health["startedAt"]
    assert health["lanes"]["cron"]["jobs"] == 1
    [job] = health["lanes"]["cron"]["next"]
    assert job["id"] == "digest"
    assert job["nextFireAt"] % 86400 == 9 * 3600
    assert health["providers"] == [
        {"id": "local", "kind": "openai", "baseUrl": "http://127.0.0.1:9/v1", "models": []},
        {
            "id": "echo",
            "kind": "echo",
            "baseUrl": None,
            "models": [{"agentId": "main", "model": "echo", "fallback": False}],
        },
    ]


def test_status_of_a_gateway_that_is_not_there_says_down_and_exits_seven(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        assert turngate("status", "--url", url) == 7
        [line] = capsys.readouterr().out.splitlines()
        assert turngate("status", "--url", url, "--json") == 7
        down = json.loads(capsys.readouterr().out)
    assert line.startswith(f"down: cannot reach the gateway at {url} ")
    assert down["up"] is False
    assert down["url"] == url


def listening(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_doctor_finds_a_held_state_dir_a_missing_key_and_a_busy_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    holder = StateDirLock(state_dir)
    holder.acquire("http://127.0.0.1:18789")
    with listening() as busy, listening() as model_server:
        config = tmp_path / "turngate.toml"
        config.write_text(
            'provider = "local"\nmodel = "small"\n'
            "[[providers]]\n"
            'id = "local"\nkind = "openai"\n'
            f'base_url = "http://127.0.0.1:{model_server.getsockname()[1]}/v1"\n'
            f'api_key_env = "{MISSING_KEY_ENV}"\n',
            encoding="utf-8",
        )
        port = str(busy.getsockname()[1])
        argv = ["doctor", "--config", str(config), "--state-dir", str(state_dir), "--port", port]
        try:
            code = turngate(*argv)
            text = capsys.readouterr().out
            json_code = turngate(*argv, "--json")
            findings = json.loads(capsys.readouterr().out)
        finally:
            holder.release()
    assert code == json_code == 3
    verdicts = {finding["check"]: finding["verdict"] for finding in findings}
    assert verdicts == {
        "config": "ok",
        "token": "ok",
        "state dir": "ok",
        "state dir lock": "problem",
        "port": "problem",
        "key local": "problem",
        "reach local": "ok",
        "disk": verdicts["disk"],  # ok or warning: depends on the machine's disk
    }
    by_check = {finding["check"]: finding for finding in findings}
    assert (
        f"pid {os.getpid()}, serving http://127.0.0.1:18789"
        in by_check["state dir lock"]["message"]
    )
    assert by_check["port"]["message"].startswith(
        f"127.0.0.1:{port} is in use by pid {os.getpid()} ("
    )
    assert by_check["key local"]["message"] == f"{MISSING_KEY_ENV} is not set"
    assert (
        by_check["key local"]["fix"] == f"export {MISSING_KEY_ENV}=... in the gateway's environment"
    )
    assert text.splitlines()[-1].startswith("3 problems, ")
    assert f"problem  port            127.0.0.1:{port} is in use by pid {os.getpid()}" in text


def test_doctor_on_a_fresh_state_dir_finds_nothing_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = turngate("doctor", "--state-dir", str(tmp_path / "new"), "--port", "0")
    out = capsys.readouterr().out
    assert code == 0
    assert f"ok       state dir       {tmp_path / 'new'} will be created in {tmp_path}" in out
    assert out.splitlines()[-1].startswith("0 problems, ")


def test_doctor_wants_a_token_off_loopback_and_counts_it_as_one_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["doctor", "--state-dir", str(tmp_path), "--host", "0.0.0.0", "--port", "0", "--json"]
    code = turngate(*argv)
    findings = {f["check"]: f for f in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert findings["config"]["verdict"] == "ok"
    assert findings["token"]["verdict"] == "problem"
    assert (
        findings["token"]["message"] == "host 0.0.0.0 is not loopback and no gateway token is set"
    )


def test_doctor_checks_a_postgresql_store_answers_and_its_schema_version(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
) -> None:
    monkeypatch.setenv("TURNGATE_STORE", postgres_url)
    argv = ["doctor", "--state-dir", str(tmp_path), "--port", "0", "--json"]
    assert turngate(*argv) == 0
    [fresh] = [f for f in json.loads(capsys.readouterr().out) if f["check"] == "store"]
    assert fresh["verdict"] == "ok"
    assert "no schema yet: the gateway brings it to version" in fresh["message"]
    assert main(["db", "upgrade", "--state-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert turngate(*argv) == 0
    [made] = [f for f in json.loads(capsys.readouterr().out) if f["check"] == "store"]
    assert made["message"].endswith(f"answers, schema version {SCHEMA_VERSION}")

    async def from_the_future() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            await db.execute("UPDATE turngate_schema SET version = 99")

    asyncio.run(from_the_future())
    assert turngate(*argv) == 1
    [newer] = [f for f in json.loads(capsys.readouterr().out) if f["check"] == "store"]
    assert newer["verdict"] == "problem"
    assert f"schema version 99 is newer than this turngate's ({SCHEMA_VERSION})" in newer["message"]
