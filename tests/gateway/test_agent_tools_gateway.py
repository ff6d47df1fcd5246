"""Agent tools behind a real gateway, as a user sees them: an agent whose ``[[agents.mcp]]`` is
the real MCP test server (``tests/tools/mcp_test_server.py``, over stdio as a child process or
over Streamable HTTP), whose model is the scripted fake of ``tests/providers/fakes.py`` (the
OpenAI-compatible API or the Messages API, streaming tool calls in pieces), and a gateway on
127.0.0.1 driven over HTTP and the WebSocket protocol.

Every wait is for a condition under a deadline: a response, an event, or ``/health`` polled.
The gateway runs in its own thread; an MCP server over HTTP runs in the test's own loop, so
every test is a coroutine and the gateway is stopped off the loop (see :func:`gateway`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest

from tests.gateway.test_ws_protocol import recv, session
from tests.providers.fakes import (
    COMPLETION_TOKENS,
    KEY_ENV,
    PROMPT_TOKENS,
    SECRET_KEY,
    FakeModelServer,
    RawReply,
    fake_provider,
    running,
)
from tests.providers.test_anthropic_tool_calls import reply as anthropic_reply
from tests.providers.test_anthropic_tool_calls import text_block, tool_block
from tests.providers.test_openai_tool_calls import calls_chunk, chunk, entry
from tests.providers.test_openai_tool_calls import reply as openai_reply
from tests.support import EventLog, gateway_config, serve
from tests.tools.servers import CONTEXT, connected, http_server, stdio_config
from turngate.config_agents import AgentConfig
from turngate.config_mcp import McpServerConfig
from turngate.gateway.app import create_app
from turngate.runtime.events import EventBus, EventKind
from turngate.tools.base import Toolbox
from turngate.tools.mcp import McpServer

MODEL = "primary"
"""The model every test's agent ``main`` calls, at the fake server."""
WAIT_S = 15.0
"""The longest any one wait of these tests takes (a stdio server's start imports the SDK)."""
POLL_S = 0.02
T = TypeVar("T")


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    """A scripted OpenAI/Anthropic fake on an ephemeral loopback port."""
    with running(FakeModelServer()) as fake:
        yield fake


@asynccontextmanager
async def gateway(
    state_dir: Path,
    model_server: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
    mcp: McpServerConfig,
    *,
    kind: str = "openai",
    events: EventBus | None = None,
) -> AsyncIterator[httpx2.AsyncClient]:
    """A gateway whose agent ``main`` calls ``fake/primary`` and has the tool server ``mcp``;
    yields an HTTP client on it once the server offers its tools.

    The gateway is stopped off the loop: its MCP client may still talk, on the way out, to a
    server that runs in this loop."""
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)  # read when the gateway starts
    config = gateway_config(
        state_dir,
        providers=(fake_provider(model_server, kind),),
        agents=(AgentConfig(id="main", model=f"fake/{MODEL}", mcp=(mcp,)),),
    )
    served = serve(create_app(config, events=events))
    url = served.__enter__()
    try:
        async with httpx2.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            await tool_servers_ready(http)
            yield http
    finally:
        await asyncio.to_thread(served.__exit__, None, None, None)


