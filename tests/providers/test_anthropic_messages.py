"""A Claude model through the Messages API behind a fallback chain, against a fake on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tests.providers.fakes import (
    CALL_TIMEOUT_S,
    COMPLETION_TOKENS,
    CUT_OFF_DELTAS,
    PROMPT_TOKENS,
    REPLY,
    REQUEST,
    SECRET_KEY,
    FakeModelServer,
    RawReply,
    answer,
    anthropic_event,
    chain_of,
    collect,
    fake_provider,
    until_set,
)
from turngate.errors import ErrorCode, ProviderError, ProviderRejectedError
from turngate.providers.anthropic_messages import AnthropicProvider
from turngate.providers.base import Finish, TextDelta, Usage


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
        events = chain.stream(REQUEST)
        assert isinstance(events, AsyncGenerator)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            assert await anext(events) == TextDelta("tick 0 ")
            await events.aclose()
        assert await until_set(server.disconnected)


# -- answers that are not a reply ------------------------------------------------------------

NOT_FINISHED = "the answer stopped before the model finished it (no message_stop)"
NO_TEXT = "the model finished without any text"
BROKEN_BEFORE_ANY_TEXT = [
    ("cut_off_before_text", "incomplete_response", NOT_FINISHED),
    ("only_done", "empty_response", NO_TEXT),
    ("empty_finish", "empty_response", NO_TEXT),
    ("bad_sse", "bad_response", "an event's data is not JSON (Expecting value)"),
    ("wrong_shape", "bad_response", "a content_block_delta without a typed delta"),
    (
        "html_page",
        "bad_response",
        "the answer is not an event stream (HTTP 200, content-type text/html; charset=utf-8):"
        " <html> <head><title>502 Bad Gateway</title></head>",
    ),
]
"""(step, code, the start of the message after the model's name)."""


def event(kind: str, **data: Any) -> bytes:
    """One event of type ``kind`` with ``data``, worded as the Messages API streams it."""
    return anthropic_event(kind, {"type": kind, **data})


HELLO = event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello"})
END = event("message_delta", delta={"stop_reason": "end_turn"}) + event("message_stop")
NO_TYPE = "an event without a type"
NO_STOP_REASON = "a message_delta without a stop_reason"


async def broken_answer(server: FakeModelServer) -> tuple[ProviderError, list[str]]:
    """Call ``claude`` once, straight (no chain); the error it raised and its deltas."""
    provider = AnthropicProvider(fake_provider(server, "anthropic"), "claude", SECRET_KEY)
    deltas: list[str] = []
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider, into=deltas)
    finally:
        await provider.aclose()
    return caught.value, deltas


@pytest.mark.asyncio
async def test_a_stream_cut_off_before_message_stop_is_incomplete_not_a_reply(
    server: FakeModelServer,
) -> None:
    server.script("claude", ["cut_off"])
    error, deltas = await broken_answer(server)
    assert deltas == list(REPLY[:CUT_OFF_DELTAS])
    assert error.code == "incomplete_response"
    assert error.message == f"fake/claude: {NOT_FINISHED}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("step", "code", "why"), BROKEN_BEFORE_ANY_TEXT, ids=[s for s, _, _ in BROKEN_BEFORE_ANY_TEXT]
)
async def test_a_broken_answer_is_a_provider_error_with_its_own_code(
    server: FakeModelServer, step: str, code: str, why: str
) -> None:
    server.script("claude", [step])
    error, deltas = await broken_answer(server)
    assert deltas == []
    assert error.code == code
    assert error.message.startswith(f"fake/claude: {why}"), error.message


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("wrong", "why"),
    [
        pytest.param(anthropic_event("content_block_delta", {"index": 0}), NO_TYPE, id="no-type"),
        pytest.param(anthropic_event("content_block_delta", [1, 2]), NO_TYPE, id="a-list"),
        pytest.param(
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": 42}),
            "a text_delta whose text is not text",
            id="text-a-number",
        ),
        pytest.param(
            event("content_block_delta", index=0),
            "a content_block_delta without a typed delta",
            id="no-delta",
        ),
        pytest.param(event("message_delta", usage={}), NO_STOP_REASON, id="no-message-delta"),
        pytest.param(
            event("message_delta", delta={"stop_reason": 7}),
            NO_STOP_REASON,
            id="stop-reason-a-number",
        ),
    ],
)
async def test_an_event_of_the_wrong_shape_is_a_bad_response_not_a_crash(
    server: FakeModelServer, wrong: bytes, why: str
) -> None:
    server.script("claude", [RawReply(wrong + HELLO + END)])
    error, deltas = await broken_answer(server)
    assert deltas == []
    assert (error.code, error.message) == ("bad_response", f"fake/claude: {why}")


