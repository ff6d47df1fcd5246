"""The settings of an agent's MCP tool server (``[[agents.mcp]]``): its transport, its
credentials (by environment variable, never written in the file), its tool filters."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from turngate.config_types import Duration

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
