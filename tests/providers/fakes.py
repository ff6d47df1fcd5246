"""Fake model servers for the provider tests: OpenAI chat completions and Anthropic Messages.

One Starlette app serves both APIs (``POST /v1/chat/completions``, ``POST /v1/messages``) on
loopback. Each model name has a script: the steps its successive calls take (a status code,
or a named behaviour from :data:`STEPS`); once the script is used up, calls reply ``ok``. The
server records every call and sets :attr:`FakeModelServer.disconnected` when a client hangs
up before its response is complete, so a test can wait on it with a deadline.

Like the real APIs, a finished stream reports token usage (:data:`PROMPT_TOKENS`,
:data:`COMPLETION_TOKENS`): Anthropic's always, in ``message_start`` and ``message_delta``;
OpenAI's in a last chunk with ``choices: []``, when the request asks for it with
``stream_options: {"include_usage": true}``.

Besides the named steps, a step may be a :class:`RawReply`: an answer (a ``200`` unless it
says otherwise) whose body is sent as given, for what a named step does not cover.

The endpoints are raw ASGI so that they see the disconnect as it happens: between two chunks
they wait on ``receive()`` (which returns ``http.disconnect`` when the client goes away)
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.secrets import PROVIDER_KEY
from tests.support import serve
from turngate.config import GatewayConfig
from turngate.config_providers import ProviderConfig
from turngate.providers.base import (
    ChatMessage,
    Finish,
    Provider,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
)
from turngate.providers.fallback import FallbackChain
from turngate.providers.registry import build_chain
from turngate.providers.tool_calls import ToolCallAssembler

REPLY = ("Hello", " there", ",", " friend", ".")
"""The deltas of an ``ok`` reply, in order."""
SLOW_CHUNK_INTERVAL_S = 0.05
SLOW_CHUNKS_MAX = 200
"""A ``slow`` stream ends by itself after this many chunks (10 s): every wait is bounded."""
RETRY_AFTER_HEADER = "0.02"
"""What a 429 asks the client to wait, in seconds."""
HANG_MAX_S = 10.0
"""A ``hang`` gives up on its own after this long, if the client never hangs up."""
PROMPT_TOKENS = 10
COMPLETION_TOKENS = 5
"""The usage a finished stream reports, in either API."""
STREAM_OPTIONS_REFUSAL = "Unrecognized request argument supplied: stream_options"
"""What an older Azure OpenAI API version answers (400) to ``stream_options``."""

STEPS = (
    "ok",  # stream REPLY, then end the stream properly
    "slow",  # stream a chunk every SLOW_CHUNK_INTERVAL_S until the client hangs up
    "hang",  # accept the request and never answer
    "context_too_long",  # 400, in each API's own words
    "content_filter",  # OpenAI: finish_reason content_filter; Anthropic: stop_reason refusal
    "echo_key",  # 401 whose message quotes the credentials the client sent
    "overloaded_in_stream",  # Anthropic: 200, then an overloaded_error event
    # Broken answers, all with status 200:
    "cut_off",  # the first CUT_OFF_DELTAS of REPLY, then the body ends: no finish_reason and
    # no [DONE] (OpenAI), no message_stop (Anthropic)
    "cut_off_before_text",  # the stream's opening only, then the body ends
    "only_done",  # OpenAI: `data: [DONE]` alone; Anthropic: a message_stop event alone
    "html_page",  # a text/html page (a proxy's or a captive portal's), not an event stream
    "bad_sse",  # before any text, an event whose data is not JSON; then REPLY, properly ended
    "wrong_shape",  # before any text, valid JSON of the wrong shape (OpenAI: a chunk without
    # choices; Anthropic: a text delta that is a string); then REPLY, properly ended
    "empty_finish",  # the opening, then a proper end (finish_reason stop / message_stop), no text
    "truncated",  # REPLY, ended by the output budget: finish_reason length / stop_reason max_tokens
    "refuses_stream_options",  # OpenAI: 400 STREAM_OPTIONS_REFUSAL if the request has
    # stream_options, else like "ok"
)
CUT_OFF_DELTAS = 2
"""How many of REPLY's deltas a ``cut_off`` stream sends before its body ends."""
HTML_PAGE = (
    b"<html>\n<head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center></body>\n</html>\n"
)