async def until(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """``check()``'s first true value, polled; fails after :data:`WAIT_S`."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                value = await check()
                if value:
                    return value
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"waited {WAIT_S}s for {what}") from None


async def health(http: httpx2.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/health")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def tool_servers_ready(http: httpx2.AsyncClient) -> list[dict[str, Any]]:
    """``/health``'s ``toolServers`` once every one is ready and offers tools."""

    async def ready() -> list[dict[str, Any]] | None:
        servers: list[dict[str, Any]] = (await health(http))["toolServers"]
        if servers and all(s["state"] == "ready" and s["tools"] > 0 for s in servers):
            return servers
        return None

    return await until(ready, "the agent's tool servers to be ready")


async def send(http: httpx2.AsyncClient, session_key: str, message: str) -> dict[str, Any]:
    """One ``/chat.send``, answered when its turn ends."""
    answer = await http.post("/chat.send", json={"sessionKey": session_key, "message": message})
    body: dict[str, Any] = answer.json()
    assert answer.status_code in (200, 409, 502), body
    return body


async def history(url: str, session_key: str) -> list[dict[str, Any]]:
    """The session's transcript, as ``chat.history`` shows it over the WebSocket protocol."""
    async with session(url) as client:
        [answer] = await client.response(
            await client.request("chat.history", sessionKey=session_key)
        )
    assert answer["ok"], answer
    messages: list[dict[str, Any]] = answer["payload"]["messages"]
    return messages


def shape(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each history message in brief: its role, and its text, calls or result."""
    shown: list[tuple[str, Any]] = []
    for message in messages:
        content = message["content"]
        if message["role"] == "toolResult":
            result = (message["toolCallId"], content[0]["text"], message["isError"])
            shown.append(("toolResult", result))
        elif content and content[0]["type"] == "toolCall":
            calls = [(c["id"], c["name"], c["arguments"]) for c in content]
            shown.append(("toolCall", calls))
        else:
            shown.append((message["role"], content[0]["text"]))
    return shown


def openai_text(text: str) -> RawReply:
    """An OpenAI-compatible answer of ``text`` alone."""
    return openai_reply(chunk({"content": text}), finish=chunk({}, "stop"))


def openai_call(call_id: str, name: str, *fragments: str) -> RawReply:
    """An OpenAI-compatible answer that calls ``name``, its arguments streamed as
    ``fragments`` (the first chunk names the call, with empty arguments, as OpenAI does)."""
    return openai_reply(
        calls_chunk(entry(0, call_id, name, "")),
        *(calls_chunk(entry(0, arguments=fragment)) for fragment in fragments),
    )


def offered(body: dict[str, Any]) -> set[str]:
    """The names of the tools a model request offered (either API's shape)."""
    return {t["function"]["name"] if "function" in t else t["name"] for t in body.get("tools", [])}


def assert_every_call_answered(messages: list[dict[str, Any]]) -> None:
    """An OpenAI-compatible request is valid: each assistant message's tool calls are
    followed, before anything else, by one ``tool`` message per call."""
    for index, message in enumerate(messages):
        if not message.get("tool_calls"):
            continue
        results = []
        for later in messages[index + 1 :]:
            if later["role"] != "tool":
                break
            results.append(later["tool_call_id"])
        assert sorted(results) == sorted(c["id"] for c in message["tool_calls"]), message
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(answered) == len(set(answered)), answered


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Prometheus text as ``{(name, sorted labels): value}`` (the label order a scrape
    prints is not part of what it says)."""
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        samples[(name, tuple(sorted(_LABEL.findall(labels or ""))))] = float(value)
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, if there is one."""
    return samples.get((name, tuple(sorted(labels.items()))))


# -- 1. OpenAI-compatible model, stdio server -------------------------------------------------


@pytest.mark.asyncio
async def test_a_tool_call_streamed_in_pieces_runs_on_the_stdio_server_and_the_model_answers(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.script(
        MODEL,
        [
            # The arguments are cut inside a key: only the whole is JSON.
            openai_call("call_add", "srv__add", '{"a": 2, "', 'b": 3}'),
            openai_text("2 + 3 = 5."),
        ],
    )
    async with gateway(tmp_path, model_server, monkeypatch, stdio_config()) as http:
        answer = await send(http, "agent:main:sums", "what is 2 + 3?")
        transcript = await history(str(http.base_url), "agent:main:sums")

    assert (answer["status"], answer["reply"]) == ("ok", "2 + 3 = 5.")
    first, second = model_server.calls(MODEL)
    assert {"srv__add", "srv__hang", "srv__seen"} <= offered(first.body)
    assert first.body["messages"][-1] == {"role": "user", "content": "what is 2 + 3?"}
    # The second call carries the call, put back together, and its result under its id.
    assert second.body["messages"][-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_add",
                    "type": "function",
                    "function": {"name": "srv__add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_add", "content": "5"},
    ]
    assert shape(transcript) == [
        ("user", "what is 2 + 3?"),
        ("toolCall", [("call_add", "srv__add", {"a": 2, "b": 3})]),
        ("toolResult", ("call_add", "5", False)),
        ("assistant", "2 + 3 = 5."),
    ]
    assert {m["runId"] for m in transcript} == {answer["runId"]}


@pytest.mark.asyncio
async def test_two_calls_in_one_step_both_run_and_both_results_go_back_in_the_next_request(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = openai_reply(
        calls_chunk(entry(0, "call_x", "srv__add", ""), entry(1, "call_y", "srv__add", "")),
        # Interleaved: each chunk carries a piece of each call, by index.
        calls_chunk(entry(0, arguments='{"a": 1,'), entry(1, arguments='{"a": 10,')),
        calls_chunk(entry(1, arguments=' "b": 20}'), entry(0, arguments=' "b": 1}')),
    )
    model_server.script(MODEL, [both, openai_text("2 and 30.")])
    async with gateway(tmp_path, model_server, monkeypatch, stdio_config()) as http:
        answer = await send(http, "agent:main:pair", "1+1 and 10+20?")
        transcript = await history(str(http.base_url), "agent:main:pair")

    assert (answer["status"], answer["reply"]) == ("ok", "2 and 30.")
    _, second = model_server.calls(MODEL)
    messages = second.body["messages"]
    assert [(c["id"], c["function"]["arguments"]) for c in messages[-3]["tool_calls"]] == [
        ("call_x", '{"a": 1, "b": 1}'),
        ("call_y", '{"a": 10, "b": 20}'),
    ]
    # Results in the order they came: either may be first.
    assert sorted((m["tool_call_id"], m["content"]) for m in messages[-2:]) == [
        ("call_x", "2"),
        ("call_y", "30"),
    ]
    assert_every_call_answered(messages)
    assert shape(transcript)[1] == (
        "toolCall",
        [("call_x", "srv__add", {"a": 1, "b": 1}), ("call_y", "srv__add", {"a": 10, "b": 20})],
    )
    assert sorted(result for role, result in shape(transcript) if role == "toolResult") == [
        ("call_x", "2", False),
        ("call_y", "30", False),
    ]


# -- 2. Anthropic model, Streamable HTTP server -----------------------------------------------


@pytest.mark.asyncio
async def test_tool_use_blocks_run_on_the_http_server_and_come_back_as_tool_results(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.script(
        MODEL,
        [
            anthropic_reply(
                text_block(0, "Adding."),
                tool_block(1, "toolu_1", "web__add", '{"a": 2', ', "b": 3}'),
                tool_block(2, "toolu_2", "web__add", '{"a": 4, "b"', ": 5}"),
            ),
            anthropic_reply(text_block(0, "5 and 9."), reason="end_turn"),
        ],
    )
    async with (
        http_server() as web,
        gateway(
            tmp_path,
            model_server,
            monkeypatch,
            McpServerConfig(name="web", url=web.url),
            kind="anthropic",
        ) as http,
    ):
        answer = await send(http, "agent:main:claude", "2+3 and 4+5?")
        transcript = await history(str(http.base_url), "agent:main:claude")

    assert (answer["status"], answer["reply"]) == ("ok", "Adding.\n\n5 and 9.")
    first, second = model_server.calls(MODEL)
    assert {"web__add", "web__hang"} <= offered(first.body)
    assert all(call.api == "anthropic" for call in (first, second))
    asked, results = second.body["messages"][-2:]
    assert asked == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "toolu_1", "name": "web__add", "input": {"a": 2, "b": 3}},
            {"type": "tool_use", "id": "toolu_2", "name": "web__add", "input": {"a": 4, "b": 5}},
        ],
    }
    # Both results in the one user message that follows (either may have come first).
    assert results["role"] == "user"
    assert sorted(results["content"], key=lambda block: block["tool_use_id"]) == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "5", "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "9", "is_error": False},
    ]
    shown = shape(transcript)
    assert shown[:3] == [
        ("user", "2+3 and 4+5?"),
        ("assistant", "Adding."),
        (
            "toolCall",
            [("toolu_1", "web__add", {"a": 2, "b": 3}), ("toolu_2", "web__add", {"a": 4, "b": 5})],
        ),
    ]
    assert sorted(shown[3:5]) == [
        ("toolResult", ("toolu_1", "5", False)),
        ("toolResult", ("toolu_2", "9", False)),
    ]
    assert shown[5:] == [("assistant", "5 and 9.")]


# -- 3. Abort mid-tool ------------------------------------------------------------------------


async def seen(probe: McpServer, label: str, what: str) -> str:
    """What the test server says ``hang(label)`` did (``started``/``cancelled``): "true" as
    soon as it did, "false" if it did not within the server's own wait."""
    arguments = json.dumps({"label": label, "what": what})
    result = await Toolbox([probe]).call(
        "probe__seen", arguments, context=CONTEXT, timeout_s=WAIT_S
    )
    assert not result.is_error, result
    return result.content


@pytest.mark.asyncio
async def test_an_abort_mid_tool_cancels_the_call_on_the_server_and_the_session_goes_on(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "agent:main:abort"
    model_server.script(
        MODEL,
        [openai_call("call_hang", "web__hang", '{"label": ', '"abort-1"}'), openai_text("Back.")],
    )
    events = EventBus()
    log = EventLog()
    events.subscribe(log.record)
    async with (
        http_server() as web,
        gateway(
            tmp_path,
            model_server,
            monkeypatch,
            McpServerConfig(name="web", url=web.url),
            events=events,
        ) as http,
        # The test's own connection to the same server, to ask it what it saw.
        connected(McpServerConfig(name="probe", url=web.url)) as probe,
    ):
        turn = asyncio.create_task(send(http, key, "wait for it"))
        assert await seen(probe, "abort-1", "started") == "true"

        async def calling() -> list[dict[str, Any]] | None:
            running: list[dict[str, Any]] = (await health(http))["running"]
            return running if running and running[0]["tools"] else None

        # /health shows the turn at its first model step, with the call under way.
        [running] = await until(calling, "/health to show the call under way")
        assert (running["sessionKey"], running["step"]) == (key, 1)
        assert [tool["name"] for tool in running["tools"]] == ["web__hang"]

        aborted = await http.post("/chat.abort", json={"sessionKey": key})
        answer = await asyncio.wait_for(turn, WAIT_S)
        assert await seen(probe, "abort-1", "cancelled") == "true"
        assert aborted.json() == {"ok": True, "aborted": True, "runIds": [answer["runId"]]}
        assert answer["status"] == "aborted"
        assert answer["error"]["code"] == "user_abort"

        # The session goes on: the next turn's model request answers every call.
        again = await send(http, key, "and now?")
        assert (again["status"], again["reply"]) == ("ok", "Back.")
        transcript = await history(str(http.base_url), key)
        turned = (await http.get(f"/turns/{answer['runId']}")).json()

    assert turned["status"] == "aborted"
    ended = [e for e in log.of(EventKind.ENDED) if e.turn_id == answer["runId"]]
    assert [e.state for e in ended] == ["aborted"]  # exactly once
    cancelled = "cancelled: the turn ended (user_abort) before this tool call returned"
    assert shape(transcript) == [
        ("user", "wait for it"),
        ("toolCall", [("call_hang", "web__hang", {"label": "abort-1"})]),
        ("toolResult", ("call_hang", cancelled, True)),
        ("user", "and now?"),
        ("assistant", "Back."),
    ]
    _, next_request = model_server.calls(MODEL)
    messages = next_request.body["messages"]
    assert {"role": "tool", "tool_call_id": "call_hang", "content": cancelled} in messages
    assert_every_call_answered(messages)
    assert messages[-1] == {"role": "user", "content": "and now?"}


# -- 4. A stdio server that dies mid-call -----------------------------------------------------


@pytest.mark.asyncio
async def test_a_server_that_dies_mid_call_is_an_error_result_then_it_is_restarted(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "agent:main:die"
    model_server.script(
        MODEL,
        [
            openai_call("call_die", "srv__die", "{}"),
            openai_text("The tool server went away."),
            openai_call("call_add", "srv__add", '{"a": 20, "b": 22}'),
            openai_text("42."),
        ],
    )
    async with gateway(tmp_path, model_server, monkeypatch, stdio_config()) as http:
        died = await send(http, key, "die")
        assert (died["status"], died["reply"]) == ("ok", "The tool server went away.")

        async def restarted() -> dict[str, Any] | None:
            [server] = (await health(http))["toolServers"]
            ok = server["reconnects"] >= 1 and server["state"] == "ready" and server["tools"]
            return server if ok else None

        server = await until(restarted, "the stdio server to be started again")
        again = await send(http, key, "20 + 22?")

    assert server["name"] == "main/srv"
    assert server["generation"] >= 2
    assert (again["status"], again["reply"]) == ("ok", "42.")
    calls = model_server.calls(MODEL)
    [result] = [m for m in calls[1].body["messages"] if m["role"] == "tool"]
    assert result["tool_call_id"] == "call_die"
    assert result["content"].startswith("tool srv__die: MCP server srv went away during the call")
    assert calls[3].body["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_add",
        "content": "42",
    }


# -- 5. A WebSocket client sees the tool events -----------------------------------------------


@pytest.mark.asyncio
async def test_a_websocket_client_sees_each_call_start_and_return_before_the_final_event(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.script(
        MODEL,
        [openai_call("call_add", "srv__add", '{"a": 2,', ' "b": 3}'), openai_text("It is 5.")],
    )
    async with (
        gateway(tmp_path, model_server, monkeypatch, stdio_config()) as http,
        session(str(http.base_url)) as client,
    ):
        await client.send_message("agent:main:ws", "2 + 3?", "ws-tools-1")
        frames: list[dict[str, Any]] = []
        while not any(
            f.get("event") == "chat" and f["payload"]["state"] != "delta" for f in frames
        ):
            frames.append(await recv(client.ws))

    events = [f for f in frames if f["type"] == "event"]
    tool_frames = [f for f in events if f["event"] == "agent"]
    assert [f["payload"]["stream"] for f in tool_frames] == ["tool", "tool"]
    start, result = (f["payload"] for f in tool_frames)
    assert (start["runId"], start["sessionKey"]) == ("ws-tools-1", "agent:main:ws")
    assert start["data"] == {
        "toolCallId": "call_add",
        "name": "srv__add",
        "phase": "start",
        "args": {"a": 2, "b": 3},
    }
    assert result["data"]["phase"] == "result"
    assert (result["data"]["toolCallId"], result["data"]["name"]) == ("call_add", "srv__add")
    assert result["data"]["result"] == {"content": [{"type": "text", "text": "5"}]}
    assert result["data"]["isError"] is False
    # In order: the call starts, returns, and only then does the run end.
    final = events[-1]
    assert final["event"] == "chat"
    assert final["payload"]["state"] == "final"
    assert final["payload"]["message"]["content"] == [{"type": "text", "text": "It is 5."}]
    assert events.index(tool_frames[0]) < events.index(tool_frames[1]) < len(events) - 1


# -- 6. Metrics -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_metrics_count_tool_calls_by_tool_and_outcome_and_the_model_s_tokens(
    tmp_path: Path, model_server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_server.script(
        MODEL,
        [
            openai_reply(
                calls_chunk(entry(0, "call_ok", "srv__add", '{"a": 1, "b": 2}')),
                calls_chunk(entry(1, "call_bad", "srv__fail", "{}")),
            ),
            openai_text("3, and one failure."),
        ],
    )
    async with gateway(tmp_path, model_server, monkeypatch, stdio_config()) as http:
        answer = await send(http, "agent:main:metrics", "count")
        text = (await http.get("/metrics")).text

    assert answer["status"] == "ok"
    samples = metric_samples(text)
    assert metric(samples, "turngate_tool_calls_total", tool="srv__add", outcome="ok") == 1
    assert metric(samples, "turngate_tool_calls_total", tool="srv__fail", outcome="error") == 1
    assert metric(samples, "turngate_tool_call_seconds_count", tool="srv__add") == 1
    # Two model steps, each reporting the fake's usage, under the model's configured name.
    tokens = "turngate_model_tokens_total"
    assert [labels for name, labels in samples if name == tokens] == [
        (("kind", "prompt"), ("model", f"fake/{MODEL}")),
        (("kind", "completion"), ("model", f"fake/{MODEL}")),
    ]
    assert metric(samples, tokens, model=f"fake/{MODEL}", kind="prompt") == 2 * PROMPT_TOKENS
    assert (
        metric(samples, tokens, model=f"fake/{MODEL}", kind="completion") == 2 * COMPLETION_TOKENS
    )
