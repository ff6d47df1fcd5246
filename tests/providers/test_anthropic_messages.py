"""A Claude model through the Messages API behind a fallback chain, against a fake on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from tests.providers.fakes import (
    CALL_TIMEOUT_S,
    REPLY,
    REQUEST,
    SECRET_KEY,
    FakeModelServer,
    chain_of,
    collect,
    fake_provider,
    until_set,
)
from turngate.errors import ErrorCode, ProviderError, ProviderRejectedError


@pytest.mark.asyncio
async def test_text_deltas_stream_in_order_and_the_system_prompt_goes_to_system(
    server: FakeModelServer,
) -> None:
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        deltas = await collect(chain)
    assert deltas == list(REPLY)
    [call] = server.calls()
    assert call.api == "anthropic"
    assert call.body["system"] == "Be brief."
    assert call.body["messages"] == [{"role": "user", "content": "hi"}]
    assert call.body["max_tokens"] == 256
    assert call.body["stream"] is True
    assert call.headers["authorization"] == f"Bearer {SECRET_KEY}"  # how this SDK sends it


@pytest.mark.asyncio
async def test_an_overloaded_529_is_retried_and_the_reply_delivered(
    server: FakeModelServer,
) -> None:
    server.script("claude", [529, "ok"])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        assert "".join(await collect(chain)) == "".join(REPLY)
    assert [c.step for c in server.calls()] == [529, "ok"]


@pytest.mark.asyncio
async def test_an_overloaded_error_event_before_any_text_is_retried(
    server: FakeModelServer,
) -> None:
    server.script("claude", ["overloaded_in_stream", "ok"])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        assert "".join(await collect(chain)) == "".join(REPLY)
    assert [c.step for c in server.calls()] == ["overloaded_in_stream", "ok"]


@pytest.mark.asyncio
async def test_a_prompt_too_long_fails_with_context_too_long_and_is_not_retried(
    server: FakeModelServer,
) -> None:
    server.script("claude", ["context_too_long"])
    async with chain_of(fake_provider(server, "anthropic"), "claude", "backup") as chain:
        with pytest.raises(ProviderRejectedError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.CONTEXT_TOO_LONG
    assert caught.value.message == (
        "fake/claude: context too long (HTTP 400):"
        " prompt is too long: 210000 tokens > 200000 maximum"
    )
    assert len(server.calls()) == 1


@pytest.mark.asyncio
async def test_a_refusal_stop_is_content_refused_and_not_retried(server: FakeModelServer) -> None:
    server.script("claude", ["content_filter"])
    async with chain_of(fake_provider(server, "anthropic"), "claude", "backup") as chain:
        with pytest.raises(ProviderRejectedError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.CONTENT_REFUSED
    assert len(server.calls()) == 1


@pytest.mark.asyncio
async def test_when_both_models_are_overloaded_the_error_names_each(
    server: FakeModelServer,
) -> None:
    server.script("claude", [529])
    server.script("backup", [529])
    config = fake_provider(server, "anthropic", max_retries=0)
    async with chain_of(config, "claude", "backup") as chain:
        with pytest.raises(ProviderError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
    assert caught.value.message == (
        "all models failed: fake/claude: overloaded (529): scripted HTTP 529;"
        " fake/backup: overloaded (529): scripted HTTP 529"
    )


@pytest.mark.asyncio
async def test_aborting_mid_stream_hangs_up_on_the_server(server: FakeModelServer) -> None:
    server.script("claude", ["slow"])
    first_delta = asyncio.Event()
    async with chain_of(fake_provider(server, "anthropic", total_timeout=30.0), "claude") as chain:

        async def consume() -> None:
            async for _ in chain.stream(REQUEST):
                first_delta.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await first_delta.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await until_set(server.disconnected)
    assert len(server.calls()) == 1


@pytest.mark.asyncio
async def test_a_reply_abandoned_mid_stream_hangs_up_on_the_server(
    server: FakeModelServer,
) -> None:
    server.script("claude", ["slow"])
    async with chain_of(fake_provider(server, "anthropic", total_timeout=30.0), "claude") as chain:
        deltas = chain.stream(REQUEST)
        assert isinstance(deltas, AsyncGenerator)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            assert await anext(deltas) == "tick 0 "
            await deltas.aclose()
        assert await until_set(server.disconnected)
