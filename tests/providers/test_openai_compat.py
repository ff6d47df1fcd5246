"""An OpenAI-compatible model behind a fallback chain, against a fake server on loopback.

Each test scripts what the fake answers to each call of each model and checks what a user of
the gateway would notice: the reply, which model gave it, how failures end the turn, and that
an abort hangs up on the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
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
    chain_of,
    collect,
    fake_provider,
    openai_chunk,
    openai_event,
    openai_usage_chunk,
    until_set,
)
from turngate.errors import (
    ErrorCode,
    ProviderError,
    ProviderRejectedError,
    ProviderTimeoutError,
)
from turngate.providers.base import Finish, TextDelta, Usage
from turngate.providers.openai_compat import OpenAICompatProvider


@pytest.mark.asyncio
async def test_streamed_deltas_arrive_in_order(server: FakeModelServer) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        deltas = await collect(chain)
    assert deltas == list(REPLY)
    [call] = server.calls()
    assert call.body["model"] == "primary"
    assert call.body["stream"] is True
    assert call.body["max_completion_tokens"] == 256
    assert call.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert call.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert call.headers["x-stainless-retry-count"] == "0"


@pytest.mark.asyncio
async def test_a_rate_limited_call_is_retried_once_and_the_reply_delivered(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("primary", [429, "ok"])
    with caplog.at_level(logging.WARNING, logger="turngate.providers"):
        async with chain_of(fake_provider(server), "primary") as chain:
            deltas = await collect(chain)
    assert "".join(deltas) == "".join(REPLY)
    assert [c.step for c in server.calls("primary")] == [429, "ok"]
    [retry] = caplog.records
    assert retry.run_id == REQUEST.run_id  # type: ignore[attr-defined]
    assert retry.session_key == REQUEST.session_key  # type: ignore[attr-defined]
    assert retry.getMessage() == (
        "run run-1: fake/primary failed: rate limited (429): scripted HTTP 429;"
        " retry 1 of 2 in 0.020s"
    )


@pytest.mark.asyncio
async def test_a_rate_limit_carries_the_provider_s_retry_after(server: FakeModelServer) -> None:
    server.script("primary", [429])
    provider = OpenAICompatProvider(fake_provider(server), "primary", SECRET_KEY)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    finally:
        await provider.aclose()
    assert type(caught.value) is ProviderError
    assert caught.value.retry_after_s == pytest.approx(0.02)
    assert caught.value.message == "fake/primary: rate limited (429): scripted HTTP 429"


@pytest.mark.asyncio
async def test_a_model_failing_with_500_three_times_falls_back_to_the_next_model(
    server: FakeModelServer,
) -> None:
    server.script("primary", [500, 500, 500])
    async with chain_of(fake_provider(server, max_retries=2), "primary", "backup") as chain:
        deltas = await collect(chain)
    assert "".join(deltas) == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary"] * 3 + ["backup"]


@pytest.mark.asyncio
async def test_a_model_that_sends_no_first_token_in_time_falls_back_to_the_next_model(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["hang"])
    config = fake_provider(server, max_retries=0, first_token_timeout=0.3)
    async with chain_of(config, "primary", "backup") as chain:
        deltas = await collect(chain)
        # Giving up on the hung call hung up on the server, too.
        assert await until_set(server.disconnected)
    assert "".join(deltas) == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary", "backup"]


@pytest.mark.asyncio
async def test_the_first_token_timeout_names_the_model_and_the_timeout(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["hang"])
    config = fake_provider(server, first_token_timeout=0.3)
    provider = OpenAICompatProvider(config, "primary", SECRET_KEY)
    try:
        with pytest.raises(ProviderTimeoutError) as caught:
            await collect(provider)
    finally:
        await provider.aclose()
    assert caught.value.message == (
        "fake/primary: no first token within 0.3s (first_token_timeout)"
    )


@pytest.mark.asyncio
async def test_a_stream_that_outlasts_the_total_timeout_fails_after_its_output(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["slow"])
    config = fake_provider(server, first_token_timeout=0.3, total_timeout=0.4)
    deltas: list[str] = []
    async with chain_of(config, "primary", "backup") as chain:
        with pytest.raises(ProviderTimeoutError) as caught:
            await collect(chain, into=deltas)
        assert await until_set(server.disconnected)
    assert caught.value.message == "fake/primary: not finished within 0.4s (total_timeout)"
    assert deltas[0] == "tick 0 "
    # Output had gone out: no retry, no fallback.
    assert [c.model for c in server.calls()] == ["primary"]


@pytest.mark.asyncio
async def test_aborting_mid_stream_hangs_up_on_the_server(server: FakeModelServer) -> None:
    server.script("primary", ["slow"])
    first_delta = asyncio.Event()

    async with chain_of(fake_provider(server, total_timeout=30.0), "primary") as chain:

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
    assert len(server.calls()) == 1  # an abort is never retried


@pytest.mark.asyncio
async def test_a_reply_abandoned_mid_stream_hangs_up_on_the_server(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["slow"])
    async with chain_of(fake_provider(server, total_timeout=30.0), "primary") as chain:
        events = chain.stream(REQUEST)
        assert isinstance(events, AsyncGenerator)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            assert await anext(events) == TextDelta("tick 0 ")
            await events.aclose()
        assert await until_set(server.disconnected)


@pytest.mark.asyncio
async def test_a_context_too_long_refusal_fails_the_turn_without_any_retry(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["context_too_long"])
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        with pytest.raises(ProviderRejectedError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.CONTEXT_TOO_LONG
    assert caught.value.message.startswith("fake/primary: context too long (HTTP 400): ")
    assert "maximum context length is 8192 tokens" in caught.value.message
    assert len(server.calls()) == 1


@pytest.mark.asyncio
async def test_a_content_filtered_reply_is_refused_without_any_retry(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["content_filter"])
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        with pytest.raises(ProviderRejectedError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.CONTENT_REFUSED
    assert len(server.calls()) == 1


@pytest.mark.asyncio
async def test_when_every_model_fails_the_error_names_each_model_and_why(
    server: FakeModelServer,
) -> None:
    server.script("primary", [429, 429, 429])
    server.script("backup", [500, 500, 500])
    config = fake_provider(server, max_retries=2)
    async with chain_of(config, "primary", "backup") as chain:
        with pytest.raises(ProviderError) as caught:
            await collect(chain)
    assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
    assert caught.value.message == (
        "all models failed: fake/primary: rate limited (429): scripted HTTP 429 x3;"
        " fake/backup: HTTP 500: scripted HTTP 500 x3"
    )


@pytest.mark.asyncio
async def test_the_api_key_never_appears_in_any_error_or_log(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["echo_key"])
    server.script("backup", ["echo_key"])
    with caplog.at_level(logging.DEBUG):
        async with chain_of(fake_provider(server), "primary", "backup") as chain:
            with pytest.raises(ProviderError) as caught:
                await collect(chain)
    # The server did quote the key back: the redaction is what kept it out.
    assert [c.step for c in server.calls()] == ["echo_key", "echo_key"]
    assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
    assert "credentials refused (HTTP 401): Incorrect API key provided: Bearer [redacted]" in (
        caught.value.message
    )
    assert SECRET_KEY not in f"{caught.value} {caught.value!r}"
    assert caplog.records, "the fallback was logged"
    for record in caplog.records:
        assert SECRET_KEY not in record.getMessage(), record.name
    assert SECRET_KEY not in caplog.text


@pytest.mark.asyncio
async def test_a_refused_key_moves_to_the_next_model_at_once(server: FakeModelServer) -> None:
    server.script("primary", [401])
    async with chain_of(fake_provider(server, max_retries=2), "primary", "backup") as chain:
        assert "".join(await collect(chain)) == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary", "backup"]


@pytest.mark.asyncio
async def test_a_provider_without_a_key_sends_a_placeholder_not_the_environment_s_key(
    server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.0.2.1/v1")  # never reached
    async with chain_of(fake_provider(server, api_key_env=None), "local") as chain:
        assert "".join(await collect(chain)) == "".join(REPLY)
    [call] = server.calls()
    assert call.headers["authorization"] == "Bearer no-key"


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_retryable_connection_failure(
    server: FakeModelServer,
) -> None:
    # A port bound but not listening refuses connections at once, and stays ours meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        config = fake_provider(server, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
        async with chain_of(config, "primary") as chain:
            with pytest.raises(ProviderError) as caught:
                await collect(chain)
    assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
    assert caught.value.message.startswith("all models failed: fake/primary: connection failed")
    assert caught.value.message.endswith(" x2")
    assert server.calls() == []


# -- answers that are not a reply ------------------------------------------------------------

NOT_FINISHED = "the answer stopped before the model finished it (no finish_reason)"
NO_TEXT = "the model finished without any text"
BROKEN_BEFORE_ANY_TEXT = [
    ("cut_off_before_text", "incomplete_response", NOT_FINISHED),
    ("only_done", "incomplete_response", NOT_FINISHED),
    ("empty_finish", "empty_response", NO_TEXT),
    ("bad_sse", "bad_response", "an event's data is not JSON (Expecting value)"),
    ("wrong_shape", "bad_response", "a chunk without a list of choices"),
    (
        "html_page",
        "bad_response",
        "the answer is not an event stream (HTTP 200, content-type text/html; charset=utf-8):"
        " <html> <head><title>502 Bad Gateway</title></head>",
    ),
]
"""(step, code, the start of the message after the model's name)."""
START = openai_event(openai_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
HELLO = openai_event(openai_chunk([{"index": 0, "delta": {"content": "Hello"}}]))
STOP = openai_event(openai_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
DONE = b"data: [DONE]\n\n"
NO_CHOICES = "a chunk without a list of choices"
NO_DELTA = "a choice without a delta"


async def broken_answer(server: FakeModelServer) -> tuple[ProviderError, list[str]]:
    """Call ``primary`` once, straight (no chain); the error it raised and its deltas."""
    provider = OpenAICompatProvider(fake_provider(server), "primary", SECRET_KEY)
    deltas: list[str] = []
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(provider, into=deltas)
    finally:
        await provider.aclose()
    return caught.value, deltas


@pytest.mark.asyncio
async def test_a_stream_cut_off_before_its_finish_reason_is_incomplete_not_a_reply(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["cut_off"])
    error, deltas = await broken_answer(server)
    assert deltas == list(REPLY[:CUT_OFF_DELTAS])
    assert error.code == "incomplete_response"
    assert error.message == f"fake/primary: {NOT_FINISHED}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("step", "code", "why"), BROKEN_BEFORE_ANY_TEXT, ids=[s for s, _, _ in BROKEN_BEFORE_ANY_TEXT]
)
async def test_a_broken_answer_is_a_provider_error_with_its_own_code(
    server: FakeModelServer, step: str, code: str, why: str
) -> None:
    server.script("primary", [step])
    error, deltas = await broken_answer(server)
    assert deltas == []
    assert (error.code, error.retry_after_s) == (code, None)
    assert error.message.startswith(f"fake/primary: {why}"), error.message


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param({"id": "chatcmpl-fake"}, NO_CHOICES, id="no-choices"),
        pytest.param(openai_chunk("Hello"), NO_CHOICES, id="choices-a-string"),
        pytest.param(openai_chunk(["Hello"]), NO_DELTA, id="choice-a-string"),
        pytest.param(openai_chunk([{"index": 0, "finish_reason": None}]), NO_DELTA, id="no-delta"),
        pytest.param(openai_chunk([{"index": 0, "delta": "Hello"}]), NO_DELTA, id="delta-a-string"),
        pytest.param(
            openai_chunk([{"index": 0, "delta": {"content": 42}}]),
            "a choice whose content is not text",
            id="content-a-number",
        ),
        pytest.param(
            openai_chunk([{"index": 0, "delta": {}, "finish_reason": ["stop"]}]),
            "a choice whose finish_reason is not text",
            id="finish-reason-a-list",
        ),
        pytest.param([1, 2], NO_CHOICES, id="a-list"),
        pytest.param(None, NO_CHOICES, id="null"),
    ],
)
async def test_a_chunk_of_the_wrong_shape_is_a_bad_response_not_a_crash(
    server: FakeModelServer, data: object, why: str
) -> None:
    server.script("primary", [RawReply(START + openai_event(data) + HELLO + STOP + DONE)])
    error, deltas = await broken_answer(server)
    assert deltas == []
    assert error.code == "bad_response"
    assert error.message == f"fake/primary: {why}"


