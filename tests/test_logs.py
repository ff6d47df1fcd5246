"""Logs: abnormal paths carry their session, run and epoch, as text or as JSON lines."""

from __future__ import annotations

import json
import logging

import pytest

from turngate.logs import JsonFormatter, configure_logging
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
