"""Logs: abnormal paths carry their session, run and epoch, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from turngate.errors import ErrorCode, TurngateError
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


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were, and any handler a test's
    configure_logging installed closed (so its file is released)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in saved:
                handler.close()
        root.handlers[:] = saved
        root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("form", ["text", "json"])
def test_uvicorn_lines_are_named_turngate_and_redacted(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    form: Literal["text", "json"],
) -> None:
    # A gateway served earlier in this process turned uvicorn's access logger off (as it is
    # in production, with access_log=False); this test wants its lines through.
    for name in ("uvicorn.error", "uvicorn.access"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    configure_logging("info", form, secrets=["the-gateway-secret-token"])
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request: token=s3cr3t-value")
    logging.getLogger("uvicorn.access").warning('"GET /health?token=the-gateway-secret-token"')
    err = capsys.readouterr().err
    assert "s3cr3t-value" not in err
    assert "the-gateway-secret-token" not in err
    assert "uvicorn" not in err
    if form == "json":
        lines = [json.loads(line) for line in err.splitlines()]
        assert [line["logger"] for line in lines] == ["turngate.server", "turngate.access"]
    else:
        assert "WARNING turngate.server Invalid HTTP request: token=[redacted]" in err
        assert "WARNING turngate.access" in err


@pytest.mark.usefixtures("root_logging")
def test_log_file_gets_the_same_redacted_lines_as_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "new" / "gateway.log"  # its directory does not exist yet
    configure_logging("info", "json", secrets=["the-gateway-secret-token"], file=path)
    logging.getLogger("turngate.test").info("hello the-gateway-secret-token")
    logging.getLogger("uvicorn.error").warning("server line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = path.read_text(encoding="utf-8")
    assert written == capsys.readouterr().err
    lines = [json.loads(line) for line in written.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("turngate.test", "hello [redacted]"),
        ("turngate.server", "server line"),
    ]


@pytest.mark.usefixtures("root_logging")
def test_log_file_rotates_at_its_size_keeping_its_backups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.log"
    configure_logging("info", "text", file=path, file_bytes_max=4096, file_backups=2)
    log = logging.getLogger("turngate.test")
    for i in range(200):  # about 20 kB: past the limit several times
        log.info("line %03d %s", i, "x" * 60)
    capsys.readouterr()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2"]
    assert all((tmp_path / name).stat().st_size <= 4096 for name in files)
    assert "line 199" in path.read_text(encoding="utf-8")


@pytest.mark.usefixtures("root_logging")
def test_a_log_file_that_cannot_be_opened_is_one_error_naming_log_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log's directory should be", encoding="utf-8")
    handlers = logging.getLogger().handlers[:]
    with pytest.raises(TurngateError) as caught:
        configure_logging("info", "text", file=blocker / "gateway.log")
    assert caught.value.code is ErrorCode.INVALID_FIELD
    assert caught.value.message.startswith(f"log_file: cannot open {blocker / 'gateway.log'}")
    assert "\n" not in caught.value.message
    assert logging.getLogger().handlers == handlers  # logging left as it was


@pytest.mark.usefixtures("root_logging")
def test_configuring_again_closes_the_log_file_opened_before(tmp_path: Path) -> None:
    configure_logging("info", "text", file=tmp_path / "first.log")
    (first,) = (h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler))
    configure_logging("info", "text", file=tmp_path / "second.log")
    assert first.stream is None  # closed


@pytest.mark.parametrize(("level", "library_level"), [("info", "WARNING"), ("debug", "NOTSET")])
def test_libraries_that_log_each_request_are_quiet_unless_debugging(
    level: str, library_level: str
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level, "text")
        assert logging.getLevelName(logging.getLogger("httpx2").level) == library_level
        assert logging.getLevelName(logging.getLogger("mcp").level) == library_level
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name in ("httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
            logging.getLogger(name).setLevel(logging.NOTSET)