@pytest.mark.asyncio
async def test_an_event_that_is_not_utf8_is_a_bad_response(server: FakeModelServer) -> None:
    server.script("primary", [RawReply(START + b"data: \xff\xfe\n\n" + HELLO + STOP + DONE)])
    error, _ = await broken_answer(server)
    assert (error.code, error.message) == (
        "bad_response",
        "fake/primary: an event is not UTF-8 text",
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("step", [step for step, _, _ in BROKEN_BEFORE_ANY_TEXT])
async def test_a_broken_answer_is_retried_then_the_next_model_s_reply_is_delivered(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture, step: str
) -> None:
    server.script("primary", [step, step])
    config = fake_provider(server, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        async with chain_of(config, "primary", "backup") as chain:
            deltas = await collect(chain)
    assert "".join(deltas) == "".join(REPLY)
    assert [c.model for c in server.calls()] == ["primary", "primary", "backup"]
    warnings = [r for r in caplog.records if r.name == "turngate.providers"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert "; retry 1 of 1 in " in warnings[0].getMessage()
    assert warnings[1].getMessage().endswith("; falling back to fake/backup")
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in caplog.records)


@pytest.mark.asyncio
async def test_a_stream_cut_off_after_its_text_fails_the_turn_and_no_second_answer_is_spliced(
    server: FakeModelServer,
) -> None:
    server.script("primary", ["cut_off"])
    deltas: list[str] = []
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        with pytest.raises(ProviderError) as caught:
            await collect(chain, into=deltas)
    assert deltas == list(REPLY[:CUT_OFF_DELTAS])
    assert caught.value.code == "incomplete_response"
    assert caught.value.message == f"fake/primary: {NOT_FINISHED}"
    assert [c.model for c in server.calls()] == ["primary"]


@pytest.mark.asyncio
async def test_an_answer_cut_by_the_output_budget_is_delivered(server: FakeModelServer) -> None:
    server.script("primary", ["truncated"])
    async with chain_of(fake_provider(server), "primary", "backup") as chain:
        assert await collect(chain) == list(REPLY)
    assert [c.model for c in server.calls()] == ["primary"]


@pytest.mark.asyncio
async def test_a_last_choice_with_a_finish_reason_and_no_delta_ends_the_answer(
    server: FakeModelServer,
) -> None:
    last = openai_event(openai_chunk([{"index": 0, "finish_reason": "stop"}]))
    usage = openai_event(openai_chunk([]))  # what a server sends with usage
    server.script("primary", [RawReply(START + HELLO + last + usage + DONE)])
    async with chain_of(fake_provider(server), "primary") as chain:
        assert await collect(chain) == ["Hello"]


@pytest.mark.asyncio
async def test_a_finished_answer_without_done_is_still_a_reply(server: FakeModelServer) -> None:
    server.script("primary", [RawReply(START + HELLO + STOP)])
    async with chain_of(fake_provider(server), "primary") as chain:
        assert await collect(chain) == ["Hello"]


@pytest.mark.asyncio
async def test_an_error_page_quoting_the_api_key_is_reported_without_it(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    page = f"<html><body>Bad key: Bearer {SECRET_KEY}</body></html>".encode()
    server.script("primary", [RawReply(page, "text/html")])
    with caplog.at_level(logging.DEBUG):
        async with chain_of(fake_provider(server, max_retries=0), "primary", "backup") as chain:
            assert "".join(await collect(chain)) == "".join(REPLY)
    [fallback] = [r for r in caplog.records if r.name == "turngate.providers"]
    assert "Bad key: Bearer [redacted]" in fallback.getMessage()
    assert SECRET_KEY not in caplog.text


# -- token usage ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_finished_answer_reports_the_usage_of_the_stream_s_last_chunk(
    server: FakeModelServer,
) -> None:
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await answer(chain)
    assert got.deltas == list(REPLY)
    [call] = server.calls()
    assert call.body["stream_options"] == {"include_usage": True}
    assert got.finish.usage == Usage(PROMPT_TOKENS, COMPLETION_TOKENS)


@pytest.mark.asyncio
@pytest.mark.parametrize(("step", "reason"), [("ok", "stop"), ("truncated", "length")])
async def test_the_stream_ends_with_one_finish_carrying_the_finish_reason_and_usage(
    server: FakeModelServer, step: str, reason: str
) -> None:
    server.script("primary", [step])
    provider = OpenAICompatProvider(fake_provider(server), "primary", SECRET_KEY)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            events = [event async for event in provider.stream(REQUEST)]
    finally:
        await provider.aclose()
    usage = Usage(PROMPT_TOKENS, COMPLETION_TOKENS)
    assert events == [*(TextDelta(text) for text in REPLY), Finish(reason, usage)]


@pytest.mark.asyncio
async def test_running_totals_on_every_chunk_count_once_as_the_last_one(
    server: FakeModelServer,
) -> None:
    # vLLM's continuous_usage_stats: each chunk carries the counts so far.
    hello = openai_chunk([{"index": 0, "delta": {"content": "Hello"}}])
    so_far = openai_event({**hello, "usage": openai_usage_chunk(7, 1)["usage"]})
    last = openai_event(openai_usage_chunk(7, 2))
    server.script("primary", [RawReply(START + so_far + STOP + last + DONE)])
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await answer(chain)
    assert got.deltas == ["Hello"]
    assert got.finish.usage == Usage(7, 2)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "usage",
    [
        pytest.param(b"", id="none-sent"),
        pytest.param(openai_event(openai_chunk([])), id="no-usage-field"),
        pytest.param(
            openai_event({**openai_chunk([]), "usage": {"prompt_tokens": "many"}}),
            id="not-counts",
        ),
        pytest.param(
            openai_event({**openai_chunk([]), "usage": {"prompt_tokens": -1}}), id="negative"
        ),
    ],
)
async def test_a_reply_without_readable_usage_is_delivered_and_reports_none(
    server: FakeModelServer, usage: bytes
) -> None:
    server.script("primary", [RawReply(START + HELLO + STOP + usage + DONE)])
    async with chain_of(fake_provider(server), "primary") as chain:
        got = await answer(chain)
    assert got.deltas == ["Hello"]
    assert got.finish.usage is None


@pytest.mark.asyncio
async def test_a_server_that_refuses_stream_options_is_asked_again_without_them(
    server: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script("primary", ["refuses_stream_options"] * 3)
    with caplog.at_level(logging.WARNING, logger="turngate.providers"):
        async with chain_of(fake_provider(server, max_retries=0), "primary") as chain:
            got = await answer(chain)
            # The next call goes without them from the start.
            assert await collect(chain) == list(REPLY)
    assert got.deltas == list(REPLY)
    calls = server.calls()
    assert ["stream_options" in call.body for call in calls] == [True, False, False]
    assert got.finish.usage is None
    [warning] = caplog.records
    assert warning.getMessage() == (
        "fake/primary refused stream_options; calls go without it, and its token usage is"
        " not reported"
    )


@pytest.mark.asyncio
async def test_a_bad_request_that_is_not_about_stream_options_is_not_sent_again(
    server: FakeModelServer,
) -> None:
    server.script("primary", [400])
    async with chain_of(fake_provider(server), "primary") as chain:
        with pytest.raises(ProviderRejectedError):
            await collect(chain)
    [call] = server.calls()
    assert call.body["stream_options"] == {"include_usage": True}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(
            {"error": {"message": "Unrecognized request argument supplied: stream_options"}},
            id="azure-message",
        ),
        pytest.param(
            {"error": {"message": "unknown field", "param": "stream_options"}}, id="param"
        ),
        pytest.param(
            {"detail": [{"loc": ["body", "stream_options"], "msg": "Extra inputs are not"}]},
            id="fastapi-detail",
        ),
    ],
)
async def test_each_way_of_refusing_stream_options_is_recognised(
    server: FakeModelServer, refusal: dict[str, Any]
) -> None:
    status = 422 if "detail" in refusal else 400
    page = json.dumps(refusal).encode()
    server.script("primary", [RawReply(page, "application/json", status)])
    async with chain_of(fake_provider(server, max_retries=0), "primary") as chain:
        assert await collect(chain) == list(REPLY)
    assert ["stream_options" in call.body for call in server.calls()] == [True, False]


@pytest.mark.asyncio
async def test_a_refusal_that_only_echoes_the_request_is_not_taken_for_one_of_the_option(
    server: FakeModelServer,
) -> None:
    # A FastAPI 422 about another field, quoting the whole request (stream_options too).
    echo = {"model": "primary", "stream_options": {"include_usage": True}, "messages": 7}
    refusal = {"detail": [{"loc": ["body", "messages"], "msg": "not a list", "input": echo}]}
    page = json.dumps(refusal).encode()
    server.script("primary", [RawReply(page, "application/json", 422)])
    async with chain_of(fake_provider(server), "primary") as chain:
        with pytest.raises(ProviderRejectedError):
            await collect(chain)
    [call] = server.calls()
    assert "stream_options" in call.body
