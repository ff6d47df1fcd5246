"""Settings come from defaults, a TOML file, TURNGATE_* variables and flags, in that order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.secrets import GATEWAY_TOKEN
from turngate.config import (
    DEFAULT_PORT,
    ConfigError,
    GatewayConfig,
    load_config,
    load_config_with_sources,
)
from turngate.config_sources import (
    REDACTED,
    Problem,
    SourceKind,
    effective_settings,
    is_secret,
)
from turngate.config_toml_lines import toml_key_lines
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


PYDANTIC_WORDS = re.compile(
    r"Value error|Assertion failed|Input should|Field required|Extra inputs|valid dictionary"
    r"|instance of|_parsing|_type\b|literal_error|extra_forbidden|pydantic",
)
"""Pydantic's own wording and error type names, none of which a user should read."""

NO_STATE_DIR = {"TURNGATE_STATE_DIR": "/nonexistent-turngate"}


def problems_of(config_file: Path | None = None, **kwargs: object) -> list[Problem]:
    """The problems load_config reports (it must report some)."""
    kwargs.setdefault("env", NO_STATE_DIR)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, **kwargs)  # type: ignore[arg-type]
    assert caught.value.message == "\n".join(str(p) for p in caught.value.problems)
    for problem in caught.value.problems:
        assert not PYDANTIC_WORDS.search(str(problem)), problem
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("port = 70000\n", "port", "port must be <= 65535, got 70000"),
        ('queue_mode = "sometimes"\n', "queue_mode", "must be one of 'followup', 'collect'"),
        ("stall_timeout_s = 0\n", "stall_timeout_s", "must be > 0, got 0"),
        ("unknown_key = 1\n", "unknown_key", "unknown_key is not a setting"),
        ('port = "abc"\n', "port", "port must be a whole number, got 'abc'"),
        ("history_entries_max = 1.5\n", "history_entries_max", "must be a whole number"),
        ('log_format = "xml"\n', "log_format", "must be one of 'text' or 'json', got 'xml'"),
        ('fallbacks = "echo/echo"\n', "fallbacks", "fallbacks must be a list"),
        ("agents = [1]\n", "agents[0]", "agents[0] must be a table"),
        ('[[agents]]\nid = "A"\n', "agents[0].id", "'A': an agent id is 1-64 characters"),
    ],
)
def test_a_bad_setting_is_refused_naming_it_its_file_and_line_in_plain_words(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    [problem] = problems_of(file)
    assert problem.key == field
    assert (problem.source.kind, problem.source.name) == (SourceKind.FILE, str(file))
    assert problem.source.line == text.count("\n")
    assert str(problem).startswith(f"file {file} line {text.count(chr(10))}: {field} ")
    assert words in str(problem)


THREE_ERRORS = """\
port = 70000
host = "127.0.0.1"

[[agents]]
id = "ops"

[[agents]]
id = "writer"
stall_timout = "5m"

[[agents.cron]]
id = "digest"
schedule = "every day"
message = "hi"
"""


def test_a_file_with_three_errors_reports_all_three_with_key_source_and_line(
    tmp_path: Path,
) -> None:
    file = tmp_path / "three.toml"
    file.write_text(THREE_ERRORS)
    problems = problems_of(file)
    assert [(p.key, p.source.line) for p in problems] == [
        ("port", 1),
        ("agents[1].stall_timout", 9),
        ("agents[1].cron[0].schedule", 13),
    ]
    assert all(p.source.name == str(file) for p in problems)
    assert "did you mean stall_timeout?" in problems[1].message
    assert "'every day' is not a cron expression" in problems[2].message


def test_an_error_set_by_an_environment_variable_names_the_variable(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text("port = 1000\n")
    [problem] = problems_of(file, env={**NO_STATE_DIR, "TURNGATE_PORT": "lots"})
    assert str(problem) == "environment TURNGATE_PORT: port must be a whole number, got 'lots'"


def test_an_error_set_by_a_flag_names_the_flag_and_never_the_file(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text("port = 1000\nstall_timeout_s = 5\n")
    problems = problems_of(file, overrides={"port": 70000, "stall_timeout_s": -1, "host": None})
    assert [str(p) for p in problems] == [
        "flag --port: port must be <= 65535, got 70000",
        "flag --stall-timeout-s: stall_timeout_s must be > 0, got -1",
    ]


def test_the_implicit_state_dir_file_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "turngate.toml").write_text('\nlog_level = "loud"\n')
    [problem] = problems_of(env={"TURNGATE_STATE_DIR": str(tmp_path)})
    assert problem.source.kind is SourceKind.STATE_DIR_FILE
    assert str(problem).startswith(
        f"the state dir's turngate.toml {tmp_path / 'turngate.toml'} line 2: log_level must be"
    )


def test_a_file_that_is_not_toml_is_one_problem_with_its_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("port = 1\nhost = = 1\n")
    [problem] = problems_of(file)
    assert problem.source.line == 2
    assert str(problem) == f"file {file} line 2: is not valid TOML: invalid value (column 8)"


def test_a_file_that_cannot_be_read_is_one_problem_naming_it(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "missing.toml")
    assert (
        str(problem)
        == f"file {tmp_path / 'missing.toml'}: cannot be read (No such file or directory)"
    )


def test_problems_across_keys_are_all_reported_at_their_own_keys(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(
        '[[agents]]\nid = "a"\nmodel = "nowhere/m"\n'
        '[[agents]]\nid = "a"\n[[agents.cron]]\nid = "j"\nschedule = "0 9 * * *"\nmessage = "x"\n'
        '[[agents.cron]]\nid = "j"\nschedule = "0 9 * * *"\nmessage = "y"\n'
    )
    problems = problems_of(file, env={**NO_STATE_DIR, "TURNGATE_HOST": "0.0.0.0"})
    assert [(p.key, str(p.source)) for p in problems] == [
        ("host", "environment TURNGATE_HOST"),
        ("agents[0].model", f"file {file} line 3"),
        ("agents[1].id", f"file {file} line 5"),
        ("agents[1].cron[1].id", f"file {file} line 11"),
    ]
    assert "set a gateway token" in problems[0].message
    assert "no provider 'nowhere'; configured: echo" in problems[1].message


def test_a_config_error_is_still_an_invalid_field_error_naming_its_first_key() -> None:
    with pytest.raises(InvalidFieldError) as caught:
        load_config(env=NO_STATE_DIR, overrides={"port": -1})
    assert caught.value.field == "port"
    assert caught.value.code == "invalid_field"


def test_a_secret_s_value_is_never_quoted_in_a_problem() -> None:
    short = "short-secret"
    [problem] = problems_of(overrides={"token": short})
    assert str(problem) == "flag --token: token must be at least 16 characters long"
    assert short not in str(problem)


def test_keys_are_located_in_array_tables_nested_tables_and_past_multi_line_values() -> None:
    text = """\
system_prompt = \"\"\"
[[agents]]
port = 1
\"\"\"
fallbacks = [
  "echo/a",  # [[not a header]]
]
"quoted.key" = 1
[[providers]]
id = "p"
[[agents]]
id = "a"
heartbeat = { every = "1m" }
[agents.cron_defaults]
x.y = 2
[[agents]]
id = "b"
[[agents.cron]]
id = "j"
"""
    assert toml_key_lines(text) == {
        ("system_prompt",): 1,
        ("fallbacks",): 5,
        ("quoted.key",): 8,
        ("providers",): 9,
        ("providers", 0): 9,
        ("providers", 0, "id"): 10,
        ("agents",): 11,
        ("agents", 0): 11,
        ("agents", 0, "id"): 12,
        ("agents", 0, "heartbeat"): 13,
        ("agents", 0, "cron_defaults"): 14,
        ("agents", 0, "cron_defaults", "x"): 15,
        ("agents", 0, "cron_defaults", "x", "y"): 15,
        ("agents", 1): 16,
        ("agents", 1, "id"): 17,
        ("agents", 1, "cron"): 18,
        ("agents", 1, "cron", 0): 18,
        ("agents", 1, "cron", 0, "id"): 19,
    }


def test_a_key_inside_an_inline_table_is_given_its_parent_key_s_line(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text('[[agents]]\nid = "a"\nheartbeat = { every = "soon" }\n')
    [problem] = problems_of(file)
    assert (problem.key, problem.source.line) == ("agents[0].heartbeat.every", 3)


def test_effective_settings_name_each_value_s_source_and_redact_secrets(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(f'port = 1000\ntoken = "{GATEWAY_TOKEN}"\n[[agents]]\nid = "ops"\n')
    env = {**NO_STATE_DIR, "TURNGATE_ECHO_LATENCY_MS": "5"}
    config, layers = load_config_with_sources(file, env=env, overrides={"queue_mode": "collect"})
    rows = {s.key: (s.value, str(s.source)) for s in effective_settings(config, layers)}
    assert rows["port"] == (1000, f"file {file} line 1")
    assert rows["token"] == (REDACTED, f"file {file} line 2")
    assert rows["echo_latency_ms"] == (5.0, "environment TURNGATE_ECHO_LATENCY_MS")
    assert rows["queue_mode"] == ("collect", "flag --queue-mode")
    assert rows["host"] == ("127.0.0.1", "default")
    assert rows["agents[0]"][0]["id"] == "ops"
    assert rows["agents[0]"][1] == f"file {file} line 3"
    assert rows["providers"] == ([], "default")
    assert set(rows) >= set(GatewayConfig.model_fields) - {"agents"}
    assert GATEWAY_TOKEN not in repr(rows)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("token", True),
        ("api_key", True),
        ("client_secret", True),
        ("password", True),
        ("token_env", False),
        ("api_key_env", False),
        ("first_token_timeout", False),
        ("max_tokens", False),
        ("ok_token", False),
    ],
)
def test_a_setting_is_secret_by_what_its_name_ends_with(name: str, secret: bool) -> None:
    """A name's last word says what its value is: a token is redacted, the name of the
    variable holding one or the time to wait for a model's first token is not."""
    assert is_secret(name) is secret


def test_the_store_is_sqlite_unless_a_postgresql_url_is_given(tmp_path: Path) -> None:
    assert GatewayConfig().store is None
    url = "postgresql://turngate@127.0.0.1:5432/turngate"
    assert GatewayConfig(store=url).store == url
    with pytest.raises(ValidationError, match="must be a PostgreSQL URL"):
        GatewayConfig(store="mysql://turngate@127.0.0.1/turngate")


def test_a_store_urls_password_is_never_shown(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text('store = "postgresql://turngate:hunter2-secret@db:5432/turngate"\n')
    config, layers = load_config_with_sources(file, env=NO_STATE_DIR)
    rows = {s.key: s.value for s in effective_settings(config, layers)}
    assert rows["store"] == f"postgresql://turngate:{REDACTED}@db:5432/turngate"
    assert "hunter2" not in repr(rows)
