"""The value types several parts of the configuration share: durations written with a unit,
and model references written ``<provider id>/<model>``.

Kept apart from the models that use them (providers, agents, MCP servers, channels, the
gateway's own settings), so that each of those modules imports them without a cycle.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """``"30m"``, ``"1.5h"``, ``"200ms"``, ``"45s"``, ``"2d"`` or a number of seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration like '30m', '45s', '1.5h' or '200ms'")
        return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""Seconds, written as a number or as text with a unit."""


def _model_ref(value: str) -> str:
    provider, sep, model = value.partition("/")
    if not sep or not provider or not model:
        raise ValueError(f"{value!r}: a model is named '<provider id>/<model>', e.g. 'echo/echo'")
    return value


ModelRef = Annotated[str, AfterValidator(_model_ref)]
"""``<provider id>/<model>``."""
