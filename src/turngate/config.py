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
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from turngate.config_agents import AgentConfig
from turngate.config_channels import ChannelConfig
from turngate.config_providers import BUILTIN_ECHO, ProviderConfig
from turngate.config_sources import ENV_PREFIX as ENV_PREFIX
from turngate.config_sources import (
    ConfigLayers,
    Loc,
    Problem,
    in_reading_order,
    key_path,
    read_layers,
    validation_problems,
)
from turngate.config_types import ModelRef
from turngate.core.queue import QueueMode
from turngate.errors import ErrorCode, InvalidFieldError, RequestError

DEFAULT_PORT = 18789
CROSS_FIELD_SINK = "turngate.cross_field_problems"
"""Validation context key: a list that collects :meth:`GatewayConfig.cross_field_problems`
instead of failing on the first."""


STORE_SCHEMES = ("postgresql://", "postgres://")
"""The URLs ``store`` takes."""


class GatewayConfig(BaseModel):
    """Every setting of one gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    state_dir: Path = Path("~/.turngate")
    control_ui_dir: Path | None = None
    """OpenClaw's Control UI to serve at ``/`` (the ``dist/control-ui`` folder of an installed
    ``openclaw`` package); none: ``/`` serves only the WebSocket protocol."""
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
    store: str | None = None
    """Where turns, sessions and transcripts are kept: unset for SQLite in the state
    directory, or a ``postgresql://user@host:port/database`` URL, which several gateway
    processes may share. Also ``TURNGATE_STORE``. A password in the URL is never
    shown; libpq's ``PGPASSWORD`` or ``~/.pgpass`` keep it out of the file."""
    instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
    """This gateway process's name among those sharing a PostgreSQL store: unique to it
    while it runs (a second process with the same name is refused) and the same across its
    restarts (a restarted process takes its sessions back at once, instead of after
    ``session_claim_ttl_s``). Default: ``<hostname>:<port>``."""
    session_claim_ttl_s: float = Field(default=10.0, ge=0.5, le=3600)
    """How long a process's claim on a session lasts unless renewed (a third of it between
    renewals): when a process dies, another takes its sessions over within this long (plus
    ``claim_poll_s``)."""
    claim_poll_s: float = Field(default=1.0, gt=0, le=600)
    """How often a process looks for sessions nobody runs and for turns its clients wait for
    that another process runs (notices between processes wake it sooner)."""
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
    is allowed) sent while earlier requests of the connection are still unanswered; past it,
    frames are refused with ``rate_limited``. A request sent when every earlier one has been
    answered (a ``chat.send`` once its terminal ``chat`` event came) is never charged: a
    client that waits for its answers is paced by the gateway, however fast it is."""
    ws_frame_bytes_max: int = Field(default=1_048_576, ge=1024)
    ws_tick_interval_ms: int = Field(default=30_000, ge=10)
    """A ``tick`` event goes to every WebSocket client this often."""
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    """The server pings each WebSocket this often; one that does not answer within
    ``ws_ping_timeout_s`` is dropped (its turns go on)."""
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)
    ws_compression: bool = False
    """Accept permessage-deflate from WebSocket clients that offer it. Off by default: each
    compressed connection holds its deflate state (an idle one costs about 90 kB instead of
    30 kB) and every frame costs CPU to compress, for little gain on the small JSON frames of
    a chat. Turn it on for clients on slow links that get long replies."""
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
    channels: tuple[ChannelConfig, ...] = ()
    """Chat platform bots (``[[channels]]``)."""

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None or value.startswith(STORE_SCHEMES):
            return value
        raise ValueError(
            "must be a PostgreSQL URL like postgresql://turngate@db.example:5432/turngate"
            " (leave it unset for SQLite in the state directory)"
        )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> GatewayConfig:
        problems = self.cross_field_problems()
        sink = info.context.get(CROSS_FIELD_SINK) if isinstance(info.context, dict) else None
        if isinstance(sink, list):
            # load_config collects them all, each at its own key, to name where each came
            # from; a model built directly refuses them at once, as one error.
            sink.extend(problems)
        elif problems:
            raise ValueError("; ".join(f"{key_path(loc)} {text}" for loc, text in problems))
        return self

    def cross_field_problems(self) -> list[tuple[Loc, str]]:
        """What is wrong across keys (each key valid on its own): a missing token off
        loopback, models of unknown providers, agent or cron job ids used twice, an agent's
        MCP server names used twice."""
        problems: list[tuple[Loc, str]] = []
        if self.token is None and not is_loopback(self.host):
            problems.append(
                (
                    ("host",),
                    f"{self.host!r} is not a loopback address: set a gateway token (token in"
                    " the config file, or TURNGATE_TOKEN) so that strangers cannot use this"
                    " gateway",
                )
            )
        known = {p.id for p in self.all_providers}
        configured = ", ".join(sorted(known))
        if self.provider not in known:
            problems.append(
                (("provider",), f"{self.provider!r} is not a provider; configured: {configured}")
            )
        refs: list[tuple[Loc, str]] = [(("fallbacks", i), r) for i, r in enumerate(self.fallbacks)]
        for i, agent in enumerate(self.agents):
            if agent.model is not None:
                refs.append((("agents", i, "model"), agent.model))
            refs += [(("agents", i, "fallbacks", j), r) for j, r in enumerate(agent.fallbacks)]
        for loc, ref in refs:
            if ref.partition("/")[0] not in known:
                problems.append(
                    (
                        loc,
                        f"{ref!r}: no provider {ref.partition('/')[0]!r}; configured: {configured}",
                    )
                )
        agent_ids: dict[str, int] = {}
        job_ids: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.id in agent_ids:
                problems.append(
                    (("agents", i, "id"), f"{agent.id!r} is already agents[{agent_ids[agent.id]}]")
                )
            agent_ids.setdefault(agent.id, i)
            for j, job in enumerate(agent.cron):
                if job.id in job_ids:
                    problems.append(
                        (("agents", i, "cron", j, "id"), f"{job.id!r} is used by another cron job")
                    )
                job_ids.add(job.id)
            server_names: set[str] = set()
            for j, server in enumerate(agent.mcp):
                if server.name in server_names:
                    problems.append(
                        (
                            ("agents", i, "mcp", j, "name"),
                            f"{server.name!r} is the name of another MCP server of this agent",
                        )
                    )
                server_names.add(server.name)
        problems += self._channel_problems(agent_ids)
        return problems

    def _channel_problems(self, agent_ids: dict[str, int]) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, channel in enumerate(self.channels):
            if channel.id in seen:
                problems.append(
                    (("channels", i, "id"), f"{channel.id!r} is used by another channel")
                )
            seen.add(channel.id)
            if agent_ids and channel.agent != "main" and channel.agent not in agent_ids:
                problems.append(
                    (
                        ("channels", i, "agent"),
                        f"{channel.agent!r} is not an agent; configured: {', '.join(agent_ids)}",
                    )
                )
            if channel.type == "websocket" and channel.url is None:
                problems.append(
                    (("channels", i, "url"), "a websocket channel needs the IM server's ws:// URL")
                )
            if channel.type in ("telegram", "discord") and channel.token_env is None:
                problems.append(
                    (
                        ("channels", i, "token_env"),
                        f"a {channel.type} channel needs the environment variable holding its"
                        " bot token",
                    )
                )
        return problems

    @property
    def all_providers(self) -> tuple[ProviderConfig, ...]:
        """The configured providers, plus the built-in ``echo`` unless one replaces it."""
        if any(p.id == BUILTIN_ECHO.id for p in self.providers):
            return self.providers
        return (*self.providers, BUILTIN_ECHO)

    def model_refs(self, agent_id: str) -> list[str]:
        """The models of agent ``agent_id``, first to last (``<provider id>/<model>``): its
        own model and fallbacks, or, for an agent without a model of its own (and an agent
        not configured), the gateway's ``provider``/``model`` and ``fallbacks``."""
        agent = next((a for a in self.agents if a.id == agent_id), None)
        if agent is not None and agent.model:
            return [agent.model, *agent.fallbacks]
        return [f"{self.provider}/{self.model}", *self.fallbacks]

    @property
    def state_path(self) -> Path:
        """The state directory, with ``~`` expanded."""
        return self.state_dir.expanduser()

    @property
    def process_name(self) -> str:
        """This process's name among those sharing the store (see ``instance``). On SQLite,
        which one process uses at a time, always ``local``."""
        if self.store is None:
            return "local"
        return self.instance or f"{socket.gethostname()}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(InvalidFieldError):
    """The configuration is invalid: every problem found, one per line of the message, each
    naming its source (file and line, variable or flag) and its key path."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        # Not InvalidFieldError.__init__, which prefixes one field: each line names its own.
        RequestError.__init__(
            self, "\n".join(str(p) for p in self.problems), code=ErrorCode.INVALID_FIELD
        )
        self.field = self.problems[0].key if self.problems and self.problems[0].key else "config"


def load_config(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Merge defaults, file, environment and ``overrides`` (flags, keyed by field name; None
    values are ignored). Raises :class:`ConfigError` listing every problem."""
    return load_config_with_sources(config_file, env=env, overrides=overrides)[0]


def load_config_with_sources(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[GatewayConfig, ConfigLayers]:
    """:func:`load_config`, and the layers it merged (to tell where each value came from)."""
    layers, problems = read_layers(
        config_file,
        env=os.environ if env is None else env,
        overrides=overrides or {},
        fields=GatewayConfig.model_fields,
    )
    if problems:
        raise ConfigError(problems)
    cross: list[tuple[Loc, str]] = []
    try:
        config = GatewayConfig.model_validate(layers.merged(), context={CROSS_FIELD_SINK: cross})
    except ValidationError as exc:
        problems = validation_problems(exc, layers, GatewayConfig)
        raise ConfigError(in_reading_order(problems)) from exc
    if cross:
        raise ConfigError(in_reading_order(layers.problem(loc, text) for loc, text in cross))
    return config, layers
