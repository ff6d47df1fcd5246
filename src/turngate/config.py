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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
from turngate.core.queue import QueueMode
from turngate.errors import ErrorCode, InvalidFieldError, RequestError

DEFAULT_PORT = 18789
CROSS_FIELD_SINK = "turngate.cross_field_problems"
"""Validation context key: a list that collects :meth:`GatewayConfig.cross_field_problems`
instead of failing on the first."""


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


_MCP_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_TOOL_PATTERN = re.compile(r"^[A-Za-z0-9_*?!\[\]-]{1,128}$")


def env_reference(value: str) -> str | None:
    """The variable a value written ``${NAME}`` refers to, else None (the value is literal)."""
    match = _ENV_REFERENCE.match(value)
    return match.group(1) if match else None


class McpServerConfig(BaseModel):
    """An MCP tool server of one agent (``[[agents.mcp]]``): a command the gateway starts and
    talks to over stdio, or a Streamable HTTP endpoint.

    Its tools are offered to the agent's model as ``<name>__<tool>``. A tool whose namespaced
    name does not fit ``^[a-zA-Z0-9_-]{1,64}$`` (what model APIs accept: a dotted MCP name, a
    long one) is not offered, with a WARNING. Each agent starts its own connection to each of
    its servers; a stdio server that dies is started again, with backoff.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """The namespace of the server's tools: 1-32 characters of a-z, 0-9, '_' or '-' (no
    '__', no '_' at the end)."""
    command: str | None = None
    """A stdio server: the executable to start (found on ``PATH``)."""
    args: tuple[str, ...] = ()
    """A stdio server: its command-line arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    """A stdio server: variables set in its environment. A value written ``${NAME}`` is the
    gateway's own variable ``NAME``, read at start and never logged (put credentials there,
    not in this file); any other value is used as written. The server inherits nothing else
    of the gateway's environment but ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM`` and
    ``USER``: the gateway's own credentials stay out of its tools."""
    url: str | None = Field(default=None, validate_default=True)
    """A Streamable HTTP server: its endpoint (``http://`` or ``https://``)."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """A Streamable HTTP server: headers sent with every request, each mapped to the
    environment variable holding its whole value (``Authorization = "SEARCH_MCP_AUTH"``, the
    variable holding ``Bearer <token>``). Read at start, never logged."""
    tool_timeout: Duration = 60.0
    """How long one call of one of its tools may take; past it the call is cancelled (the
    server is told) and the model gets an error result saying so."""
    allow: tuple[str, ...] = ()
    """Glob patterns (``*``, ``?``, ``[...]``) on the namespaced names of the tools offered
    to the model (``fs__read_*``). Empty: every tool the server lists."""
    deny: tuple[str, ...] = ()
    """Glob patterns on namespaced names of tools never offered, even when allowed: deny
    wins."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _MCP_SERVER_NAME.match(value):
            raise ValueError(
                f"{value!r}: an MCP server name is 1-32 characters of a-z, 0-9, '_' or '-',"
                " starting with a letter or digit"
            )
        if "__" in value or value.endswith("_"):
            # Then no server's "<name>__" is the start of another's: a tool's name says
            # which server it is of.
            raise ValueError(
                f"{value!r}: an MCP server name has no '__' and does not end with '_' ('__'"
                " joins it to its tools' names)"
            )
        return value

    @field_validator("command")
    @classmethod
    def _valid_command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name an executable")
        return value

    @field_validator("args")
    @classmethod
    def _args_need_command(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if value and info.data.get("command") is None and "command" in info.data:
            raise ValueError("is only for a stdio server (one with a command)")
        return value

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if value and info.data.get("command") is None and "command" in info.data:
            raise ValueError("is only for a stdio server (one with a command)")
        for name, text in value.items():
            if not _ENV_VAR_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if "${" in text and env_reference(text) is None:
                # Only a whole value refers to a variable: a half-substituted one would
                # silently reach the server as written.
                raise ValueError(f"{name}: a reference is a whole value, written ${{NAME}}")
        return value

    @field_validator("url")
    @classmethod
    def _one_transport(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "command" not in info.data:
            return value  # the command is invalid: that is the one problem to report
        command = info.data["command"]
        if value is None and command is None:
            raise ValueError(
                "an MCP server needs either a command (stdio) or a url (Streamable HTTP)"
            )
        if value is not None and command is not None:
            raise ValueError("an MCP server has either a command or a url, not both")
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("headers_env")
    @classmethod
    def _valid_headers(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if value and info.data.get("url") is None and "url" in info.data:
            raise ValueError("is only for a Streamable HTTP server (one with a url)")
        for header, variable in value.items():
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_VAR_NAME.match(variable):
                raise ValueError(f"{header}: {variable!r} is not an environment variable name")
        return value

    @field_validator("allow", "deny")
    @classmethod
    def _valid_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not _TOOL_PATTERN.match(pattern):
                raise ValueError(
                    f"{pattern!r} is not a pattern on tool names (letters, digits, '_', '-'"
                    " and the wildcards '*', '?', '[...]')"
                )
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

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _AGENT_ID.match(value):
            raise ValueError(
                f"{value!r}: an agent id is 1-64 characters of a-z, 0-9, '_' or '-',"
                " starting with a letter or digit"
            )
        return value


DiscordIntent = Literal["guilds", "guild_messages", "direct_messages", "message_content"]
"""The Discord gateway intents a channel may ask for (what a text bot needs)."""


class ChannelConfig(BaseModel):
    """A bot on a chat platform, feeding one agent.

    Each peer gets a session ``agent:<agent>:<id>:direct:<peer>``, each group one
    ``agent:<agent>:<id>:group:<chat>``. The bot's credential is read from the environment
    variable ``token_env`` names, at start, and is never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    type: Literal["websocket", "telegram", "discord"]
    agent: str = "main"
    token_env: str | None = None
    """The environment variable holding the bot's token (required for ``telegram`` and
    ``discord``)."""
    url: str | None = None
    """``websocket``: the IM server to dial (``ws://`` or ``wss://``, required).
    ``telegram``: the Bot API's base URL (default ``https://api.telegram.org``).
    ``discord``: the gateway's URL (default ``wss://gateway.discord.gg``)."""
    api_url: str | None = None
    """``discord``: the REST API's base URL (default ``https://discord.com/api/v10``)."""
    intents: tuple[DiscordIntent, ...] | None = None
    """``discord``: the gateway intents to ask for. Default: ``guild_messages`` and
    ``direct_messages``, plus ``message_content`` (privileged: enable it in Discord's
    Developer Portal) when ``groups`` is ``all``."""
    allow: tuple[str, ...] = ()
    """Peer ids that may talk to the bot; ``"*"`` lets everyone. Empty: nobody (the gateway
    says so at start)."""
    refusal: str = ""
    """What a peer not allowed is told (empty: nothing; their message is not a turn)."""
    groups: Literal["mention", "all", "off"] = "mention"
    """In groups, answer messages that mention or reply to the bot, every message, or none."""
    group_allow: tuple[str, ...] = ("*",)
    """The groups the bot answers in, by id: a Telegram chat id, an IM server's chat, a
    Discord channel or server id; ``"*"``: every group it is in. Messages in other groups are
    not turns (and get no refusal: the group did not ask)."""
    failure_notice: bool = True
    """Tell the conversation when a turn ends without a reply (the model failed, it timed out)."""
    heartbeat: Duration = 30.0
    """``websocket``: how often to send a heartbeat (the server must answer within as long)."""
    poll_timeout: Duration = 30.0
    """``telegram``: how long one ``getUpdates`` long poll waits for news."""
    send_rate: float = Field(default=25.0, gt=0, le=10_000)
    """Messages a second the bot may send, in bursts of as many (Telegram allows about 30)."""

    @field_validator("url", "api_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(wss?|https?)://[^\s/]+", value):
            raise ValueError(f"{value!r} is not a ws://, wss://, http:// or https:// URL")
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
    channels: tuple[ChannelConfig, ...] = ()
    """Chat platform bots (``[[channels]]``)."""

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
