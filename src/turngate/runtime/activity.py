"""What a run is doing besides talking: its tool calls, as they begin and return.

A run reports each as progress (:class:`~turngate.runtime.run.RunProgress`); its owner shows
them to the clients streaming the run's turns and in the session's running state, and counts
them in the gateway's metrics (through the engine's events).
"""

from __future__ import annotations

from dataclasses import dataclass

from turngate.core.transcript import ToolCall
from turngate.tools.base import ToolResult


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """A tool call of the run began."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool call of the run returned ``result`` after ``duration_s``."""

    call: ToolCall
    result: ToolResult
    duration_s: float


ToolActivity = ToolStarted | ToolFinished
"""A tool call's beginning or end: what the clients streaming a run see of its tools."""
Activity = ToolActivity
