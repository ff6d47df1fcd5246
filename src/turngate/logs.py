"""Log output: readable text (the default) or one JSON object per line.

Abnormal paths log with structured fields (``session_key``, ``run_id``, ``epoch``,
``event``) passed as ``extra``; the JSON form carries them as keys, the text form appends
them.

No credential reaches a log line, whoever writes it (turngate, uvicorn, an SDK): the one
handler passes every record through :class:`Redactor`, which blanks the secrets it was given
(the gateway token, the providers' API keys) and anything that looks like a credential by its
shape (``token=`` in a URL, ``Authorization: Bearer ...``, ``"token": "..."`` in JSON).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

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


def configure_logging(
    level: str, form: Literal["text", "json"], secrets: Iterable[str] = ()
) -> None:
    """Send every log record to stderr in ``form`` at ``level``, with ``secrets`` (and
    credential-shaped values) blanked out."""
    handler = logging.StreamHandler()
    handler.addFilter(Redactor(secrets))
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
