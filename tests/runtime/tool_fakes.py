"""Tools for the agent-loop tests: an in-process :class:`ToolSource` whose tools are scripted,
and the model-side pieces that call them.

Each tool of a :class:`FakeTools` takes ``latency_s`` of (virtual) time and returns
``<name>: <arguments>``; ``hang`` waits until cancelled; ``wedged`` swallows cancellation for
``wedged_s``; ``fails`` returns an error result. Every call is recorded with how it ended:
``returned``, ``cancelled``, or still ``running``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from turngate.providers.base import ToolCallDelta
from turngate.sim.world import ignore_cancellation_for
from turngate.tools.base import ToolContext, ToolResult, ToolSpec

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}}


@dataclass(frozen=True, slots=True)
class FakeTool:
    """What one tool does when called."""

    name: str
    latency_s: float = 0.0
    hang: bool = False
    wedged_s: float = 0.0
    fails: bool = False


@dataclass(slots=True)
class Called:
    """One call a tool received, and how it ended."""

    name: str
    arguments: dict[str, Any]
    context: ToolContext
    ended: str = "running"


@dataclass(slots=True)
class FakeTools:
    """A :class:`~turngate.tools.base.ToolSource` of scripted tools."""

    tools: list[FakeTool]
    call_timeout_s: float = 30.0
    calls: list[Called] = field(default_factory=list)

    def specs(self) -> list[ToolSpec]:
        """Every tool, offered."""
        return [ToolSpec(tool.name, f"the {tool.name} tool", SCHEMA) for tool in self.tools]

    def owns(self, name: str) -> bool:
        """Its own tools' names."""
        return any(tool.name == name for tool in self.tools)

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Follow the tool's script, recording the call."""
        tool = next(tool for tool in self.tools if tool.name == name)
        called = Called(name, arguments, context)
        self.calls.append(called)
        try:
            if tool.wedged_s:
                await ignore_cancellation_for(tool.wedged_s)
            if tool.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(tool.latency_s)
        except asyncio.CancelledError:
            called.ended = "cancelled"
            raise
        called.ended = "returned"
        if tool.fails:
            return ToolResult(f"{name} failed", is_error=True)
        return ToolResult(f"{name}: {json.dumps(arguments, sort_keys=True)}", is_error=False)

    def ended(self) -> list[tuple[str, str]]:
        """``(tool, how it ended)`` of every call, in call order."""
        return [(called.name, called.ended) for called in self.calls]


def ask(*calls: tuple[str, str, str]) -> tuple[ToolCallDelta, ...]:
    """The deltas of a model asking for ``(call id, tool, q)`` calls, each whole."""
    return tuple(
        ToolCallDelta(index, call_id, name, json.dumps({"q": q}))
        for index, (call_id, name, q) in enumerate(calls)
    )
