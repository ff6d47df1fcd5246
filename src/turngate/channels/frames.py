"""What the channels that read JSON frames from a socket share: parsing a frame, and
logging the bad ones without letting a peer flood the log or see a credential in it."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

from turngate.logs import redact

log = logging.getLogger("turngate.channels")

WARNINGS_PER_CONNECTION_MAX = 20
"""Bad frames logged per connection; past that, one line says the rest are not."""
EXCERPT_CHARS_MAX = 120


class BadFrames:
    """The bad frames of one connection: each logged at WARNING with an excerpt, credentials
    blanked, up to :data:`WARNINGS_PER_CONNECTION_MAX`."""

    def __init__(self, name: str, secrets: Sequence[str]) -> None:
        """``name`` starts each line (the channel and its generation)."""
        self.name = name
        self.count = 0
        self._secrets = tuple(secrets)

    def warn(self, what: str, raw: object) -> None:
        """Say that ``raw`` was ignored, and why."""
        self.count += 1
        if self.count > WARNINGS_PER_CONNECTION_MAX:
            return
        excerpt = redact(repr(raw)[:EXCERPT_CHARS_MAX], self._secrets)
        suffix = ""
        if self.count == WARNINGS_PER_CONNECTION_MAX:
            suffix = " (further bad frames on this connection are not logged)"
        log.warning(
            "%s: %s: %s%s", self.name, what, excerpt, suffix, extra={"event": "channel_bad_frame"}
        )

    def json_object(self, raw: str | bytes) -> dict[str, Any] | None:
        """``raw`` as a JSON object, or None (said) when it is not one."""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            frame = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            self.warn("ignored a frame that is not JSON", raw)
            return None
        if not isinstance(frame, dict):
            self.warn("ignored a frame that is not a JSON object", raw)
            return None
        return frame


def number(value: object) -> TypeGuard[float]:
    """A finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: object) -> TypeGuard[int]:
    """A JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["EXCERPT_CHARS_MAX", "WARNINGS_PER_CONNECTION_MAX", "BadFrames", "integer", "number"]
