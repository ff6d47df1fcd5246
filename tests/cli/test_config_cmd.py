"""``turngate config check`` and ``turngate config show``, run as the ``turngate`` command
would run them (it registers them): parse, resolve the shared options, call."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from tests.secrets import GATEWAY_TOKEN, REGISTRY_KEYS, TELEGRAM_BOT_TOKEN
from turngate.cli import config_cmd
from turngate.cli.common import ExitCode, resolve

KEY_VAR = "TURNGATE_TEST_CONFIG_CMD_KEY"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TURNGATE_* variable of the machine running the tests, and no ~/.turngate."""
    for name in list(os.environ):
        if name.startswith("TURNGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def turngate(*argv: str) -> int:
    """``turngate <argv>`` with only the config command registered."""
    parser = argparse.ArgumentParser(prog="turngate")
    config_cmd.register(parser.add_subparsers(required=True))
    args = resolve(parser.parse_args(argv))
    code: int = args.func(args)
    return code


THREE_ERRORS = """\
port = 70000

[[agents]]
id = "ops"
stall_timeout = -1

[[agents]]
id = "writer"
queue_mod = "collect"
"""


def test_config_check_on_a_file_with_three_errors_lists_three(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "three.toml"
    file.write_text(THREE_ERRORS)
    assert turngate("config", "check", "--config", str(file)) == ExitCode.CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"file {file} line 1: port must be <= 65535, got 70000",
        f"file {file} line 5: agents[0].stall_timeout must be > 0, got -1",
        f"file {file} line 9: agents[1].queue_mod is not a setting (did you mean queue_mode?)",
        "config invalid: 3 problems",
    ]


def test_config_check_of_a_good_file_says_ok_with_its_agents_and_providers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "good.toml"
    file.write_text('[[agents]]\nid = "ops"\n[[agents]]\nid = "writer"\n')
    assert turngate("config", "check", "--config", str(file)) == ExitCode.OK
    assert capsys.readouterr().out == f"config OK: {file}, 2 agents, 1 provider\n"


def test_config_check_without_a_file_says_defaults_and_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert turngate("config", "check", "--state-dir", str(tmp_path)) == ExitCode.OK
    assert capsys.readouterr().out == "config OK: defaults + environment, 0 agents, 1 provider\n"


def test_config_check_names_the_state_dir_file_and_the_variable_it_blames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "turngate.toml").write_text("port = 1000\nbogus = 1\n")
    monkeypatch.setenv("TURNGATE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("TURNGATE_SHUTDOWN_DRAIN_S", "forever")
    assert turngate("config", "check") == ExitCode.CONFIG
    assert capsys.readouterr().err.splitlines() == [
        "environment TURNGATE_SHUTDOWN_DRAIN_S: shutdown_drain_s must be a number, got 'forever'",
        f"the state dir's turngate.toml {tmp_path / 'turngate.toml'} line 2: bogus is not a"
        " setting",
        "config invalid: 2 problems",
    ]


PROVIDERS = f"""\
model = "gpt"
provider = "openai"

[[providers]]
id = "openai"
kind = "openai"
api_key_env = "{KEY_VAR}"

[[providers]]
id = "unused"
kind = "openai"
api_key_env = "{KEY_VAR}_UNUSED"
"""


def test_config_check_reports_an_unset_api_key_variable_of_a_provider_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(PROVIDERS)
    monkeypatch.delenv(KEY_VAR, raising=False)
    monkeypatch.delenv(f"{KEY_VAR}_UNUSED", raising=False)
    assert turngate("config", "check", "--config", str(file)) == ExitCode.CONFIG
    assert capsys.readouterr().err.splitlines() == [
        f"file {file} line 7: providers[0].api_key_env names {KEY_VAR}, which is not set in the"
        " environment (model openai/gpt needs its API key)",
        "config invalid: 1 problem",
    ]
    # The gateway reads only the keys of the providers its models use, and so does check.
    monkeypatch.setenv(KEY_VAR, REGISTRY_KEYS[0])
    assert turngate("config", "check", "--config", str(file)) == ExitCode.OK
    out, err = capsys.readouterr()
    assert (out, err) == (f"config OK: {file}, 0 agents, 3 providers\n", "")
    assert REGISTRY_KEYS[0] not in out


def test_config_check_json_lists_each_problem_with_its_key_and_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "three.toml"
    file.write_text(THREE_ERRORS)
    assert turngate("config", "check", "--json", "--config", str(file)) == ExitCode.CONFIG
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(p["key"], p["source"]) for p in report["problems"]] == [
        ("port", f"file {file} line 1"),
        ("agents[0].stall_timeout", f"file {file} line 5"),
        ("agents[1].queue_mod", f"file {file} line 9"),
    ]


