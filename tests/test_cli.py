"""The ``turngate`` command against a real gateway and a real state directory."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from tests.support import TOOL_EXCHANGE, running_gateway, store_exchange
from turngate.cli import build_parser, main
from turngate.cli.common import ExitCode
from turngate.cli.sessions_cmd import entry_lines
from turngate.core.transcript import TranscriptItem
from turngate.store.base import TranscriptEntry


def test_send_prints_the_reply_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(tmp_path) as url:
        code = main(["send", "--url", url, "--session", "agent:main:cli", "hello there"])
    assert code == 0
    assert capsys.readouterr().out == "echo: hello there\n"


def test_send_exits_by_status_when_the_turn_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(tmp_path) as url:
        code = main(["send", "--url", url, "--session", "agent:Bad:x", "hi"])
    assert code == 6
    assert "invalid_session_key" in capsys.readouterr().err


def test_send_to_a_gateway_that_is_not_there_exits_seven(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["send", "--url", "http://127.0.0.1:9", "hi"]) == 7
    assert "cannot reach" in capsys.readouterr().err


def test_sessions_list_show_and_export_read_the_state_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(tmp_path) as url:
        for message in ("one", "two"):
            assert main(["send", "--url", url, "--session", "agent:main:x", message]) == 0
    capsys.readouterr()
    assert main(["sessions", "--state-dir", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "agent:main:x" in listing
    assert main(["sessions", "--state-dir", str(tmp_path), "show", "agent:main:x"]) == 0
    shown = capsys.readouterr().out
    assert "[user] two" in shown
    assert "[assistant] echo: two" in shown
    out = tmp_path / "x.jsonl"
    assert (
        main(["sessions", "--state-dir", str(tmp_path), "export", "agent:main:x", "-o", str(out)])
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["role"], e["text"]) for e in lines] == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]
    assert all(e["epoch"] >= 1 and e["runId"] and e["at"].endswith("Z") for e in lines)


def test_sessions_show_and_export_tool_calls_and_results_with_their_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
    asyncio.run(store_exchange(tmp_path, "agent:main:t", TOOL_EXCHANGE, at))
    capsys.readouterr()
    assert main(["sessions", "--state-dir", str(tmp_path), "show", "agent:main:t"]) == 0
    shown = capsys.readouterr().out
    transcript = shown[shown.index("transcript (times UTC):\n") :].splitlines()[1:]
    when = "  2027-01-15 08:00:00  "
    assert transcript == [
        f"{when}[user] weather in Lisbon?",
        f"{when}[assistant] Let me look.",
        f'{when}[tool call c1] weather {{"city": "Lisbon"}}',
        f"{when}[tool call c2] forecast {{not json",
        f"{when}[tool result c1] weather: sunny, 24°C",
        f"{when}[tool error c2] forecast: arguments are not JSON",
        f"{when}[assistant] Sunny, 24°C.",
    ]
    out = tmp_path / "t.jsonl"
    command = ["sessions", "--state-dir", str(tmp_path), "export", "agent:main:t", "-o", str(out)]
    assert main(command) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    same = {
        "sessionKey": "agent:main:t",
        "runId": "tools-1",
        "epoch": 1,
        "at": "2027-01-15T08:00:00.000Z",
    }
    assert [{k: v for k, v in e.items() if k not in same} for e in exported] == [
        {"seq": 1, "role": "user", "text": "weather in Lisbon?"},
        {"seq": 2, "role": "assistant", "text": "Let me look."},
        {
            "seq": 3,
            "role": "toolCalls",
            "toolCalls": [
                {"id": "c1", "name": "weather", "arguments": '{"city": "Lisbon"}'},
                {"id": "c2", "name": "forecast", "arguments": "{not json"},
            ],
        },
        {
            "seq": 4,
            "role": "toolResult",
            "toolCallId": "c1",
            "toolName": "weather",
            "isError": False,
            "text": "sunny, 24°C",
        },
        {
            "seq": 5,
            "role": "toolResult",
            "toolCallId": "c2",
            "toolName": "forecast",
            "isError": True,
            "text": "arguments are not JSON",
        },
        {"seq": 6, "role": "assistant", "text": "Sunny, 24°C."},
    ]
    assert all({k: e[k] for k in same} == same for e in exported)
    assert main(["sessions", "--state-dir", str(tmp_path), "show", "--json", "agent:main:t"]) == 0
    assert json.loads(capsys.readouterr().out)["transcript"] == exported


def test_sessions_on_an_empty_state_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "--state-dir", str(tmp_path), "list"]) == ExitCode.STATE_DIR
    assert "no turngate.db" in capsys.readouterr().err


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    """The ``turngate`` parser and every command's, by their ``prog``."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        found.append((parser.prog, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
    return found


@pytest.mark.parametrize(("prog", "parser"), every_parser(), ids=lambda v: str(v))
def test_every_command_has_a_description_examples_and_clean_help(
    prog: str, parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    assert parser.description, prog
    assert "examples:" in text, prog
    assert "``" not in text, prog
    for action in parser._actions:
        if action.option_strings and action.help not in (None, argparse.SUPPRESS):
            assert action.metavar or action.nargs == 0 or action.choices, (prog, action.dest)
            help_text = str(action.help)
            if action.nargs != 0 and action.dest not in ("help", "version"):
                assert "default" in help_text or action.required, (prog, action.dest)
    for option, env_var in (("--url", "TURNGATE_URL"), ("--token", "TURNGATE_TOKEN")):
        if option in text:
            assert env_var in text, (prog, option)


def test_a_multi_line_text_is_shown_indented_under_its_entry() -> None:
    item = TranscriptItem.tool_result("c1", "notes__list", "1. milk\n2. eggs")
    entry = TranscriptEntry(3, "agent:main:t", item, "r1", 1, 1_800_000_000.0)
    assert entry_lines(entry) == [
        "  2027-01-15 08:00:00  [tool result c1] notes__list: 1. milk",
        "                       2. eggs",
    ]