@dataclass(frozen=True)
class RawReply:
    """A scripted answer (``200`` unless ``status`` says otherwise) whose body is ``body``,
    sent as one chunk under ``content_type``."""

    body: bytes
    content_type: str = "text/event-stream"
    status: int = 200


Step = int | str | RawReply


@dataclass
class Call:
    """One request the fake server received."""

    api: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    step: Step


@dataclass
class FakeModelServer:
    """Scripted OpenAI- and Anthropic-compatible endpoints; see the module docstring."""

    scripts: dict[str, list[Step]] = field(default_factory=dict)
    url: str = ""
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when a client hung up before its response was complete."""
    _calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, model: str, steps: Sequence[Step]) -> None:
        """The steps the next calls for ``model`` take, in order."""
        for step in steps:
            assert not isinstance(step, str) or step in STEPS, step
        with self._lock:
            self.scripts[model] = list(steps)

    def calls(self, model: str | None = None) -> list[Call]:
        """The calls received so far (for ``model`` only, if given)."""
        with self._lock:
            return [c for c in self._calls if model is None or c.model == model]

    def app(self) -> Starlette:
        """The ASGI app to serve."""
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", _Endpoint(self, "openai"), methods=["POST"]),
                Route("/v1/messages", _Endpoint(self, "anthropic"), methods=["POST"]),
            ]
        )
        # `serve` configures uvicorn from the app's gateway config; the defaults suit a fake.
        app.state.config = GatewayConfig()
        return app

    def _next_call(self, api: str, body: dict[str, Any], headers: dict[str, str]) -> Call:
        model = str(body.get("model"))
        with self._lock:
            script = self.scripts.get(model, [])
            step = script.pop(0) if script else "ok"
            call = Call(api, model, body, headers, step)
            self._calls.append(call)
        return call


@contextmanager
def running(server: FakeModelServer) -> Iterator[FakeModelServer]:
    """Serve ``server`` on an ephemeral loopback port for the duration of the block."""
    with serve(server.app()) as url:
        server.url = url
        yield server


class _Endpoint:
    """A raw ASGI endpoint (Starlette routes to instances as ASGI apps, not as handlers)."""

    def __init__(self, server: FakeModelServer, api: str) -> None:
        self.server = server
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        call = self.server._next_call(self.api, json.loads(raw), headers)
        wire: _Wire
        if self.api == "openai":
            options = call.body.get("stream_options") or {}
            wire = _OpenAIWire(include_usage=options.get("include_usage") is True)
        else:
            wire = _AnthropicWire()
        try:
            complete = await self._respond(call, wire, receive, send)
        except OSError:  # uvicorn's ClientDisconnected: a send after the client left
            complete = False
        if not complete:
            self.server.disconnected.set()

    async def _respond(self, call: Call, wire: _Wire, receive: Receive, send: Send) -> bool:
        """Answer ``call``; False if the client hung up first."""
        step = call.step
        if isinstance(step, int):
            hint = {"retry-after": RETRY_AFTER_HEADER} if step == 429 else {}
            await _json(send, step, wire.error(step, f"scripted HTTP {step}"), hint)
            return True
        if isinstance(step, RawReply):
            await _raw(send, step.content_type, step.body, step.status)
            return True
        if step == "hang":
            return not await _disconnect_within(receive, HANG_MAX_S)
        if step == "context_too_long":
            await _json(send, 400, wire.context_too_long())
            return True
        if step == "echo_key":
            sent = call.headers.get("authorization") or call.headers.get("x-api-key", "")
            await _json(send, 401, wire.error(401, f"Incorrect API key provided: {sent}"))
            return True
        if step == "html_page":
            await _raw(send, "text/html; charset=utf-8", HTML_PAGE)
            return True
        if step == "refuses_stream_options":
            if "stream_options" in call.body:
                error = {"message": STREAM_OPTIONS_REFUSAL, "type": "invalid_request_error"}
                await _json(send, 400, {"error": {**error, "param": None, "code": None}})
                return True
            step = "ok"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if step == "slow":
            return await self._slow(wire, receive, send)
        for chunk in wire.stream(step):
            await _chunk(send, chunk)
        await send({"type": "http.response.body", "body": b""})
        return True

    @staticmethod
    async def _slow(wire: _Wire, receive: Receive, send: Send) -> bool:
        await _chunk(send, wire.start())
        for index in range(SLOW_CHUNKS_MAX):
            await _chunk(send, wire.text(f"tick {index} "))
            if await _disconnect_within(receive, SLOW_CHUNK_INTERVAL_S):
                return False
        await _chunk(send, wire.end())
        await send({"type": "http.response.body", "body": b""})
        return True


class _Wire:
    """How one API words its stream and its errors."""

    def stream(self, step: str) -> list[bytes]:
        """The chunks of a ``200`` event stream for a named step (see :data:`STEPS`)."""
        reply = [self.text(text) for text in REPLY]
        chunks = {
            "ok": [self.start(), *reply, self.end()],
            "refuses_stream_options": [self.start(), *reply, self.end()],
            "content_filter": [self.refusal(), self.end()],
            "overloaded_in_stream": [self.start(), self.error_event(529, "Overloaded")],
            "cut_off": [self.start(), *reply[:CUT_OFF_DELTAS]],
            "cut_off_before_text": [self.start()],
            "only_done": [self.done_only()],
            "bad_sse": [self.start(), self.not_json(), *reply, self.end()],
            "wrong_shape": [self.start(), self.wrong_shape(), *reply, self.end()],
            "empty_finish": [self.start(), self.end()],
            "truncated": [self.start(), *reply, self.end(truncated=True)],
        }
        return chunks[step]

    def start(self) -> bytes:
        raise NotImplementedError

    def text(self, text: str) -> bytes:
        raise NotImplementedError

    def refusal(self) -> bytes:
        raise NotImplementedError

    def end(self, *, truncated: bool = False) -> bytes:
        raise NotImplementedError

    def done_only(self) -> bytes:
        raise NotImplementedError

    def not_json(self) -> bytes:
        raise NotImplementedError

    def wrong_shape(self) -> bytes:
        raise NotImplementedError

    def error(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def error_event(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def context_too_long(self) -> dict[str, Any]:
        raise NotImplementedError


class _OpenAIWire(_Wire):
    """``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``; with
    ``include_usage``, a usage chunk before ``[DONE]``."""

    def __init__(self, *, include_usage: bool = False) -> None:
        self.include_usage = include_usage

    def _chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        return openai_event(
            openai_chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])
        )

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def refusal(self) -> bytes:
        return self._chunk({}, finish_reason="content_filter")

    def end(self, *, truncated: bool = False) -> bytes:
        reason = "length" if truncated else "stop"
        usage = openai_event(openai_usage_chunk()) if self.include_usage else b""
        return self._chunk({}, finish_reason=reason) + usage + self.done_only()

    def done_only(self) -> bytes:
        return b"data: [DONE]\n\n"

    def not_json(self) -> bytes:
        return b'data: {"id": "chatcmpl-fake", "choices": [{"index": 0, "delta": \n\n'

    def wrong_shape(self) -> bytes:
        return openai_event({"id": "chatcmpl-fake", "object": "chat.completion.chunk"})

    def error_event(self, status: int, message: str) -> bytes:
        return openai_event(self.error(status, message))

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return {"error": {"message": message, "type": kind, "code": None}}

    def context_too_long(self) -> dict[str, Any]:
        return {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, your"
                " messages resulted in 9000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }


class _AnthropicWire(_Wire):
    """``event: <type>`` / ``data: {...}`` pairs, message_start to message_stop."""

    def _event(self, kind: str, data: Mapping[str, Any]) -> bytes:
        return anthropic_event(kind, {"type": kind, **data})

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # A running total: message_delta's output_tokens replaces it.
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
        }
        return self._event("message_start", {"message": message}) + self._event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )

    def text(self, text: str) -> bytes:
        delta = {"type": "text_delta", "text": text}
        return self._event("content_block_delta", {"index": 0, "delta": delta})

    def _stop(self, reason: str) -> bytes:
        delta = {"stop_reason": reason, "stop_sequence": None}
        return self._event(
            "message_delta", {"delta": delta, "usage": {"output_tokens": COMPLETION_TOKENS}}
        )

    def refusal(self) -> bytes:
        return self.start() + self._stop("refusal")

    def end(self, *, truncated: bool = False) -> bytes:
        return (
            self._event("content_block_stop", {"index": 0})
            + self._stop("max_tokens" if truncated else "end_turn")
            + self.done_only()
        )

    def done_only(self) -> bytes:
        return self._event("message_stop", {})

    def not_json(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'

    def wrong_shape(self) -> bytes:
        return self._event("content_block_delta", {"index": 0, "delta": "Hello"})

    def error(self, status: int, message: str) -> dict[str, Any]:
        kinds = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
        return {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }

    def error_event(self, status: int, message: str) -> bytes:
        return self._event("error", {"error": self.error(status, message)["error"]})

    def context_too_long(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 210000 tokens > 200000 maximum",
            },
        }


def openai_chunk(choices: Any) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with ``choices`` as given (of any shape)."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": choices,
    }


def openai_usage_chunk(
    prompt_tokens: int = PROMPT_TOKENS, completion_tokens: int = COMPLETION_TOKENS
) -> dict[str, Any]:
    """The last chunk of a stream that was asked for usage: no choices, and the counts."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return {**openai_chunk([]), "usage": usage}