@pytest.mark.asyncio
async def test_events_of_a_type_this_gateway_does_not_know_are_skipped(
    server: FakeModelServer,
) -> None:
    # Anthropic adds event types and asks clients to ignore the ones they do not know.
    novel = event("brand_new_event", detail={"anything": True})
    thinking = event("content_block_delta", index=0, delta={"type": "thinking_delta"})
    server.script("claude", [RawReply(novel + thinking + HELLO + END)])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        assert await collect(chain) == ["Hello"]


@pytest.mark.asyncio
@pytest.mark.parametrize("step", ["cut_off_before_text", "empty_finish", "bad_sse", "html_page"])
async def test_a_broken_answer_is_retried_then_the_next_model_s_reply_is_delivered(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture, step: str
) -> None:
    server.script("claude", [step, step])
    config = fake_provider(server, "anthropic", max_retries=1)
    with caplog.at_level(logging.DEBUG):
        async with chain_of(config, "claude", "backup") as chain:
            deltas = await collect(chain)
    assert "".join(deltas) == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["claude", "claude", "backup"]
    warnings = [r for r in caplog.records if r.name == "turngate.providers"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in caplog.records)


@pytest.mark.asyncio
async def test_a_stream_cut_off_after_its_text_fails_the_turn_and_no_second_answer_is_spliced(
    server: FakeModelServer,
) -> None:
    server.script("claude", ["cut_off"])
    deltas: list[str] = []
    async with chain_of(fake_provider(server, "anthropic"), "claude", "backup") as chain:
        with pytest.raises(ProviderError) as caught:
            await collect(chain, into=deltas)
    assert deltas == list(REPLY[:CUT_OFF_DELTAS])
    assert caught.value.code == "incomplete_response"
    assert [c.model for c in server.calls()] == ["claude"]


@pytest.mark.asyncio
async def test_an_answer_cut_by_max_tokens_is_delivered(server: FakeModelServer) -> None:
    server.script("claude", ["truncated"])
    async with chain_of(fake_provider(server, "anthropic"), "claude", "backup") as chain:
        assert await collect(chain) == list(REPLY)
    assert [c.model for c in server.calls()] == ["claude"]


# -- token usage ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_finished_answer_reports_input_tokens_and_the_last_output_count(
    server: FakeModelServer,
) -> None:
    # message_start says output_tokens 1, message_delta the final count: a running total.
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        got = await answer(chain)
    assert got.deltas == list(REPLY)
    assert got.finish.usage == Usage(PROMPT_TOKENS, COMPLETION_TOKENS)


@pytest.mark.asyncio
@pytest.mark.parametrize(("step", "reason"), [("ok", "stop"), ("truncated", "length")])
async def test_the_stream_ends_with_one_finish_carrying_the_stop_reason_and_usage(
    server: FakeModelServer, step: str, reason: str
) -> None:
    # Anthropic's end_turn and max_tokens, in the words every provider's Finish uses.
    server.script("claude", [step])
    provider = AnthropicProvider(fake_provider(server, "anthropic"), "claude", SECRET_KEY)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            events = [event async for event in provider.stream(REQUEST)]
    finally:
        await provider.aclose()
    usage = Usage(PROMPT_TOKENS, COMPLETION_TOKENS)
    assert events == [*(TextDelta(text) for text in REPLY), Finish(reason, usage)]


@pytest.mark.asyncio
async def test_cached_prompt_tokens_count_as_prompt_tokens(server: FakeModelServer) -> None:
    usage = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": None,  # null: not known yet, then given by message_delta
        "output_tokens": 1,
    }
    start = event("message_start", message={"id": "msg_fake", "usage": usage})
    stop = event(
        "message_delta",
        delta={"stop_reason": "end_turn"},
        usage={"output_tokens": 7, "cache_read_input_tokens": 200},
    )
    server.script("claude", [RawReply(start + HELLO + stop + event("message_stop"))])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        got = await answer(chain)
    assert got.deltas == ["Hello"]
    assert got.finish.usage == Usage(303, 7)


@pytest.mark.asyncio
async def test_a_stream_that_reports_no_usage_reports_none(server: FakeModelServer) -> None:
    server.script("claude", [RawReply(HELLO + END)])
    async with chain_of(fake_provider(server, "anthropic"), "claude") as chain:
        got = await answer(chain)
    assert got.deltas == ["Hello"]
    assert got.finish.usage is None


@pytest.mark.asyncio
async def test_only_the_model_that_answered_counts_when_the_first_fails_mid_stream(
    server: FakeModelServer,
) -> None:
    # The failed attempt's message_start reported its input tokens before the error event.
    server.script("claude", ["overloaded_in_stream"])
    config = fake_provider(server, "anthropic", max_retries=0)
    async with chain_of(config, "claude", "backup") as chain:
        got = await answer(chain)
    assert got.deltas == list(REPLY)
    assert [c.model for c in server.calls()] == ["claude", "backup"]
    assert got.finish.usage == Usage(PROMPT_TOKENS, COMPLETION_TOKENS)
