"""Typed settings: defaults, then a TOML file, then ``TURNGATE_*`` environment variables, then
command-line flags. Each later source overrides the earlier ones, key by key.

The file is ``--config PATH`` (or ``TURNGATE_CONFIG``); without either, ``turngate.toml`` in
the state directory is read if it exists. Keys are the field names of :class:`GatewayConfig`;
the environment variable of a key is ``TURNGATE_`` + the key in upper case
(``TURNGATE_ECHO_LATENCY_MS=300``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turngate.core.queue import QueueMode
from turngate.errors import InvalidFieldError

DEFAULT_PORT = 18789
ENV_PREFIX = "TURNGATE_"


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
