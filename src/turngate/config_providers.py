"""The settings of a model provider (``[[providers]]``), and the built-in echo provider."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from turngate.config_types import Duration
from turngate.core.keys import ID_PATTERN


class ProviderConfig(BaseModel):
    """A model provider: where it is, how to authenticate, how long to wait for it.

    Agents name its models as ``<provider id>/<model>``. The API key is read from the
    environment variable ``api_key_env`` names, at start, and is never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
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
