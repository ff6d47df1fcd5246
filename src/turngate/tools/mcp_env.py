"""What an MCP server's configuration resolves to at start, from the gateway's environment.

A stdio server's ``env`` values are used as written, except a value written ``${NAME}``: that
is the gateway's variable ``NAME``. A Streamable HTTP server's ``headers_env`` maps each header
to the variable holding its whole value. Values read from the environment are the server's
*secrets*: blanked from every log line and error text (they are credentials, or may be).

A variable that is not set is a configuration problem retrying cannot fix: the server is
refused for good (:class:`~turngate.errors.ToolServerRefusedError`), naming the key and the
variable, never a value. Light: no SDK import (the CLI uses it to learn the secrets).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from turngate.config_mcp import McpServerConfig, env_reference
from turngate.errors import ToolServerRefusedError


@dataclass(frozen=True, slots=True)
class ServerEnvironment:
    """An MCP server's configuration, resolved."""

    env: dict[str, str]
    """Variables to set in a stdio server's environment."""
    headers: dict[str, str]
    """Headers to send with every request to a Streamable HTTP server."""
    secrets: tuple[str, ...]
    """The values read from the gateway's environment."""


def resolve_environment(config: McpServerConfig, environ: Mapping[str, str]) -> ServerEnvironment:
    """Read what ``config`` takes from ``environ``; raises :class:`ToolServerRefusedError` for
    a variable that is not set, or a header value no HTTP request can carry."""
    env: dict[str, str] = {}
    secrets: list[str] = []
    for name, value in config.env.items():
        variable = env_reference(value)
        if variable is None:
            env[name] = value
            continue
        env[name] = _read(config, f"env.{name}", variable, environ)
        secrets.append(env[name])
    headers: dict[str, str] = {}
    for header, variable in config.headers_env.items():
        value = _read(config, f"headers_env.{header}", variable, environ)
        if "\r" in value or "\n" in value:
            raise ToolServerRefusedError(
                f"MCP server {config.name}: headers_env.{header}: ${variable} holds a line"
                " break, which no HTTP header can carry"
            )
        headers[header] = value
        secrets.append(value)
    return ServerEnvironment(env, headers, tuple(secrets))


def configured_secrets(config: McpServerConfig, environ: Mapping[str, str]) -> list[str]:
    """The values ``config`` reads from ``environ`` that are set: what no log may show."""
    variables = [env_reference(value) for value in config.env.values()]
    variables += list(config.headers_env.values())
    return [environ[v] for v in variables if v is not None and environ.get(v)]


def _read(config: McpServerConfig, key: str, variable: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable)
    if value is None:
        raise ToolServerRefusedError(
            f"MCP server {config.name}: {key} names ${variable}, which is not set in the"
            " gateway's environment"
        )
    return value
