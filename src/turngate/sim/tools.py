"""Tool-using turns in the simulated world: a model that calls tools, and faulty tools.

In a seed with tools (:func:`draw_tools`), each model step may end with calls to the sim's
tools instead of an answer, so a turn becomes a loop of steps under its lease. The tools
take their time, fail (an error result), hang until their deadline, or swallow cancellation
for a while; the clients' aborts, the leases, the crashes and the storage outages of the
seed land mid-tool. The checker then proves that every call has exactly one result (I10),
besides everything else.

Every draw comes from Randoms of their own, so that the seeds without tools keep the
schedules they had before tools existed.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

from turngate.providers.base import ProviderRequest, ToolCallDelta
from turngate.sim.world import Faults, ignore_cancellation_for
from turngate.tools.base import ToolContext, ToolResult, ToolSpec

TOOLS_SHARE = 0.35
"""Share of seeds whose model calls tools."""
TOOL_NAMES = ("sim_lookup", "sim_compute")
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}}


@dataclass(frozen=True, slots=True)
class ToolParams:
    """How a seed's model uses tools, and how its tools behave."""

    p_step: float
    """Chance a model step calls tools instead of answering."""
    calls_max: int
    """Calls per step, drawn from 1 to this (concurrent)."""
    latency_max_s: float
    p_fail: float
    """Chance a call returns an error result."""
    p_hang: float
    """Chance a call hangs until its deadline cancels it."""
    p_stubborn: float
    """Chance a call swallows cancellation for ``stubborn_s`` (a tool that ignores aborts)."""
    stubborn_s: float
    timeout_s: float
    """Each call's own deadline."""
    max_steps: int

    def line(self) -> str:
        """The parameters on one line."""
        return (
            f"p_step={self.p_step} calls<={self.calls_max} latency<={self.latency_max_s:.2f}s"
            f" p_fail={self.p_fail} p_hang={self.p_hang} p_stubborn={self.p_stubborn}"
            f" stubborn={self.stubborn_s:.1f}s timeout={self.timeout_s:.1f}s"
            f" max_steps={self.max_steps}"
        )


def draw_tools(seed: int, stall_timeout_s: float) -> ToolParams | None:
    """A seed's tools, or None for a seed whose model only talks."""
    rng = random.Random(f"tools-{seed}")
    if rng.random() >= TOOLS_SHARE:
        return None
    return ToolParams(
        p_step=rng.choice([0.3, 0.6, 0.9]),
        calls_max=rng.randint(1, 3),
        latency_max_s=rng.choice([0.0, 0.5, 3.0, stall_timeout_s * 1.5]),
        p_fail=rng.choice([0.0, 0.1]),
        p_hang=rng.choice([0.0, 0.05, 0.2]),
        p_stubborn=rng.choice([0.0, 0.05]),
        stubborn_s=rng.uniform(0.5, 3.0) * stall_timeout_s,
        timeout_s=rng.choice([0.5, 2.0, stall_timeout_s * 2]),
        max_steps=rng.randint(2, 6),
    )


class SimToolCalls:
    """The model's side: whether a step calls tools, and which (ids unique in the seed)."""

    def __init__(self, params: ToolParams, rng: random.Random) -> None:
        self.params = params
        self.rng = rng
        self.made = 0

    def calls(self, request: ProviderRequest) -> tuple[ToolCallDelta, ...]:
        """The calls this step makes (none: it answers)."""
        if not request.tools or self.rng.random() >= self.params.p_step:
            return ()
        offered = [tool.name for tool in request.tools]
        deltas: list[ToolCallDelta] = []
        for index in range(self.rng.randint(1, self.params.calls_max)):
            self.made += 1
            arguments = json.dumps({"q": f"q{self.made}"})
            deltas.append(
                ToolCallDelta(index, f"call-{self.made}", self.rng.choice(offered), arguments)
            )
        return tuple(deltas)


class SimTools:
    """The seed's tools (a :class:`~turngate.tools.base.ToolSource`); faults only while the
    seed's faults are on."""

    def __init__(self, params: ToolParams, rng: random.Random, faults: Faults) -> None:
        self.params = params
        self.rng = rng
        self.faults = faults

    @property
    def call_timeout_s(self) -> float:
        """Each call's own deadline."""
        return self.params.timeout_s

    def specs(self) -> list[ToolSpec]:
        """Every sim tool, always offered."""
        return [ToolSpec(name, f"the simulator's {name}", SCHEMA) for name in TOOL_NAMES]

    def owns(self, name: str) -> bool:
        """The sim tools' names."""
        return name in TOOL_NAMES

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Take a drawn time, then return; or fail, hang or swallow cancellation as drawn."""
        params, rng = self.params, self.rng
        fault = rng.random() if self.faults.on else 1.0
        latency = rng.uniform(0.0, params.latency_max_s)
        if fault < params.p_hang:
            await asyncio.Event().wait()
        if fault < params.p_hang + params.p_stubborn:
            await ignore_cancellation_for(params.stubborn_s)
        await asyncio.sleep(latency)
        if fault < params.p_hang + params.p_stubborn + params.p_fail:
            return ToolResult(f"{name}: injected failure", is_error=True)
        return ToolResult(f"{name}({arguments.get('q')}) for {context.run_id}", is_error=False)
