"""Settings come from defaults, a TOML file, TURNGATE_* variables and flags, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from turngate.config import DEFAULT_PORT, load_config
from turngate.core.queue import QueueMode
from turngate.errors import InvalidFieldError


def test_defaults_serve_loopback_on_the_documented_port() -> None:
    config = load_config(env={"TURNGATE_STATE_DIR": "/nonexistent-turngate"})
    assert (config.host, config.port, config.provider) == ("127.0.0.1", DEFAULT_PORT, "echo")
    assert config.queue_mode is QueueMode.FOLLOWUP


def test_each_source_overrides_the_one_before_it_key_by_key(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text('port = 1000\necho_latency_ms = 10\nqueue_mode = "collect"\n')
    env = {"TURNGATE_PORT": "2000", "TURNGATE_ECHO_LATENCY_MS": "20"}
    config = load_config(file, env=env, overrides={"port": 3000, "stall_timeout_s": None})
    assert config.port == 3000  # flag beats env and file
    assert config.echo_latency_ms == 20  # env beats file
    assert config.queue_mode is QueueMode.COLLECT  # file beats default
    assert config.stall_timeout_s == 60.0  # a flag left unset changes nothing


def test_the_state_dir_config_file_is_read_when_no_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "turngate.toml").write_text("echo_latency_ms = 300\n")
    config = load_config(env={"TURNGATE_STATE_DIR": str(tmp_path)})
    assert config.echo_latency_ms == 300


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("port = 70000\n", "port"),
        ('queue_mode = "sometimes"\n', "queue_mode"),
        ("stall_timeout_s = 0\n", "stall_timeout_s"),
        ("unknown_key = 1\n", "unknown_key"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(tmp_path: Path, text: str, field: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(InvalidFieldError) as caught:
        load_config(file, env={})
    assert caught.value.field == field
    assert "(from file)" in caught.value.message


def test_a_file_that_is_not_toml_is_refused_naming_it(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("port = = 1\n")
    with pytest.raises(InvalidFieldError, match="not valid TOML"):
        load_config(file, env={})
