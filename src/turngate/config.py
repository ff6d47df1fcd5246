"""Typed settings: defaults, then a TOML file, then ``TURNGATE_*`` environment variables, then
command-line flags. Each later source overrides the earlier ones, key by key.

The file is ``--config PATH`` (or ``TURNGATE_CONFIG``); without either, ``turngate.toml`` in
the state directory is read if it exists. Keys are the field names of :class:`GatewayConfig`;
the environment variable of a key is ``TURNGATE_`` + the key in upper case
(``TURNGATE_ECHO_LATENCY_MS=300``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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


class ProviderConfig(BaseModel):
    """A model provider: where it is, how to authenticate, how long to wait for it.

    Agents name its models as ``<provider id>/<model>``. The API key is read from the
    environment variable ``api_key_env`` names, at start, and is never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    kind: Literal["openai", "anthropic", "echo"]
    base_url: str | None = None
    api_key_env: str | None = None
    connect_timeout: Duration = 10.0
    first_token_timeout: Duration = 60.0
    total_timeout: Duration = 600.0
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries on the same model for rate limits, 5xx, timeouts, before the next model."""
    retry_backoff: Duration = 0.5
    """Base of the exponential backoff (with full jitter) between those retries."""
    max_tokens: int = Field(default=4096, ge=1)
    """Output budget sent with each call (the Anthropic API requires one)."""


BUILTIN_ECHO = ProviderConfig(id="echo", kind="echo")
"""Always there: the offline echo model, ``echo/echo``."""


def _model_ref(value: str) -> str:
    provider, sep, model = value.partition("/")
    if not sep or not provider or not model:
        raise ValueError(f"{value!r}: a model is named '<provider id>/<model>', e.g. 'echo/echo'")
    return value


ModelRef = Annotated[str, AfterValidator(_model_ref)]
"""``<provider id>/<model>``."""


class AgentConfig(BaseModel):
    """One agent: its model, its prompt, its queue and timeouts, and its lanes."""

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
    provider: str = "echo"
    """The default agent's provider id (``echo`` is built in; others come from ``providers``)."""
    model: str = "echo"
    """The default agent's model at that provider."""
    fallbacks: tuple[ModelRef, ...] = ()
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
    log_file: Path | None = None
    """Also write the log to this file (rotated at ``log_file_bytes_max``, keeping
    ``log_file_backups`` old files); stderr gets it either way."""
    log_file_bytes_max: int = Field(default=10_485_760, ge=4096, le=1 << 40)
    log_file_backups: int = Field(default=5, ge=0, le=1000)
    token: str | None = Field(default=None, min_length=16, repr=False)
    """The gateway's shared secret (or ``TURNGATE_TOKEN``). Clients send it as
    ``Authorization: Bearer <token>`` or in the WebSocket ``connect`` frame. Required when
    ``host`` is not a loopback address."""
    ws_frames_per_s_max: float = Field(default=50.0, gt=0)
    """Per WebSocket connection: sustained request frames per second (a burst of twice that
    is allowed); past it, frames are refused with ``rate_limited``."""
    ws_frame_bytes_max: int = Field(default=1_048_576, ge=1024)
    ws_tick_interval_ms: int = Field(default=30_000, ge=10)
    """A ``tick`` event goes to every WebSocket client this often."""
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    """The server pings each WebSocket this often; one that does not answer within
    ``ws_ping_timeout_s`` is dropped (its turns go on)."""
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """A client must send a request's headers within this long of starting it (or of the
    connection opening); a slower one is answered ``408`` and dropped."""
    http_body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A request's whole body must arrive within this long of its headers."""
    http_keepalive_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    """An idle keep-alive connection is closed after this long."""
    connections_max: int = Field(default=1000, ge=1, le=1_000_000)
    """Open client connections (HTTP and WebSocket) at once; past it, a new connection is
    answered ``503 too_many_connections`` and closed."""
    shutdown_drain_s: float = Field(default=5.0, ge=0, le=3600)
    """On SIGTERM: how long turns already running get to finish before every client still
    waiting is answered ``503 pending`` (the turn is kept and resumes on restart)."""
    providers: tuple[ProviderConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    """Configured agents. With none, any agent id is served with the defaults above; with
    some, only those (and ``main``) are, and any other agent id is refused."""

    @model_validator(mode="after")
    def _token_when_exposed(self) -> GatewayConfig:
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set a gateway token"
                " (token in the config file, or TURNGATE_TOKEN) so that strangers cannot use"
                " this gateway"
            )
        return self

    @model_validator(mode="after")
    def _agents_are_unique(self) -> GatewayConfig:
        providers = {p.id for p in self.all_providers}
        refs = [f"{self.provider}/{self.model}", *self.fallbacks]
        refs += [ref for agent in self.agents for ref in (agent.model, *agent.fallbacks) if ref]
        for ref in refs:
            if ref.partition("/")[0] not in providers:
                raise ValueError(
                    f"model {ref!r}: no provider {ref.partition('/')[0]!r};"
                    f" configured: {', '.join(sorted(providers))}"
                )
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
    def all_providers(self) -> tuple[ProviderConfig, ...]:
        """The configured providers, plus the built-in ``echo`` unless one replaces it."""
        if any(p.id == BUILTIN_ECHO.id for p in self.providers):
            return self.providers
        return (*self.providers, BUILTIN_ECHO)

    @property
    def state_path(self) -> Path:
        """The state directory, with ``~`` expanded."""
        return self.state_dir.expanduser()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
