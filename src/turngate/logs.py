"""Log output: readable text (the default) or one JSON object per line.

Abnormal paths log with structured fields (``session_key``, ``run_id``, ``epoch``,
``event``) passed as ``extra``; the JSON form carries them as keys, the text form appends
them.

No credential reaches a log line, whoever writes it (turngate, uvicorn, an SDK): the one
handler passes every record through :class:`Redactor`, which blanks the secrets it was given
(the gateway token, the providers' API keys) and anything that looks like a credential by its
shape (``token=`` in a URL, ``Authorization: Bearer ...``, ``"token": "..."`` in JSON).

Every line is named ``turngate.*``: uvicorn's records are renamed on their way through the
handler (``uvicorn.error`` becomes ``turngate.server``, ``uvicorn.access``
``turngate.access``). With ``log_file``, a second handler writes the same lines to a file
that rotates (the standard library's :class:`~logging.handlers.RotatingFileHandler`).

At start-up the gateway says what it loaded, one INFO line each (:func:`startup_lines`):
the configuration, the state directory, every agent, every provider (never a key), every
lane; then the server says where it listens.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from turngate.errors import InvalidFieldError

if TYPE_CHECKING:
    from turngate.config import GatewayConfig
    from turngate.config_providers import ProviderConfig

FIELDS = ("session_key", "run_id", "epoch", "event")
REDACTED = "[redacted]"
SECRET_CHARS_MIN = 8
"""Shorter values are placeholders, not secrets: blanking every ``none`` would garble logs."""
_CREDENTIAL_SHAPES = (
    # token=..., password=..., api_key=... in a URL's query or a form.
    re.compile(r"(?i)\b((?:access_|auth_|api[_-]?)?(?:token|password|secret|key)=)[^&\s\"']+"),
    # Authorization: Bearer ... / Basic ...
    re.compile(r"(?i)\b(authorization:?\s*(?:bearer|basic)\s+)[^\s\"',]+"),
    # "token": "...", 'password': '...' in JSON or a dict's repr.
    re.compile(r"""(?i)(["'](?:token|password|secret|api_?key|apiKey)["']\s*:\s*["'])[^"']*"""),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` and credential-shaped values blanked out."""
    for secret in secrets:
        if len(secret) >= SECRET_CHARS_MIN:
            text = text.replace(secret, REDACTED)
    for shape in _CREDENTIAL_SHAPES:
        text = shape.sub(rf"\1{REDACTED}", text)
    return text


class Redactor(logging.Filter):
    """Blanks credentials out of a record's message and traceback, before any formatter."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= SECRET_CHARS_MIN)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "session_key"?, "run_id"?, ...}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text  # the Redactor has already cleaned it
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


UVICORN_LOGGERS = {"uvicorn.error": "turngate.server", "uvicorn.access": "turngate.access"}
"""uvicorn's logger names, and the ``turngate.*`` names its lines are shown under."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FILE_BYTES_MAX = 10_485_760
LOG_FILE_BACKUPS = 5

_opened: list[logging.Handler] = []
"""The file handlers :func:`configure_logging` opened: closed when it is called again."""


class LoggerRenamer(logging.Filter):
    """Shows uvicorn's records under ``turngate.*`` names (:data:`UVICORN_LOGGERS`), so that
    every line of the gateway's log says which part of turngate wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.name = UVICORN_LOGGERS.get(record.name, record.name)
        return True


LIBRARY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "mcp")
"""Libraries that log every request (or every message) at INFO: above ``debug`` they log
WARNING and up, so that a model call or a tool call is not a log line of its own."""


def configure_logging(
    level: str,
    form: Literal["text", "json"],
    secrets: Iterable[str] = (),
    *,
    file: Path | None = None,
    file_bytes_max: int = LOG_FILE_BYTES_MAX,
    file_backups: int = LOG_FILE_BACKUPS,
) -> None:
    """Send every log record to stderr in ``form`` at ``level``, with ``secrets`` (and
    credential-shaped values) blanked out, and uvicorn's records named ``turngate.*``.

    With ``file``, the same lines also go to that file (its directory is created), which
    is rotated when it reaches ``file_bytes_max`` bytes, keeping ``file_backups`` old ones
    (``<file>.1`` is the newest). A file that cannot be opened raises
    :class:`InvalidFieldError` naming ``log_file``.
    """
    secrets = tuple(secrets)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if file is not None:
        handlers.append(_file_handler(file.expanduser(), file_bytes_max, file_backups))
    formatter = JsonFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in handlers:
        handler.addFilter(LoggerRenamer())
        handler.addFilter(Redactor(secrets))
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    quiet = logging.NOTSET if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    # A file opened by an earlier call would otherwise stay open until the process ends.
    for old in _opened:
        old.close()
    _opened[:] = handlers[1:]


def _file_handler(path: Path, bytes_max: int, backups: int) -> RotatingFileHandler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RotatingFileHandler(path, maxBytes=bytes_max, backupCount=backups, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InvalidFieldError("log_file", f"cannot open {path} for writing: {reason}") from None


def startup_lines(
    config: GatewayConfig,
    *,
    config_file: Path | None = None,
    store: str = "",
    model_override: str | None = None,
    cron_next_wall: Mapping[str, float] | None = None,
) -> list[str]:
    """What a gateway started with, one log line each: its configuration (``config_file``
    when the caller knows it), state directory and ``store``, agents, providers (id, kind,
    base URL and the variable its key is read from, never the key), and lanes, cron jobs with
    their next fire (``cron_next_wall``: job id to wall time) when known. ``model_override``
    names a provider that replaces every configured model (tests)."""
    where = f"file {config_file}" if config_file is not None else "no file named to the app"
    log_to = f"stderr and {config.log_file}" if config.log_file is not None else "stderr"
    lines = [
        f"config: {where}; host {config.host}, port {config.port},"
        f" log {config.log_level} as {config.log_format} to {log_to}",
        f"state dir: {config.state_path}" + (f" ({store})" if store else ""),
    ]
    if not config.agents:
        lines.append("agents: open (any agent id is served with main's settings)")
    if all(agent.id != "main" for agent in config.agents):
        lines.append(_agent_line("main", config.model_refs("main"), config.queue_mode.value))
    for agent in config.agents:
        refs = config.model_refs(agent.id)
        lines.append(_agent_line(agent.id, refs, (agent.queue_mode or config.queue_mode).value))
        tools = [f"MCP server {server.name}" for server in agent.mcp] + list(agent.tools)
        if tools:
            # The servers' tools are offered once each has started and listed them.
            lines.append(
                f"tools of agent {agent.id}: {', '.join(tools)}; max_steps {agent.max_steps}"
            )
    if model_override is not None:
        lines.append(f"models: every agent's model is replaced by {model_override}")
    lines.extend(_provider_line(provider) for provider in config.all_providers)
    lanes = []
    for agent in config.agents:
        if agent.heartbeat is not None:
            lanes.append(f"heartbeat of agent {agent.id}: every {_duration(agent.heartbeat.every)}")
        for job in agent.cron:
            next_wall = (cron_next_wall or {}).get(job.id)
            when = "" if next_wall is None else f", next {_utc(next_wall)}"
            lanes.append(f"cron job {job.id} of agent {agent.id}: {job.schedule!r} (UTC){when}")
    lines.extend(lanes or ["lanes: no heartbeat, no cron job"])
    return lines


def _agent_line(agent_id: str, refs: list[str], queue_mode: str) -> str:
    fallbacks = ", ".join(refs[1:]) or "none"
    return f"agent {agent_id}: model {refs[0]}, fallbacks {fallbacks}, queue {queue_mode}"


def _provider_line(provider: ProviderConfig) -> str:
    line = f"provider {provider.id}: kind {provider.kind}"
    if provider.base_url:
        line += f", base_url {_without_userinfo(provider.base_url)}"
    if provider.api_key_env:
        line += f", key from ${provider.api_key_env}"  # the variable's name, never its value
    return line


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (a credential some people put in a base URL)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def _utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="seconds")