def test_config_show_marks_each_value_s_source_and_never_prints_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(f'port = 1000\ntoken = "{GATEWAY_TOKEN}"\n\n[[agents]]\nid = "ops"\n')
    monkeypatch.setenv("TURNGATE_CONFIG", str(file))
    monkeypatch.setenv("TURNGATE_LOG_LEVEL", "debug")
    assert turngate("config", "show", "--state-dir", str(tmp_path)) == ExitCode.OK
    out = capsys.readouterr().out
    assert GATEWAY_TOKEN not in out
    # Columns are at least two spaces apart; no value here has two spaces in it.
    rows = {cells[0]: cells[1:] for cells in (re.split(" {2,}", line) for line in out.splitlines())}
    assert rows["KEY"] == ["VALUE", "SOURCE"]
    assert rows["port"] == ["1000", f"file {file} line 1"]
    assert rows["token"] == ['"[redacted]"', f"file {file} line 2"]
    assert rows["log_level"] == ['"debug"', "environment TURNGATE_LOG_LEVEL"]
    assert rows["state_dir"] == [f'"{tmp_path}"', "flag --state-dir"]
    assert rows["host"] == ['"127.0.0.1"', "default"]
    assert rows["log_file"] == ["(not set)", "default"]
    assert rows["agents[0]"][1] == f"file {file} line 4"
    assert json.loads(rows["agents[0]"][0])["id"] == "ops"


def test_config_show_json_redacts_a_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TURNGATE_TOKEN", GATEWAY_TOKEN)
    monkeypatch.setenv("TURNGATE_STATE_DIR", str(tmp_path))
    assert turngate("config", "show", "--json") == ExitCode.OK
    out = capsys.readouterr().out
    assert GATEWAY_TOKEN not in out
    settings = {row["key"]: row for row in json.loads(out)["settings"]}
    assert settings["token"] == {
        "key": "token",
        "value": "[redacted]",
        "source": "environment TURNGATE_TOKEN",
    }
    # From the variable, not the flag resolve() fills in from it.
    assert settings["state_dir"]["source"] == "environment TURNGATE_STATE_DIR"
    assert settings["agents"] == {"key": "agents", "value": [], "source": "default"}


def test_config_show_of_an_invalid_file_lists_its_problems_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[[agents]\n")
    assert turngate("config", "show", "--config", str(file)) == ExitCode.CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"file {file} line 1: is not valid TOML: expected ']]' at the end of an array"
        " declaration (column 9)",
        "config invalid: 1 problem",
    ]


def test_every_config_command_has_a_description_and_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("check", "show"):
        with pytest.raises(SystemExit):
            turngate("config", command, "--help")
        text = capsys.readouterr().out
        assert f"turngate config {command}" in text.split("examples:")[1]
        assert "--config FILE" in text
        assert "--json" in text


def test_config_check_reports_an_unset_token_variable_of_a_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(
        '[[channels]]\nid = "tg"\ntype = "telegram"\ntoken_env = "TG_CHECK_TOKEN"\nallow = ["*"]\n'
    )
    monkeypatch.delenv("TG_CHECK_TOKEN", raising=False)
    assert turngate("config", "check", "--config", str(file)) == ExitCode.CONFIG
    assert capsys.readouterr().err.splitlines() == [
        f"file {file} line 4: channels[0].token_env names TG_CHECK_TOKEN, which is not set in"
        " the environment (channel tg needs its token)",
        "config invalid: 1 problem",
    ]
    monkeypatch.setenv("TG_CHECK_TOKEN", TELEGRAM_BOT_TOKEN)
    assert turngate("config", "check", "--config", str(file)) == ExitCode.OK
    assert TELEGRAM_BOT_TOKEN not in capsys.readouterr().out
