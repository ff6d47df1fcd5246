"""The settings of one agent (``[[agents]]``): its model and fallbacks, its queue and
timeouts, its lanes (heartbeat, cron jobs) and its MCP tool servers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from turngate.config_mcp import McpServerConfig
from turngate.config_types import Duration, ModelRef
from turngate.core.keys import is_agent_id
from turngate.core.queue import QueueMode

BuiltinTool = Literal["sessions_send", "sessions_history"]
"""The names of the built-in tools an agent may enable."""


class HeartbeatConfig(BaseModel):
    """An agent's heartbeat: a turn every ``every``, through the same queue as users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: Duration
    prompt: str = (
        "Heartbeat: look at the conversation and report anything that needs attention."
        " If there is nothing to report, reply HEARTBEAT_OK."
    )
    isolated: bool = True
    """True: turns on ``agent:<id>:main:heartbeat``; false: on the agent's main session."""
    ok_token: str = "HEARTBEAT_OK"
    """A reply containing this token is recorded but not delivered."""


class CronJobConfig(BaseModel):
    """A scheduled turn: ``message`` sent to ``session`` at each time ``schedule`` names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    schedule: str
    message: str = Field(min_length=1)
    session: str | None = None
    """A session key of the agent; default ``agent:<id>:cron:<job id>``."""

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression like '0 9 * * 1-5'")
        return value


class AgentConfig(BaseModel):
    """One agent: its model, its prompt, its queue and timeouts, its lanes and its tools."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    model: ModelRef | None = None
    """Default: the gateway's ``provider``/``model``."""
    fallbacks: tuple[ModelRef, ...] = ()
    """Models tried in order when the one before fails with a provider error."""
    echo_latency_ms: float | None = Field(default=None, ge=0, le=600_000)
    system_prompt: str | None = None
    queue_mode: QueueMode | None = None
    max_queue: int | None = Field(default=None, ge=1, le=100_000)
    stall_timeout: Duration | None = None
    run_timeout: Duration | None = None
    heartbeat: HeartbeatConfig | None = None
    cron: tuple[CronJobConfig, ...] = ()
    mcp: tuple[McpServerConfig, ...] = ()
    """MCP tool servers (``[[agents.mcp]]``), each with its own ``name``."""
    tools: tuple[BuiltinTool, ...] = ()
    """Built-in tools its model may call (none unless listed): ``sessions_send`` queues a
    message to another session of this agent, ``sessions_history`` reads one, bounded."""
    max_steps: int = Field(default=24, ge=1, le=1000)
    """Model steps one run may take when the model calls tools (each step after the
    results of the one before); past them the turn fails with ``max_steps``."""

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not is_agent_id(value):
            raise ValueError(
                f"{value!r}: an agent id is 1-64 characters of a-z, 0-9, '_' or '-',"
                " starting with a letter or digit"
            )
        return value