def openai_event(data: Any) -> bytes:
    """One OpenAI stream event: a ``data:`` line carrying ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n".encode()


def anthropic_event(kind: str, data: Any) -> bytes:
    """One Anthropic stream event: ``event: <kind>`` and ``data`` as JSON."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _json(
    send: Send, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> None:
    raw = [(b"content-type", b"application/json")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def _raw(send: Send, content_type: str, body: bytes, status: int = 200) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _disconnect_within(receive: Receive, limit_s: float) -> bool:
    """True as soon as the client hangs up; False if it is still there after ``limit_s``."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return True
    except TimeoutError:
        return False


SECRET_KEY = PROVIDER_KEY
"""The API key every test chain is given; it must never show in an error or a log."""
KEY_ENV = "FAKE_API_KEY"
CALL_TIMEOUT_S = 10.0
"""Bound on any whole exchange a test waits for."""
REQUEST = ProviderRequest(
    "agent:main:main",
    "run-1",
    (ChatMessage("system", "Be brief."), ChatMessage("user", "hi")),
)
"""The request every test sends, unless it says otherwise."""


def fake_provider(
    server: FakeModelServer, kind: str = "openai", **overrides: Any
) -> ProviderConfig:
    """A provider at the fake server with test-sized timeouts and backoff."""
    settings: dict[str, Any] = {
        "id": "fake",
        "kind": kind,
        "base_url": f"{server.url}/v1" if kind == "openai" else server.url,
        "api_key_env": KEY_ENV,
        "connect_timeout": 1.0,
        # Generous, so that a loaded machine never times a healthy call out; the tests of
        # the deadline itself set a short one.
        "first_token_timeout": 5.0,
        "total_timeout": 3.0,
        "max_retries": 2,
        "retry_backoff": 0.01,
        "max_tokens": 256,
    }
    return ProviderConfig.model_validate({**settings, **overrides})


@asynccontextmanager
async def chain_of(
    config: ProviderConfig, *models: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[FallbackChain]:
    """A chain over ``models`` of ``config``'s provider, closed at the end of the block."""
    chain = build_chain(
        [f"{config.id}/{model}" for model in models],
        {config.id: config},
        env={KEY_ENV: SECRET_KEY} if env is None else env,
        echo_latency_s=0.0,
        rng=random.Random(0),
    )
    try:
        yield chain
    finally:
        await chain.aclose()


@dataclass(frozen=True, slots=True)
class Answer:
    """What one call yielded: the text of its deltas, and the Finish that ended it."""

    deltas: list[str]
    finish: Finish


async def read_answer(
    events: AsyncIterator[ProviderEvent], into: list[str] | None = None
) -> Answer:
    """A call's events to their end, held to the Provider's contract: text deltas, then
    exactly one Finish, last. Each delta's text is also appended to ``into`` as it arrives,
    for a test that expects the call to fail after some output. The caller bounds the wait."""
    deltas = [] if into is None else into
    finishes: list[Finish] = []
    async for event in events:
        assert not finishes, f"{event!r} came after the Finish"
        if isinstance(event, Finish):
            finishes.append(event)
        else:
            assert isinstance(event, TextDelta), f"{event!r}: no tools were offered"
            deltas.append(event.text)
    assert finishes, "the call ended without a Finish"
    return Answer(deltas, finishes[0])


async def answer(
    provider: Provider, request: ProviderRequest = REQUEST, *, into: list[str] | None = None
) -> Answer:
    """One call, within :data:`CALL_TIMEOUT_S` (see :func:`read_answer`)."""
    async with asyncio.timeout(CALL_TIMEOUT_S):
        return await read_answer(provider.stream(request), into)


async def collect(
    provider: Provider, request: ProviderRequest = REQUEST, *, into: list[str] | None = None
) -> list[str]:
    """The text of every delta of one call (see :func:`answer`)."""
    return (await answer(provider, request, into=into)).deltas


WEATHER_TOOL = ToolDefinition(
    "weather",
    "The weather in a city today.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK_TOOL = ToolDefinition("clock", "The time now.", {"type": "object", "properties": {}})
TOOL_REQUEST = ProviderRequest(
    "agent:main:main",
    "run-1",
    (ChatMessage("system", "Be brief."), ChatMessage("user", "weather in Lisbon?")),
    tools=(WEATHER_TOOL, CLOCK_TOOL),
)
"""A request that offers two tools."""
ESCAPED_ARGUMENTS = '{"city": "Z\\u00fcrich", "mood": "\\ud83d\\ude00", "raw": "Zürich 😀"}'
"""Tool-call arguments as JSON text with a \\u escape, a surrogate pair's escapes, and raw
multi-byte characters: split one character a chunk, the cuts fall inside each escape."""


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """What one call that may call tools yielded: its text and tool-call deltas in order,
    and the Finish that ended it."""

    events: list[TextDelta | ToolCallDelta]
    finish: Finish

    @property
    def text(self) -> str:
        """The answer's text."""
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def calls(self) -> list[ToolCall]:
        """The answer's tool calls, put back together."""
        assembler = ToolCallAssembler("test")
        for event in self.events:
            if isinstance(event, ToolCallDelta):
                assembler.add(event)
        return assembler.calls()


async def tool_answer(provider: Provider, request: ProviderRequest = TOOL_REQUEST) -> ToolAnswer:
    """One call, within :data:`CALL_TIMEOUT_S`, held to the Provider's contract: text and
    tool-call deltas, then exactly one Finish, last."""
    events: list[TextDelta | ToolCallDelta] = []
    finishes: list[Finish] = []
    async with asyncio.timeout(CALL_TIMEOUT_S):
        async for event in provider.stream(request):
            assert not finishes, f"{event!r} came after the Finish"
            if isinstance(event, Finish):
                finishes.append(event)
            else:
                events.append(event)
    assert finishes, "the call ended without a Finish"
    return ToolAnswer(events, finishes[0])


async def until_set(event: threading.Event) -> bool:
    """Wait, off the loop, for a flag the server thread sets; False after the deadline."""
    return await asyncio.to_thread(event.wait, CALL_TIMEOUT_S)
