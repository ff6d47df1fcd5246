"""At start-up a gateway says, at INFO, what it loaded and where it listens (issue 10, item 6).

One line each: the configuration, the state directory, every agent with its models and queue
mode, every provider (never its key), every lane (heartbeat period, cron schedule and next
fire), and ``listening on``. None of them carries a credential.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx2
import pytest

from tests.secrets import LOG_TEST_TOKEN, PROVIDER_KEY
from tests.support import gateway_config, serve
from turngate.config_agents import AgentConfig, CronJobConfig, HeartbeatConfig
from turngate.config_providers import ProviderConfig
from turngate.core.queue import QueueMode
from turngate.gateway.app import create_app

CALL_TIMEOUT_S = 10.0
KEY_ENV = "TURNGATE_STARTUP_TEST_KEY"


def test_startup_says_what_was_loaded_and_where_it_listens_without_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, PROVIDER_KEY)
    config = gateway_config(
        tmp_path,
        token=LOG_TEST_TOKEN,
        providers=(
            ProviderConfig(
                id="remote",
                kind="openai",
                base_url="https://someone:hunter2-password@models.example/v1",
                api_key_env=KEY_ENV,
            ),
        ),
        agents=(
            AgentConfig(
                id="ops",
                model="echo/echo",
                fallbacks=("remote/gpt-test",),
                queue_mode=QueueMode.COLLECT,
                heartbeat=HeartbeatConfig(every=1800.0),
                cron=(CronJobConfig(id="daily", schedule="0 9 * * *", message="report"),),
                tools=("sessions_history",),
                max_steps=5,
            ),
        ),
    )
    app = create_app(config)
    app.state.config_file = tmp_path / "turngate.toml"  # what the command knows and sets
    with (
        caplog.at_level(logging.INFO),
        serve(app) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http,
    ):
        assert http.get("/healthz").status_code == 200  # start-up is complete

    lines = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("turngate")]
    said = "\n".join(message for _, message in lines)
    assert f"config: file {tmp_path / 'turngate.toml'}; host 127.0.0.1, port 18789," in said
    assert f"state dir: {tmp_path} (turngate.db, durability normal)" in said
    assert "agent main: model echo/echo, fallbacks none, queue followup" in said
    assert "agent ops: model echo/echo, fallbacks remote/gpt-test, queue collect" in said
    assert "tools of agent ops: sessions_history; max_steps 5" in said
    assert "provider echo: kind echo" in said
    assert (
        "provider remote: kind openai, base_url https://models.example/v1,"
        f" key from ${KEY_ENV}" in said
    )
    assert "heartbeat of agent ops: every 30m" in said
    next_fire = r"next \d{4}-\d\d-\d\dT09:00:00\+00:00"
    assert re.search(rf"cron job daily of agent ops: '0 9 \* \* \*' \(UTC\), {next_fire}", said)
    listening = [message for name, message in lines if name == "turngate.server"]
    assert listening == [f"listening on {url}"]
    for secret in (LOG_TEST_TOKEN, PROVIDER_KEY, "hunter2-password"):
        assert secret not in caplog.text


def test_startup_of_an_open_gateway_says_so_and_that_it_has_no_lanes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO),
        serve(create_app(gateway_config(tmp_path))) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http,
    ):
        assert http.get("/healthz").status_code == 200

    said = [r.getMessage() for r in caplog.records if r.name == "turngate.gateway"]
    assert said[0] == (
        "config: no file named to the app; host 127.0.0.1, port 18789, log info as text to stderr"
    )
    assert "agents: open (any agent id is served with main's settings)" in said
    assert "lanes: no heartbeat, no cron job" in said
