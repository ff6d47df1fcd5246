"""Typed settings: defaults, then a TOML file, then ``TURNGATE_*`` environment variables, then
command-line flags. Each later source overrides the earlier ones, key by key.

The file is ``--config PATH`` (or ``TURNGATE_CONFIG``); without either, ``turngate.toml`` in
the state directory is read if it exists. Keys are the field names of :class:`GatewayConfig`;
the environment variable of a key is ``TURNGATE_`` + the key in upper case
(``TURNGATE_ECHO_LATENCY_MS=300``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from turngate.core.queue import QueueMode
from turngate.errors import InvalidFieldError

DEFAULT_PORT = 18789
ENV_PREFIX = "TURNGATE_"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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
    """One agent: its model, its prompt, its queue and timeouts, and its lanes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    provider: Literal["echo"] = "echo"
    model: str | None = None
    echo_latency_ms: float | None = Field(default=None, ge=0, le=600_000)
    system_prompt: str | None = None
    queue_mode: QueueMode | None = None
    max_queue: int | None = Field(default=None, ge=1, le=100_000)
    stall_timeout: Duration | None = None
    run_timeout: Duration | None = None
    heartbeat: HeartbeatConfig | None = None
    cron: tuple[CronJobConfig, ...] = ()

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _AGENT_ID.match(value):
            raise ValueError(
                f"{value!r}: an agent id is 1-64 characters of a-z, 0-9, '_' or '-',"
                " starting with a letter or digit"
            )
        return value


class GatewayConfig(BaseModel):
    """Every setting of one gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    state_dir: Path = Path("~/.turngate")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    provider: Literal["echo"] = "echo"
    echo_latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    queue_mode: QueueMode = QueueMode.FOLLOWUP
    queue_turns_max: int = Field(default=100, ge=1, le=100_000)
    stall_timeout_s: float = Field(default=60.0, gt=0)
    run_timeout_s: float = Field(default=600.0, gt=0)
    abort_grace_s: float = Field(default=5.0, ge=0)
    turn_timeout_s: float = Field(default=900.0, gt=0)
    history_entries_max: int = Field(default=40, ge=0, le=10_000)
    restart_attempts_max: int = Field(default=3, ge=1)
    system_prompt: str | None = None
    body_bytes_max: int = Field(default=1_048_576, ge=1024)
    message_chars_max: int = Field(default=65_536, ge=1)
    sqlite_durability: Literal["normal", "full"] = "normal"
    log_format: Literal["text", "json"] = "text"
    agents: tuple[AgentConfig, ...] = ()
    """Configured agents. With none, any agent id is served with the defaults above; with
    some, only those (and ``main``) are, and any other agent id is refused."""

    @model_validator(mode="after")
    def _agents_are_unique(self) -> GatewayConfig:
        seen: set[str] = set()
        jobs: set[str] = set()
        for agent in self.agents:
            if agent.id in seen:
                raise ValueError(f"agents: agent id {agent.id!r} is defined twice")
            seen.add(agent.id)
            for job in agent.cron:
                if job.id in jobs:
                    raise ValueError(f"agents.{agent.id}.cron: job id {job.id!r} is used twice")
                jobs.add(job.id)
        return self

    @property
    def state_path(self) -> Path:
        """The state directory, with ``~`` expanded."""
        return self.state_dir.expanduser()


def load_config(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Merge defaults, file, environment and ``overrides`` (flags; None values are ignored)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_env = {
        name: env[ENV_PREFIX + name.upper()]
        for name in GatewayConfig.model_fields
        if ENV_PREFIX + name.upper() in env
    }
    if config_file is None and ENV_PREFIX + "CONFIG" in env:
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None:
        state_dir = flags.get("state_dir") or from_env.get("state_dir") or "~/.turngate"
        candidate = Path(state_dir).expanduser() / "turngate.toml"
        config_file = candidate if candidate.is_file() else None
    from_file: dict[str, Any] = {}
    if config_file is not None:
        try:
            from_file = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidFieldError("config", f"cannot read {config_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidFieldError("config", f"{config_file} is not valid TOML: {exc}") from exc
    merged = {**from_file, **from_env, **flags}
    try:
        return GatewayConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "config"
        source = "flag" if field in flags else "environment" if field in from_env else "file"
        raise InvalidFieldError(field, f"{first['msg']} (from {source})") from exc
