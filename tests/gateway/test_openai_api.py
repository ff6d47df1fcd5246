"""The OpenAI-compatible endpoint, driven by the real ``openai`` client against a real gateway.

Every call has a timeout. Nothing sleeps: a test that needs messages to arrive while a turn
runs holds the model at a gate and waits on the engine's own events before opening it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.fake_models import Call, ScriptedModel
from tests.providers.fakes import (
    COMPLETION_TOKENS,
    KEY_ENV,
    PROMPT_TOKENS,
    REPLY,
    SECRET_KEY,
    FakeModelServer,
    fake_provider,
    running,
)
from tests.secrets import OPENAI_SURFACE_TOKEN as TOKEN
from tests.support import EventWaiter, GatedEchoProvider, gateway_config, running_gateway, serve
from turngate.cli import main as cli_main
from turngate.config_agents import AgentConfig
from turngate.errors import ErrorCode, ProviderRejectedError
from turngate.gateway import turn_follow
from turngate.gateway.app import create_app
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest
from turngate.providers.echo import ECHO_PREFIX, EchoProvider
from turngate.runtime.events import EventBus

CALL_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = 15.0

BURST = 20


def openai_client(url: str, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The real client, pointed at the gateway, failing fast (no retries)."""
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=CALL_TIMEOUT_S
    )


