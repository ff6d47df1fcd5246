"""Every client command against a real gateway that wants a token: the token from the flag,
from ``TURNGATE_TOKEN``, or missing; shared options before or after the subcommand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import turngate
from tests.gateway.process import clean_env, gateway_process
from tests.secrets import GATEWAY_TOKEN

CONFIG = """\
[[agents]]
id = "main"

[[agents.cron]]
id = "digest"
schedule = "0 9 * * *"
message = "daily digest"

[[agents.cron]]
id = "weekly"
schedule = "0 9 * * 1"
message = "weekly report"
"""
LINE_TIMEOUT_S = 15.0


class Gateway:
    """The module's gateway: its URL and state directory."""

    def __init__(self, url: str, state_dir: Path) -> None:
        self.url = url
        self.state_dir = state_dir


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state_dir = tmp_path_factory.mktemp("cli-gateway")
    config = state_dir / "gateway.toml"
    config.write_text(CONFIG, encoding="utf-8")
    with gateway_process(
        state_dir, args=("--config", str(config)), env={"TURNGATE_TOKEN": GATEWAY_TOKEN}
    ) as (url, _process):
        yield Gateway(url, state_dir)


CLIENT_COMMANDS = {
    "send": (["send", "--session", "agent:main:cli", "hello"], "echo: hello"),
    "probe": (["probe", "--calls", "2", "--gap", "0", "--session", "agent:main:probe"], "2/2 PASS"),
    "cron list": (["cron", "list"], "digest"),
    "cron run": (["cron", "run", "digest"], "fired digest: runId cron.digest.manual."),
    "sessions unstick": (["sessions", "unstick", "agent:main:idle"], "nothing was running"),
}


@pytest.mark.parametrize(("args", "expected"), CLIENT_COMMANDS.values(), ids=CLIENT_COMMANDS)
def test_client_command_authenticates_with_the_flag_or_the_environment(
    gateway: Gateway, args: list[str], expected: str
) -> None:
    with_flag = turngate(*args, "--url", gateway.url, "--token", GATEWAY_TOKEN)
    with_env = turngate(*args, env={"TURNGATE_URL": gateway.url, "TURNGATE_TOKEN": GATEWAY_TOKEN})
    without = turngate(*args, "--url", gateway.url)

    for run in (with_flag, with_env):
        assert (run.code, run.err) == (0, ""), run
        assert expected in run.out
    assert without.code == 6
    line = without.one_error_line()
    assert "--token or TURNGATE_TOKEN" in line
    assert without.out == ""


@pytest.mark.parametrize(
    "args",
    [
        ["cron", "--url", "{url}", "--token", "{token}", "list"],
        ["cron", "list", "--url", "{url}", "--token", "{token}"],
        ["cron", "--url", "{url}", "list", "--token", "{token}"],
        ["sessions", "--url", "{url}", "unstick", "agent:main:idle", "--token", "{token}"],
        ["sessions", "--state-dir", "{state_dir}", "list"],
        ["sessions", "list", "--state-dir", "{state_dir}"],
        ["sessions", "--json", "list", "--state-dir", "{state_dir}"],
    ],
    ids=lambda args: " ".join(args),
)
def test_shared_options_work_before_or_after_the_subcommand(
    gateway: Gateway, args: list[str]
) -> None:
    values = {"url": gateway.url, "token": GATEWAY_TOKEN, "state_dir": str(gateway.state_dir)}
    run = turngate(*(arg.format(**values) for arg in args))
    assert (run.code, run.err) == (0, ""), run


def test_cron_run_becomes_the_last_fire_cron_list_shows(gateway: Gateway) -> None:
    auth = ("--url", gateway.url, "--token", GATEWAY_TOKEN)

    def weekly() -> dict[str, Any]:
        run = turngate("cron", "list", "--json", *auth)
        jobs: list[dict[str, Any]] = [json.loads(line) for line in run.out.splitlines()]
        [job] = [job for job in jobs if job["id"] == "weekly"]
        return job

    before = weekly()
    began = time.time()
    assert turngate("cron", "run", "weekly", *auth).code == 0
    after = weekly()

    assert before["lastFireAt"] is None
    assert isinstance(after["lastFireAt"], str)
    assert after["lastFireAt"].endswith("Z")
    fired = datetime.fromisoformat(after["lastFireAt"].replace("Z", "+00:00")).timestamp()
    assert began - 1 <= fired <= time.time()
    assert after["nextFireAt"] == before["nextFireAt"]


def test_sessions_views_show_human_times_and_api_field_names(gateway: Gateway) -> None:
    auth = ("--url", gateway.url, "--token", GATEWAY_TOKEN)
    assert turngate("send", "--session", "agent:main:views", "seen", *auth).code == 0
    state = ("--state-dir", str(gateway.state_dir))

    table = turngate("sessions", "list", *state).out.splitlines()
    verbose = turngate("sessions", "list", "--verbose", *state).out.splitlines()
    listed = turngate("sessions", "list", "--json", *state).out
    rows = [json.loads(line) for line in listed.splitlines()]
    shown = turngate("sessions", "show", "agent:main:views", *state).out
    exported = [
        json.loads(line)
        for line in turngate("sessions", "export", "agent:main:views", *state).out.splitlines()
    ]

    assert table[0].split() == ["SESSION", "TURNS", "OPEN", "LAST", "ACTIVITY"]
    [views] = [line for line in table if line.startswith("agent:main:views ")]
    assert "just now (" in views
    assert " UTC)" in views
    assert "EPOCH" in verbose[0]
    assert "LEASE" in verbose[0]
    [row] = [row for row in rows if row["sessionKey"] == "agent:main:views"]
    assert row["turns"] == 1
    assert row["lastActivityAt"].endswith("Z")
    assert "last activity just now (" in shown
    assert re.search(r"\n  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \[user\] seen\n", shown), shown
    assert [(e["role"], e["text"]) for e in exported] == [
        ("user", "seen"),
        ("assistant", "echo: seen"),
    ]
    assert set(exported[0]) == {
        "seq",
        "sessionKey",
        "role",
        "turnId",
        "text",
        "runId",
        "epoch",
        "at",
    }


def test_export_of_an_unknown_session_fails_like_show(gateway: Gateway) -> None:
    state = ("--state-dir", str(gateway.state_dir))
    show = turngate("sessions", "show", "agent:main:nobody", *state)
    export = turngate("sessions", "export", "agent:main:nobody", *state)
    assert show.code == export.code == 6
    assert show.one_error_line() == export.one_error_line()
    assert "no session 'agent:main:nobody'" in export.one_error_line()
    assert export.out == ""


def test_probe_prints_each_call_as_it_completes(gateway: Gateway) -> None:
    # A long gap after call 1: its line must arrive while the probe is still waiting.
    command = [sys.executable, "-m", "turngate", "probe", "--calls", "2", "--gap", "60"]
    command += ["--session", "agent:main:stream", "--url", gateway.url]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env({"TURNGATE_TOKEN": GATEWAY_TOKEN}),
    )
    # The deadline of the read below: killing the probe ends its output.
    deadline = threading.Timer(LINE_TIMEOUT_S, proc.kill)
    deadline.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("call 1: ")
        assert " PASS " in first
        assert proc.poll() is None
    finally:
        deadline.cancel()
        proc.kill()
        proc.wait(LINE_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
