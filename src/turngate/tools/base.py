"""An agent's tools, as the agent loop sees them: what to offer the model, and how to call one.

The loop asks a :class:`Toolbox` for :meth:`~Toolbox.specs` before each model step and hands it
each tool call the model made, as the model wrote it: a name and a JSON text. A call never
raises for the tool's sake. Every way a tool call can fail is a :class:`ToolResult` with
``is_error`` set and a text the model can read and act on:

- an unknown tool, or one not offered to this agent (``allow`` / ``deny``);
- arguments that are not JSON, or not a JSON object;
- a tool server that is not connected, or that went away during the call;
- a tool that did not finish in time: its call is cancelled (the server is told), and the
  result says how long it was given;
- an error the tool itself reported;
- a bug in turngate (logged at ERROR with its traceback; the model only learns that the call
  failed).

Cancelling :meth:`Toolbox.call` (an abort of the turn) is not a failure of the tool: the
cancellation propagates to the caller, and the tool's server is told to stop.

A :class:`ToolSource` is one group of tools behind the toolbox: an MCP server
(:mod:`turngate.tools.mcp`), later the built-in tools. This module imports no SDK, so the
runtime may depend on it without loading one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("turngate.tools")

ARGUMENTS_CHARS_MAX = 1_000_000
"""A tool call's arguments longer than this are refused: no tool needs a bigger request."""
RESULT_CHARS_MAX = 100_000
"""A tool's result is cut to this many characters (with a note saying so): the model's
context is the limit that matters, and a runaway tool must not fill the transcript."""
NAMES_LISTED_MAX = 30
"""An unknown tool's error lists at most this many of the tools that are offered."""
_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as offered to the model."""

    name: str
    """Unique in its toolbox; fits ``^[a-zA-Z0-9_-]{1,64}$``, what model APIs accept."""
    description: str
    input_schema: dict[str, Any]
    """The JSON Schema of the tool's arguments (an object)."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: the session and run whose model made the call."""

    session_key: str
    run_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call gives back to the model."""

    content: str
    is_error: bool


class ToolSource(Protocol):
    """A group of tools: their specs, and the calls to them. :class:`Toolbox` parses the
    arguments, applies the deadline and catches what the source did not."""

    @property
    def call_timeout_s(self) -> float:
        """The longest a call to one of these tools may take."""
        ...

    def specs(self) -> list[ToolSpec]:
        """The tools offered now (a server that is not connected offers none)."""
        ...

    def owns(self, name: str) -> bool:
        """Whether ``name`` is this source's to answer, offered now or not (a call to the
        tool of a server that is down gets that server's answer, not "unknown tool")."""
        ...

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Run the tool for ``context``; a failure the source expects is an error result,
        not an exception."""
        ...


class Toolbox:
    """The tools of one agent: the union of its sources."""

    def __init__(self, sources: Sequence[ToolSource]) -> None:
        self._sources = tuple(sources)

    def specs(self) -> list[ToolSpec]:
        """What to offer the model now, in the sources' order."""
        return [spec for source in self._sources for spec in source.specs()]

    def timeout_for(self, name: str) -> float:
        """How long a call to ``name`` may take (0 for a tool no source answers)."""
        source = self._source_of(name)
        return 0.0 if source is None else source.call_timeout_s

    async def call(
        self,
        name: str,
        arguments_json: str,
        *,
        context: ToolContext,
        timeout_s: float = math.inf,
    ) -> ToolResult:
        """Call tool ``name`` with the model's ``arguments_json`` (empty means no arguments),
        for the run ``context`` names.

        The call gets ``timeout_s`` (the caller's budget) or the tool's own ``call_timeout_s``,
        whichever is shorter. Never raises for the tool's failure (see the module docstring);
        cancelling the caller cancels the call.
        """
        source = self._source_of(name)
        if source is None:
            return self._unknown(name)
        arguments = _parse_arguments(name, arguments_json)
        if isinstance(arguments, ToolResult):
            return arguments
        limit_s = min(timeout_s, source.call_timeout_s)
        deadline = asyncio.timeout(limit_s)
        try:
            async with deadline:
                result = await source.call(name, arguments, context)
        except TimeoutError:
            if not deadline.expired():
                raise  # raised by the tool's source itself: a failure, handled below
            log.warning(
                "session %s, run %s: tool %s did not finish within %gs; cancelled",
                context.session_key,
                context.run_id,
                name,
                limit_s,
                extra=_log_fields(context, "tool_timeout"),
            )
            return ToolResult(
                f"tool {name} did not finish within {limit_s:g}s and was cancelled",
                is_error=True,
            )
        except Exception:
            log.exception(
                "session %s, run %s: tool %s: the call failed unexpectedly",
                context.session_key,
                context.run_id,
                name,
                extra=_log_fields(context, "tool_failed"),
            )
            return ToolResult(
                f"tool {name} failed: an internal error in the gateway", is_error=True
            )
        return _bounded(result)

    def _source_of(self, name: str) -> ToolSource | None:
        return next((s for s in self._sources if s.owns(name)), None)

    def _unknown(self, name: str) -> ToolResult:
        offered = [spec.name for spec in self.specs()]
        listed = ", ".join(offered[:NAMES_LISTED_MAX])
        if len(offered) > NAMES_LISTED_MAX:
            listed += f", and {len(offered) - NAMES_LISTED_MAX} more"
        return ToolResult(
            f"unknown tool {name!r}; the tools offered are: {listed or 'none'}", is_error=True
        )


def _log_fields(context: ToolContext, event: str) -> dict[str, object]:
    """The structured fields of a log line about a call of ``context``'s run."""
    return {
        "session_key": context.session_key,
        "run_id": context.run_id,
        "epoch": context.epoch,
        "event": event,
    }


def _parse_arguments(name: str, arguments_json: str) -> dict[str, Any] | ToolResult:
    """The arguments as a JSON object, or the error result the model gets instead."""
    if len(arguments_json) > ARGUMENTS_CHARS_MAX:
        return ToolResult(
            f"the arguments of tool {name} are longer than {ARGUMENTS_CHARS_MAX} characters",
            is_error=True,
        )
    if not arguments_json.strip():
        # Models send an empty string for a tool without parameters.
        return {}
    try:
        arguments = json.loads(arguments_json)
    except (ValueError, RecursionError) as exc:
        return ToolResult(f"the arguments of tool {name} are not valid JSON: {exc}", is_error=True)
    if not isinstance(arguments, dict):
        kind = _JSON_KINDS.get(type(arguments), "value")
        return ToolResult(
            f"the arguments of tool {name} must be a JSON object, not {kind}", is_error=True
        )
    return arguments


def _bounded(result: ToolResult) -> ToolResult:
    if len(result.content) <= RESULT_CHARS_MAX:
        return result
    cut = len(result.content) - RESULT_CHARS_MAX
    content = f"{result.content[:RESULT_CHARS_MAX]}\n[{cut} more characters cut]"
    return ToolResult(content, result.is_error)
