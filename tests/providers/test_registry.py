"""From model references and provider configs to a fallback chain."""

from __future__ import annotations

import pytest

from tests.providers.fakes import REQUEST, collect
from tests.secrets import REGISTRY_KEYS
from turngate.config_providers import BUILTIN_ECHO, ProviderConfig
from turngate.errors import InvalidFieldError
from turngate.providers.anthropic_messages import AnthropicProvider
from turngate.providers.echo import EchoProvider
from turngate.providers.fallback import FallbackChain
from turngate.providers.openai_compat import OpenAICompatProvider
from turngate.providers.registry import build_chain

OPENAI = ProviderConfig(
    id="openai", kind="openai", api_key_env="OPENAI_KEY", max_retries=3, retry_backoff=0.25
)
LOCAL = ProviderConfig(id="local", kind="openai", base_url="http://127.0.0.1:1/v1")
CLAUDE = ProviderConfig(id="claude", kind="anthropic", api_key_env="CLAUDE_KEY", max_retries=0)
PROVIDERS = {p.id: p for p in (OPENAI, LOCAL, CLAUDE, BUILTIN_ECHO)}
ENV = {"OPENAI_KEY": REGISTRY_KEYS[0], "CLAUDE_KEY": REGISTRY_KEYS[1]}


@pytest.mark.asyncio
async def test_each_ref_becomes_one_link_in_order_with_its_provider_s_retry_budget() -> None:
    refs = ["openai/gpt-4o-mini", "claude/claude-sonnet", "local/llama", "echo/echo"]
    chain = build_chain(refs, PROVIDERS, env=ENV, echo_latency_s=0.0)
    try:
        assert [link.ref for link in chain.links] == refs
        kinds = [type(link.provider) for link in chain.links]
        assert kinds == [
            OpenAICompatProvider,
            AnthropicProvider,
            OpenAICompatProvider,
            EchoProvider,
        ]
        assert [link.max_retries for link in chain.links] == [3, 0, 2, 2]
        assert chain.links[0].retry_backoff_s == 0.25
        assert [link.provider.name for link in chain.links[:3]] == [
            "openai/gpt-4o-mini",
            "claude/claude-sonnet",
            "local/llama",
        ]
    finally:
        await chain.aclose()


@pytest.mark.asyncio
async def test_a_single_echo_model_is_still_a_chain_and_ignores_the_model_name() -> None:
    chain = build_chain(["echo/anything"], PROVIDERS, env={}, echo_latency_s=0.0)
    assert isinstance(chain, FallbackChain)
    assert "".join(await collect(chain, REQUEST)) == "echo: hi"


def test_a_missing_api_key_variable_is_named_in_the_error() -> None:
    with pytest.raises(InvalidFieldError) as caught:
        build_chain(["openai/gpt-4o-mini"], PROVIDERS, env={}, echo_latency_s=0.0)
    assert caught.value.field == "providers.openai.api_key_env"
    assert "environment variable OPENAI_KEY is not set" in caught.value.message
    assert "openai/gpt-4o-mini" in caught.value.message


@pytest.mark.parametrize(
    ("refs", "words"),
    [
        (["nowhere/model"], "no provider 'nowhere'; configured: claude, echo, local, openai"),
        (["no-slash"], "'<provider id>/<model>'"),
        ([], "name at least one"),
    ],
)
def test_a_model_that_cannot_be_built_is_refused_with_a_clear_message(
    refs: list[str], words: str
) -> None:
    with pytest.raises(InvalidFieldError, match="model") as caught:
        build_chain(refs, PROVIDERS, env=ENV, echo_latency_s=0.0)
    assert words in caught.value.message
