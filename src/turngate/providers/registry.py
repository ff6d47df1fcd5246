"""From model references (``<provider id>/<model>``) to one Provider: a fallback chain.

API keys are read here, once, from the environment mapping the caller passes (the process
environment in production), under the variable each provider's ``api_key_env`` names.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from turngate.config_providers import ProviderConfig
from turngate.errors import InvalidFieldError
from turngate.providers.base import Provider
from turngate.providers.echo import EchoProvider
from turngate.providers.fallback import ChainLink, FallbackChain


def build_chain(
    refs: Sequence[str],
    providers: Mapping[str, ProviderConfig],
    *,
    env: Mapping[str, str],
    echo_latency_s: float,
    rng: random.Random | None = None,
) -> FallbackChain:
    """A :class:`FallbackChain` with one link per ref, in order (even for a single ref).

    It is a Provider; its type is the chain's so that the owner can ``aclose()`` it at
    shutdown.

    ``providers`` maps provider ids to their configs (``GatewayConfig.all_providers`` keyed
    by id). The echo kind ignores the model name and answers after ``echo_latency_s``.
    """
    if not refs:
        raise InvalidFieldError("model", "no model to call: name at least one '<provider>/<model>'")
    links = []
    for ref in refs:
        provider_id, sep, model = ref.partition("/")
        if not sep or not provider_id or not model:
            raise InvalidFieldError(
                "model", f"{ref!r}: a model is named '<provider id>/<model>', e.g. 'echo/echo'"
            )
        config = providers.get(provider_id)
        if config is None:
            known = ", ".join(sorted(providers)) or "none"
            raise InvalidFieldError(
                "model", f"{ref!r}: no provider {provider_id!r}; configured: {known}"
            )
        links.append(
            ChainLink(
                ref,
                _provider(config, model, _api_key(config, ref, env), echo_latency_s),
                max_retries=config.max_retries,
                retry_backoff_s=config.retry_backoff,
            )
        )
    return FallbackChain(links, rng)


def _api_key(config: ProviderConfig, ref: str, env: Mapping[str, str]) -> str | None:
    if config.api_key_env is None:
        return None
    key = env.get(config.api_key_env)
    if not key:
        raise InvalidFieldError(
            f"providers.{config.id}.api_key_env",
            f"environment variable {config.api_key_env} is not set (model {ref} needs its key)",
        )
    return key


def _provider(
    config: ProviderConfig, model: str, api_key: str | None, echo_latency_s: float
) -> Provider:
    # The vendors' SDKs are imported only when a provider of theirs is configured: together
    # they cost about 55 MB of memory that an echo-only gateway does not need.
    if config.kind == "echo":
        return EchoProvider(latency_s=echo_latency_s)
    if config.kind == "openai":
        from turngate.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(config, model, api_key)
    from turngate.providers.anthropic_messages import AnthropicProvider

    return AnthropicProvider(config, model, api_key)