async def turn_record(url: str, run_id: str, token: str | None = None) -> dict[str, Any]:
    """``GET /turns/{runId}`` of the turn behind a completion."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S, headers=headers) as http:
        response = await http.get(f"/turns/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def run_id_of(completion_id: str) -> str:
    assert completion_id.startswith("chatcmpl-"), completion_id
    return completion_id.removeprefix("chatcmpl-")


async def complete(client: openai.AsyncOpenAI, message: str, **kwargs: Any) -> Any:
    """One non-streamed completion whose last user message is ``message``."""
    kwargs.setdefault("model", "turngate/main")
    return await client.chat.completions.create(
        messages=[{"role": "user", "content": message}], **kwargs
    )


async def stream_chunks(client: openai.AsyncOpenAI, message: str, **kwargs: Any) -> list[Any]:
    """Every chunk of one streamed completion."""
    kwargs.setdefault("model", "turngate/main")
    stream = await client.chat.completions.create(
        messages=[{"role": "user", "content": message}], stream=True, **kwargs
    )
    async with stream:
        return [chunk async for chunk in stream]


def streamed_text(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


class RecordingEcho:
    """Echoes, and keeps what each model call was sent as ``(role, content)`` pairs."""

    name = "recording-echo"

    def __init__(self, chunks: int = 3) -> None:
        self.requests: list[list[tuple[str, str]]] = []
        self._echo = EchoProvider(chunks=chunks)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append([(m.role, m.content) for m in request.messages])
        async for event in self._echo.stream(request):
            yield event


class ContextTooLong:
    """A model that refuses every request as too long for its context."""

    name = "context-too-long"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        raise ProviderRejectedError(
            f"{len(request.messages)} messages: prompt is too long",
            code=ErrorCode.CONTEXT_TOO_LONG,
        )
        yield Finish("stop")  # unreachable; makes this an async generator like every provider


@contextmanager
def gated_gateway(
    state_dir: Path, ahead: int = 0
) -> Iterator[tuple[str, GatedEchoProvider, EventWaiter]]:
    """A gateway whose model waits at a gate, with its events recorded."""
    provider = GatedEchoProvider(ahead)
    events = EventBus()
    waiter = EventWaiter()
    events.subscribe(waiter.record)
    with running_gateway(state_dir, provider=provider, events=events) as url:
        try:
            yield url, provider, waiter
        finally:
            provider.open()  # never leave a run waiting at the gate when the gateway stops


# -- completions ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_completion_answers_the_last_user_message_with_its_reply(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            completion = await client.chat.completions.create(
                model="turngate/main",
                messages=[
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "an earlier question"},
                    {"role": "assistant", "content": "an earlier answer"},
                    {"role": "user", "content": "hello there"},
                ],
                temperature=0.2,
            )
            record = await turn_record(url, run_id_of(completion.id))

    assert completion.object == "chat.completion"
    assert completion.model == "turngate/main"
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == ECHO_PREFIX + "hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 0
    assert record["status"] == "ok"
    assert record["sessionKey"] == "agent:main:openai:default"


@pytest.mark.asyncio
async def test_stream_sends_deltas_in_order_that_join_to_the_reply_then_stop(
    tmp_path: Path,
) -> None:
    message = "a message long enough to come back in several pieces"
    # Five deltas a loop pass apart, as a model's come off its socket (the echo model's come
    # at once, and reach the client joined).
    with running_gateway(tmp_path, provider=ScriptedModel(then=Call(chunks=5))) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            chunks = await stream_chunks(client, message)
            record = await turn_record(url, run_id_of(chunks[0].id))

    reply = ECHO_PREFIX + message
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(contents) == 5
    assert "".join(c or "" for c in contents) == reply
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert record["reply"] == reply


@pytest.mark.asyncio
async def test_text_parts_of_the_last_user_message_are_joined_and_other_parts_skipped(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            completion = await client.chat.completions.create(
                model="turngate",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "first part"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
                            {"type": "text", "text": "second part"},
                        ],
                    }
                ],
            )

    assert completion.choices[0].message.content == ECHO_PREFIX + "first part\nsecond part"


@pytest.mark.asyncio
async def test_models_list_names_one_model_per_configured_agent(tmp_path: Path) -> None:
    agents = (AgentConfig(id="main"), AgentConfig(id="ops"))
    with running_gateway(tmp_path / "strict", agents=agents) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            strict = [model async for model in client.models.list()]
    with running_gateway(tmp_path / "open") as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            open_ = [model async for model in client.models.list()]

    assert [m.id for m in strict] == ["turngate/main", "turngate/ops"]
    assert {(m.object, m.owned_by) for m in strict} == {("model", "turngate")}
    assert all(m.created > 0 for m in strict)
    assert [m.id for m in open_] == ["turngate/main"]


@pytest.mark.asyncio
async def test_openclaw_and_turngate_model_names_reach_the_agent_they_name(
    tmp_path: Path,
) -> None:
    agents = (AgentConfig(id="main"), AgentConfig(id="ops"))
    expected = {
        "turngate": "main",
        "openclaw": "main",
        "turngate/ops": "ops",
        "openclaw/ops": "ops",
        "openclaw:ops": "ops",
    }
    sessions = {}
    with running_gateway(tmp_path, agents=agents) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            for model in expected:
                completion = await complete(client, f"via {model}", model=model)
                assert completion.model == model
                record = await turn_record(url, run_id_of(completion.id))
                sessions[model] = record["sessionKey"]

    assert sessions == {model: f"agent:{agent}:openai:default" for model, agent in expected.items()}


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["turngate/nope", "openclaw/nope", "gpt-4o", "turngate/Main"])
async def test_unknown_model_is_not_found_with_code_model_not_found(
    tmp_path: Path, model: str
) -> None:
    with running_gateway(tmp_path, agents=(AgentConfig(id="main"),)) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            with pytest.raises(openai.NotFoundError) as caught:
                await complete(client, "hi", model=model)

    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert caught.value.type == "invalid_request_error"
    assert "turngate/main" in caught.value.message


# -- sessions ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_completions_with_the_same_user_continue_one_session(tmp_path: Path) -> None:
    provider = RecordingEcho()
    with running_gateway(tmp_path, provider=provider) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            first = await complete(client, "my name is Ada", user="ada lovelace:1")
            second = await complete(client, "what is my name?", user="ada lovelace:1")
            other = await complete(client, "who am I?", user="someone else")
            records = [await turn_record(url, run_id_of(c.id)) for c in (first, second, other)]

    key = "agent:main:openai:ada-lovelace-1"
    assert [r["sessionKey"] for r in records] == [key, key, "agent:main:openai:someone-else"]
    # The second call re-sent nothing, yet the model saw the first exchange: the gateway
    # keeps the session's transcript.
    assert provider.requests[1] == [
        ("user", "my name is Ada"),
        ("assistant", ECHO_PREFIX + "my name is Ada"),
        ("user", "what is my name?"),
    ]
    assert provider.requests[2] == [("user", "who am I?")]
    out = tmp_path / "export.jsonl"
    export = ["sessions", "--state-dir", str(tmp_path), "export", key, "-o", str(out)]
    assert await asyncio.to_thread(cli_main, export) == 0  # the CLI runs its own event loop
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["role"], e["text"]) for e in lines] == [
        ("user", "my name is Ada"),
        ("assistant", ECHO_PREFIX + "my name is Ada"),
        ("user", "what is my name?"),
        ("assistant", ECHO_PREFIX + "what is my name?"),
    ]


@pytest.mark.asyncio
async def test_a_long_user_is_bounded_and_distinct_users_stay_apart(tmp_path: Path) -> None:
    long_a, long_b = "u" * 300 + "a", "u" * 300 + "b"
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            keys = []
            for user in (long_a, long_b):
                completion = await complete(client, "hi", user=user)
                keys.append((await turn_record(url, run_id_of(completion.id)))["sessionKey"])

    assert keys[0] != keys[1]
    assert all(len(key.rsplit(":", 1)[1]) == 128 for key in keys)


@pytest.mark.asyncio
@pytest.mark.parametrize("header", ["X-Turngate-Session", "x-openclaw-session-key"])
async def test_session_header_routes_the_turn_to_that_session(tmp_path: Path, header: str) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            completion = await complete(
                client, "hi", user="ignored", extra_headers={header: "agent:main:desk:7"}
            )
            record = await turn_record(url, run_id_of(completion.id))

    assert record["sessionKey"] == "agent:main:desk:7"
    assert completion.choices[0].message.content == ECHO_PREFIX + "hi"


@pytest.mark.asyncio
async def test_a_bare_session_name_in_the_header_is_a_session_of_the_models_agent(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            completion = await complete(
                client, "hi", extra_headers={"x-openclaw-session-key": "linkedin invitations"}
            )
            record = await turn_record(url, run_id_of(completion.id))
    assert record["sessionKey"] == "agent:main:linkedin-invitations"


@pytest.mark.asyncio
async def test_session_header_of_another_agent_is_refused_naming_the_header(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await complete(
                    client,
                    "hi",
                    model="turngate/main",
                    extra_headers={"X-Turngate-Session": "agent:ops:desk"},
                )

    assert caught.value.code == "invalid_session_key"
    assert caught.value.param == "x-turngate-session"
    assert "'ops'" in caught.value.message
    assert "'main'" in caught.value.message


# -- outcomes other than a reply --------------------------------------------------------------


@pytest.mark.asyncio
async def test_failed_turn_answers_an_openai_error_with_the_turngate_code(tmp_path: Path) -> None:
    with running_gateway(tmp_path, provider=ContextTooLong()) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await complete(client, "a very long story")
            with pytest.raises(openai.APIError) as streamed:
                await stream_chunks(client, "another very long story")

    error = caught.value
    assert error.status_code == 502
    assert error.code == "context_too_long"
    assert error.type == "server_error"
    assert error.param is None
    assert "prompt is too long" in error.message
    # The message was accepted and its turn ended: a blind retry would send it again.
    assert error.response.headers["x-should-retry"] == "false"
    assert streamed.value.code == "context_too_long"
    assert "prompt is too long" in streamed.value.message


@pytest.mark.asyncio
async def test_idempotency_key_returns_the_first_outcome_instead_of_a_second_turn(
    tmp_path: Path,
) -> None:
    provider = RecordingEcho()
    headers = {"Idempotency-Key": "retry-me-1"}
    with running_gateway(tmp_path, provider=provider) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            first = await complete(client, "once", extra_headers=headers)
            again = await stream_chunks(client, "once", extra_headers=headers)

    assert first.id == "chatcmpl-retry-me-1"
    assert {c.id for c in again} == {first.id}
    assert streamed_text(again) == ECHO_PREFIX + "once"
    assert again[-1].choices[0].finish_reason == "stop"
    assert len(provider.requests) == 1


@pytest.mark.asyncio
async def test_a_retry_that_joins_a_stream_under_way_still_gets_the_whole_reply(
    tmp_path: Path,
) -> None:
    message = "a reply that is half streamed when the retry arrives"
    headers = {"Idempotency-Key": "joins-late"}
    with gated_gateway(tmp_path, ahead=2) as (url, provider, events):
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            stream = await client.chat.completions.create(
                model="turngate/main",
                messages=[{"role": "user", "content": message}],
                stream=True,
                extra_headers=headers,
            )
            async with stream:
                first = [await anext(aiter(stream)) for _ in range(3)]  # role, then 2 deltas
                async with asyncio.TaskGroup() as tasks:
                    retry = tasks.create_task(stream_chunks(client, message, extra_headers=headers))
                    await events.until("duplicate")
                    provider.open()
                    first += [chunk async for chunk in stream]
            again = retry.result()

    reply = ECHO_PREFIX + message
    assert streamed_text(first) == reply
    assert streamed_text(again) == reply
    assert again[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in first + again} == {"chatcmpl-joins-late"}


# -- refusals ---------------------------------------------------------------------------------


BAD_REQUESTS: list[tuple[str, dict[str, str], bytes | dict[str, Any], int, str, str | None]] = [
    # (what, headers, body, status, code, param)
    ("not JSON", {}, b"{model:", 400, "invalid_json", None),
    ("not an object", {}, b"[1, 2]", 400, "invalid_json", None),
    ("no model", {}, {"messages": [{"role": "user", "content": "x"}]}, 400, "missing_field",
     "model"),
    ("no messages", {}, {"model": "turngate"}, 400, "missing_field", "messages"),
    ("empty messages", {}, {"model": "turngate", "messages": []}, 400, "invalid_field",
     "messages"),
    ("no user message", {}, {"model": "turngate", "messages": [{"role": "system",
     "content": "x"}]}, 400, "invalid_field", "messages"),
    ("blank message", {}, {"model": "turngate", "messages": [{"role": "user",
     "content": "  "}]}, 400, "invalid_field", "messages.0.content"),
    ("content of a wrong type", {}, {"model": "turngate", "messages": [{"role": "user",
     "content": 7}]}, 400, "invalid_field", "messages.0.content"),
    ("stream not a boolean", {}, {"model": "turngate", "stream": "yes", "messages": [
     {"role": "user", "content": "x"}]}, 400, "invalid_field", "stream"),
    ("bad idempotency key", {"Idempotency-Key": "has spaces"}, {"model": "turngate",
     "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_field", "Idempotency-Key"),
    ("bad session header", {"X-Turngate-Session": "agent:main:a b"}, {"model": "turngate",
     "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_session_key",
     "x-turngate-session"),
    ("message too long", {}, {"model": "turngate", "messages": [{"role": "user",
     "content": "x" * 2000}]}, 413, "message_too_large", None),
]  # fmt: skip


@pytest.mark.asyncio
async def test_bad_requests_are_refused_in_the_openai_shape_naming_the_field(
    tmp_path: Path,
) -> None:
    results = []
    with running_gateway(tmp_path, message_chars_max=1000) as url:
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as http,
        ):
            for what, headers, body, *_ in BAD_REQUESTS:
                if isinstance(body, bytes):
                    response = await http.post(
                        "/v1/chat/completions", content=body, headers=headers
                    )
                else:
                    response = await http.post("/v1/chat/completions", json=body, headers=headers)
                results.append((what, response.status_code, response.json()))

    for (what, _, _, status, code, param), (_, got_status, got) in zip(
        BAD_REQUESTS, results, strict=True
    ):
        assert got_status == status, (what, got)
        error = got["error"]
        assert set(error) == {"message", "type", "code", "param"}, (what, got)
        assert (error["code"], error["param"]) == (code, param), (what, got)
        assert error["type"] == "invalid_request_error", (what, got)
        if param is not None:
            assert error["message"].startswith(param), (what, got)


@pytest.mark.asyncio
async def test_gateway_token_is_the_api_key_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            async with openai_client(url, api_key=TOKEN) as client:
                completion = await complete(client, "let me in")
                models = [model.id async for model in client.models.list()]
            async with openai_client(url, api_key="not-the-token") as client:
                with pytest.raises(openai.AuthenticationError) as caught:
                    await complete(client, "let me in")
                with pytest.raises(openai.AuthenticationError):
                    await client.models.list()

    assert completion.choices[0].message.content == ECHO_PREFIX + "let me in"
    assert models == ["turngate/main"]
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_twenty_concurrent_streams_on_one_session_each_get_their_own_reply(
    tmp_path: Path,
) -> None:
    messages = [f"<message {i:02d} of {BURST}>" for i in range(1, BURST + 1)]
    with gated_gateway(tmp_path) as (url, provider, events):
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            async with asyncio.TaskGroup() as streams:
                tasks = [
                    streams.create_task(stream_chunks(client, m, user="burst")) for m in messages
                ]
                # Every message is accepted while the first turn is still held at the gate.
                await events.until("queued", BURST)
                provider.open()
            results = [task.result() for task in tasks]
            records = [await turn_record(url, run_id_of(r[0].id)) for r in results]

    for message, chunks in zip(messages, results, strict=True):
        assert streamed_text(chunks) == ECHO_PREFIX + message
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({chunks[0].id for chunks in results}) == BURST
    assert {r["sessionKey"] for r in records} == {"agent:main:openai:burst"}
    assert [r["status"] for r in records] == ["ok"] * BURST


@pytest.mark.asyncio
async def test_a_client_that_leaves_mid_stream_does_not_cancel_its_turn(tmp_path: Path) -> None:
    with gated_gateway(tmp_path) as (url, provider, events):
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            stream = await client.chat.completions.create(
                model="turngate/main",
                messages=[{"role": "user", "content": "still wanted"}],
                stream=True,
            )
            first = await anext(aiter(stream))
            await stream.close()
            await events.until("started")
            provider.open()
            [ended] = await events.until("ended")
            record = await turn_record(url, run_id_of(first.id))

    assert first.choices[0].delta.role == "assistant"
    assert (ended.state, ended.lane) == ("replied", "openai")
    assert record["status"] == "ok"
    assert record["reply"] == ECHO_PREFIX + "still wanted"


# -- keep-alive -------------------------------------------------------------------------------

KEEPALIVE_TEST_S = 0.05
"""The keep-alive interval in these tests (15 s in a gateway)."""


async def sse_lines_until_keepalives(lines: AsyncIterator[str], count: int) -> list[str]:
    """The non-blank lines of a raw SSE stream, up to and including its ``count``th comment."""
    seen: list[str] = []
    async for line in lines:
        if line:
            seen.append(line)
        if sum(1 for s in seen if s.startswith(":")) == count:
            return seen
    raise AssertionError(f"the stream ended before {count} keep-alives: {seen}")


@pytest.mark.asyncio
async def test_a_stream_queued_behind_a_held_turn_sends_keepalives_then_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(turn_follow, "SSE_KEEPALIVE_S", KEEPALIVE_TEST_S)
    body = {
        "model": "turngate/main",
        "user": "queue",
        "stream": True,
        "messages": [{"role": "user", "content": "raw, second in line"}],
    }
    with gated_gateway(tmp_path) as (url, provider, events):
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            openai_client(url) as client,
            httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as http,
            asyncio.TaskGroup() as tasks,
        ):
            held = tasks.create_task(complete(client, "held at the gate", user="queue"))
            await events.until("started")
            # The official client's stream, queued: it has begun (role chunk) and waits.
            stream = await client.chat.completions.create(
                model="turngate/main",
                messages=[{"role": "user", "content": "parsed, first in line"}],
                stream=True,
                user="queue",
            )
            async with stream:
                parsed = [await anext(aiter(stream))]
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    lines = aiter(response.aiter_lines())
                    raw = await sse_lines_until_keepalives(lines, 2)
                    # The official client's stream started waiting first, so its keep-alives
                    # were sent before these two: it has had some to skip.
                    provider.open()
                    raw += [line async for line in lines if line]
                parsed += [chunk async for chunk in stream]
    assert held.result().choices[0].message.content == ECHO_PREFIX + "held at the gate"

    assert streamed_text(parsed) == ECHO_PREFIX + "parsed, first in line"
    assert parsed[-1].choices[0].finish_reason == "stop"
    comments = [i for i, line in enumerate(raw) if line.startswith(":")]
    assert {raw[i] for i in comments} == {": keep-alive"}
    chunks = [json.loads(line.removeprefix("data: ")) for line in raw[:-1] if line[0] != ":"]
    first_content = next(i for i, line in enumerate(raw) if '"content"' in line)
    assert comments[:2] == [1, 2]  # after the role chunk, before any text
    assert first_content > comments[1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == ECHO_PREFIX + "raw, second in line"
    assert raw[-1] == "data: [DONE]"


async def keepalives_until_timeout(waited: asyncio.Future[None], deadline: float) -> int:
    """How many keep-alive turns a wait on ``waited`` takes before its deadline ends it."""
    count = 0
    try:
        while not await turn_follow.ready_or_keepalive(waited, deadline):
            count += 1
    except TimeoutError:
        return count
    raise AssertionError("the wait ended before its deadline")


@pytest.mark.asyncio
async def test_a_wait_that_sends_keepalives_still_ends_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turn_follow, "SSE_KEEPALIVE_S", 0.01)
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    deadline = loop.time() + 0.1  # the wait's own deadline bounds this test
    assert await keepalives_until_timeout(never, deadline) >= 1
    assert loop.time() >= deadline
    assert not never.done()  # the awaited thing is left alone; the caller decides


# -- token usage ------------------------------------------------------------------------------


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    """A scripted OpenAI-compatible model server on loopback (``tests/providers/fakes.py``)."""
    with running(FakeModelServer()) as fake:
        yield fake


@contextmanager
def gateway_of(
    state_dir: Path, server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A gateway whose configured model is ``fake/primary`` at ``server``."""
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)  # read when the gateway starts
    config = gateway_config(
        state_dir, provider="fake", model="primary", providers=(fake_provider(server),)
    )
    with serve(create_app(config)) as url:
        yield url


USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}


@pytest.mark.asyncio
async def test_a_completion_reports_the_model_s_token_usage_and_a_retry_gets_the_same(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry = {"Idempotency-Key": "usage-retry"}
    with gateway_of(tmp_path, model_server, monkeypatch) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            completion = await complete(client, "hi", extra_headers=retry)
            again = await complete(client, "hi", extra_headers=retry)
    assert completion.choices[0].message.content == "".join(REPLY)
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == USAGE
    # The retry's answer is the stored outcome, usage included; the model was called once.
    assert again.id == completion.id
    assert again.usage == completion.usage
    assert len(model_server.calls("primary")) == 1


@pytest.mark.asyncio
async def test_a_stream_asked_for_usage_ends_with_a_chunk_of_no_choices_and_the_usage(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway_of(tmp_path, model_server, monkeypatch) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            chunks = await stream_chunks(client, "hi", stream_options={"include_usage": True})
            plain = await stream_chunks(client, "hi again")
    *text_chunks, last = chunks
    assert streamed_text(text_chunks) == "".join(REPLY)
    assert text_chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in text_chunks)
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump(exclude_none=True) == USAGE
    # Not asked: no usage chunk, as from OpenAI.
    assert plain[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in plain)


@pytest.mark.asyncio
async def test_a_stream_asked_for_usage_of_a_model_that_tells_none_reports_zeros(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path) as url:
        async with asyncio.timeout(TEST_TIMEOUT_S), openai_client(url) as client:
            chunks = await stream_chunks(client, "hi", stream_options={"include_usage": True})
    assert streamed_text(chunks) == ECHO_PREFIX + "hi"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 0
