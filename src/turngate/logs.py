"""Log output: readable text (the default) or one JSON object per line.

Abnormal paths log with structured fields (``session_key``, ``run_id``, ``epoch``,
``event``) passed as ``extra``; the JSON form carries them as keys, the text form appends
them.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

FIELDS = ("session_key", "run_id", "epoch", "event")


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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, form: Literal["text", "json"]) -> None:
    """Send turngate's logs to stderr in ``form`` at ``level``."""
    handler = logging.StreamHandler()
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
