"""Logs: abnormal paths carry their session, run and epoch, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
from typing import Literal

import pytest

from turngate.logs import JsonFormatter, configure_logging, redact
from turngate.runtime.events import Event, EventBus, EventKind


def test_json_lines_carry_the_structured_fields_of_an_abnormal_event() -> None:
    record = logging.LogRecord("turngate.runtime", logging.WARNING, __file__, 1, "%s", ("x",), None)
    record.session_key = "agent:main:main"
    record.run_id = "r1"
    record.epoch = 3
    record.event = "fenced"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning"
    assert line["message"] == "x"
    assert (line["session_key"], line["run_id"], line["epoch"], line["event"]) == (
        "agent:main:main",
        "r1",
        3,
        "fenced",
    )


def test_every_abnormal_event_is_logged_at_warning_with_its_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    with caplog.at_level(logging.INFO, logger="turngate"):
        bus.emit(Event(EventKind.FENCED, 1.0, "agent:main:main", run_id="r1", epoch=2))
        bus.emit(Event(EventKind.ENDED, 1.0, "agent:main:main", turn_id="t", state="rejected"))
        bus.emit(Event(EventKind.ENDED, 1.0, "agent:main:main", turn_id="u", state="replied"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(getattr(r, "session_key", None) == "agent:main:main" for r in warnings)
    assert "run=r1" in warnings[0].getMessage()


def test_configure_logging_switches_between_text_and_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", "json")
        logging.getLogger("turngate.test").warning("hello", extra={"session_key": "agent:a:b"})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["message"], line["session_key"]) == ("hello", "agent:a:b")
        configure_logging("warning", "text")
        logging.getLogger("turngate.test").warning("plain")
        assert capsys.readouterr().err.rstrip().endswith("WARNING turngate.test plain")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('127.0.0.1:5 - "WebSocket /ws?token=s3cr3t-value" [accepted]', "token=[redacted]"),
        ("GET /x?a=1&api_key=s3cr3t-value&b=2", "api_key=[redacted]&b=2"),
        ("headers: Authorization: Bearer s3cr3t-value", "Bearer [redacted]"),
        ('params {"auth": {"token": "s3cr3t-value"}}', '"token": "[redacted]"'),
        ("{'password': 's3cr3t-value'}", "'password': '[redacted]'"),
        ("the configured one: the-gateway-secret-token", "the configured one: [redacted]"),
    ],
)
def test_credentials_are_blanked_by_their_shape_or_their_value(line: str, shown: str) -> None:
    redacted = redact(line, ["the-gateway-secret-token"])
    assert shown in redacted
    assert "s3cr3t-value" not in redacted
    assert "the-gateway-secret-token" not in redacted


def test_words_that_merely_end_in_key_are_left_alone() -> None:
    line = "session_key=agent:main:main idempotencyKey=abc monkey=banana"
    assert redact(line) == line


@pytest.mark.parametrize("form", ["text", "json"])
def test_no_handler_output_carries_the_secret_not_even_a_traceback(
    capsys: pytest.CaptureFixture[str], form: Literal["text", "json"]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", form, secrets=["the-gateway-secret-token"])
        log = logging.getLogger("turngate.test")
        log.warning("connect from %s", "ws://h/?token=the-gateway-secret-token")
        try:
            raise ValueError("bad token the-gateway-secret-token")
        except ValueError:
            log.exception("failed")
        err = capsys.readouterr().err
        assert "the-gateway-secret-token" not in err
        assert err.count("[redacted]") >= 2
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
