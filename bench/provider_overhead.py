"""Provider overhead benchmark: the gateway's CPU per model call, by history length.

It starts a fake model server in a separate process (raw asyncio HTTP/1.1 on 127.0.0.1, an
ephemeral port) that answers ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages``
(Anthropic) at once with a short streamed reply and its usage, in the shapes of the tests'
fakes (``tests/providers/fakes.py``). In this process it builds the real providers as the
gateway does (``build_chain`` from a ``ProviderConfig``, one link, no retries) and, on the
gateway's event loop (uvloop when installed), calls ``provider.stream(request)`` to the end with
a history of each ``--sizes`` length: alternating user / assistant ``ChatMessage`` of
``MESSAGE_CHARS`` characters each, the last one the user's.

For each provider: ``WARMUP_CALLS`` calls per size, then ``--repeats`` rounds, each running one
batch of ``--calls`` sequential calls per size (sizes interleaved, so that a change in the
machine's load touches every size alike). A batch's figure is this process's CPU time
(``time.process_time()``: user + system, all threads) divided by its calls; the server's CPU is
another process's and does not count. The table shows the median batch (min-max across
batches) in ms per call, the wall time per call, and the slope between consecutive sizes in
microseconds per extra message. Every answer is checked: its text names the number of messages
the server received, and it ends with a Finish carrying usage; a wrong one exits with code 1.

Besides the two providers, ``httpx2`` is a floor to read them against: the same OpenAI request
body (built by the provider's own ``request_body``, JSON-encoded as the SDK does) posted with a
bare ``httpx2.AsyncClient``, the SDKs' HTTP client, and its event stream read line by line with
``json.loads``, with no SDK, no deadlines and no fallback chain. What a provider costs above it
is the SDK's and turngate's; the floor itself is the HTTP client's.

How to read it: the CPU at 1 message is the fixed cost of a call (HTTP request, SSE parsing,
turngate's event handling); the slope is what each message of history adds (building the
request body, JSON encoding); a slope over few messages is within the batches' noise, read the
widest one. Goals (issue 14, item 7): <= 1 ms per call at 41 messages, a slope <= 10 us per
message. At C ms per call, one core makes at most 1000 / C calls a second. CPU time is steadier
than wall time on a busy machine, but not immune to it (shared caches, SMT siblings): compare
the load averages printed. Nothing is asserted on time. ``--profile`` prints instead the top
functions (cProfile, cumulative time, filtered to turngate and the SDKs) of one batch at the
middle size.

Run it from the project root::

    python bench/provider_overhead.py            # or: make bench-providers
    python bench/provider_overhead.py --provider openai --sizes 1,41,201,1001 --json
    python bench/provider_overhead.py --provider both   # the providers only, no floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import json
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import httpx2

from http_turns import HOST, BenchError, loop_factory, machine_info, positive_int
from turngate.config_providers import ProviderConfig
from turngate.providers.base import (
    ChatMessage,
    Finish,
    Provider,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    Usage,
)
from turngate.providers.fallback import FallbackChain
from turngate.providers.openai_compat import request_body
from turngate.providers.registry import build_chain

REPLY = ("Hello", " there", ",", " friend", ".")
"""The reply's text deltas; a last one says how many messages the server received."""
MESSAGE_CHARS = 200
WARMUP_CALLS = 20
PROFILED = r"turngate|openai|anthropic|httpx2|httpcore2|pydantic"
"""``--profile`` shows only the functions of these packages."""
SERVER_START_S = 30.0
GOAL_SIZE = 41
GOAL_CPU_MS = 1.0
GOAL_SLOPE_US = 10.0
PACKAGES = ("openai", "anthropic", "httpx2", "httpcore2", "pydantic", "uvloop")
KINDS = ("openai", "anthropic", "httpx2")
"""What ``--provider all`` measures, in this order; ``both`` is the first two."""
FLOOR_MAX_TOKENS = 4096
"""The floor's ``max_completion_tokens``: ProviderConfig's default, which the providers send."""
TEXT = (
    "The weather tool says Lisbon is sunny and 24 degrees; the user asked for a short plan for "
    "the afternoon, so the model suggested a walk by the river, a late lunch, and a museum that "
    "stays open until seven. It also noted the ferry times and a cafe near the tower. "
)
"""The messages are windows of this text, at a random offset each."""


# --- the fake model server (its own process) -----------------------------------------------


def sse(data: dict[str, Any], kind: str | None = None) -> bytes:
    head = f"event: {kind}\n" if kind else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def openai_events(texts: Sequence[str]) -> list[bytes]:
    def chunk(choices: list[Any], **extra: Any) -> bytes:
        base = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 0}
        return sse({**base, "model": "bench", "choices": choices, **extra})

    def delta(delta: dict[str, str], reason: str | None = None) -> bytes:
        return chunk([{"index": 0, "delta": delta, "finish_reason": reason}])

    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    return [
        delta({"role": "assistant", "content": ""}),
        *(delta({"content": text}) for text in texts),
        delta({}, "stop") + chunk([], usage=usage) + b"data: [DONE]\n\n",
    ]


def anthropic_events(texts: Sequence[str]) -> list[bytes]:
    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, **data}, kind)

    message: dict[str, Any] = {"id": "msg_b", "type": "message", "role": "assistant"}
    message |= {"model": "bench", "content": [], "stop_reason": None, "stop_sequence": None}
    message["usage"] = {"input_tokens": 10, "output_tokens": 1}
    block = {"type": "text", "text": ""}
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    return [
        event("message_start", message=message)
        + event("content_block_start", index=0, content_block=block),
        *(
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})
            for text in texts
        ),
        event("content_block_stop", index=0)
        + event("message_delta", delta=delta, usage={"output_tokens": 5})
        + event("message_stop"),
    ]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: each request is answered with a chunked event stream, one chunk
    (one write, so one segment: asyncio sets TCP_NODELAY) per event."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            fields = (line.partition(":") for line in lines[1:])
            length = sum(int(v) for k, _, v in fields if k.strip().lower() == "content-length")
            body = json.loads(await reader.readexactly(length))
            texts = [*REPLY, f" ({len(body['messages'])} messages)"]
            events = openai_events if path.endswith("/chat/completions") else anthropic_events
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for event in events(texts):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    writer.close()


def serve(conn: Connection) -> None:
    """The server process: sends its port through ``conn``, then serves until terminated."""

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the calls, measured --------------------------------------------------------------------


def history(size: int, rng: random.Random) -> tuple[ChatMessage, ...]:
    def text() -> str:
        start = rng.randrange(len(TEXT))
        return (TEXT * (MESSAGE_CHARS // len(TEXT) + 2))[start : start + MESSAGE_CHARS]

    return tuple(
        ChatMessage("user" if (size - 1 - i) % 2 == 0 else "assistant", text()) for i in range(size)
    )


class HttpFloor:
    """The floor: an OpenAI call made with the HTTP client alone (see the module docstring).

    It has the shape of a provider (``name``, ``stream``, ``aclose``) so that the same
    ``call`` drives and checks it.
    """

    name = "httpx2"

    def __init__(self, port: int) -> None:
        self._client = httpx2.AsyncClient(base_url=f"http://{HOST}:{port}/v1")

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Post the request's body; yield each chunk's text, then a Finish with its usage."""
        body = request_body("bench-model", request, FLOOR_MAX_TOKENS, asks_usage=True)
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "authorization": "Bearer no-key"}
        usage: Usage | None = None
        async with self._client.stream(
            "POST", "/chat/completions", content=content, headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                for choice in chunk["choices"]:
                    if text := choice["delta"].get("content"):
                        yield TextDelta(text)
                if counts := chunk.get("usage"):
                    usage = Usage(counts["prompt_tokens"], counts["completion_tokens"])
        yield Finish("stop", usage)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()


def chain(kind: str, port: int) -> FallbackChain | HttpFloor:
    """What ``kind`` names, on the fake server: a one-link chain as the gateway builds it, or
    the floor."""
    if kind == "httpx2":
        return HttpFloor(port)
    base = f"http://{HOST}:{port}" + ("/v1" if kind == "openai" else "")
    config = {"id": "bench", "kind": kind, "base_url": base, "max_retries": 0}
    providers = {"bench": ProviderConfig.model_validate(config)}
    return build_chain(["bench/bench-model"], providers, env={}, echo_latency_s=0.0)


async def call(provider: Provider, request: ProviderRequest) -> None:
    texts: list[str] = []
    finish: Finish | None = None
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        elif isinstance(event, Finish):
            finish = event
    expected = "".join(REPLY) + f" ({len(request.messages)} messages)"
    if "".join(texts) != expected or finish is None or finish.usage is None:
        raise BenchError(f"{provider.name}: wrong answer {''.join(texts)!r}, {finish!r}")


async def batch(provider: Provider, request: ProviderRequest, calls: int) -> tuple[float, float]:
    """CPU ms and wall ms per call, over ``calls`` sequential calls."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call(provider, request)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1000 / calls, wall * 1000 / calls


async def measure(kind: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(0)
    requests = {
        n: ProviderRequest("agent:bench:main", "run-b", history(n, rng)) for n in args.sizes
    }
    provider = chain(kind, port)
    try:
        for request in requests.values():
            for _ in range(WARMUP_CALLS):
                await call(provider, request)
        if args.profile:
            request = requests[args.sizes[len(args.sizes) // 2]]
            profiler = cProfile.Profile()
            profiler.enable()
            await batch(provider, request, args.calls)
            profiler.disable()
            print(f"\n== {kind}: cProfile, {args.calls} calls, {len(request.messages)} messages")
            stats = pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative")
            stats.print_stats(PROFILED, 20)
            return {}
        samples: dict[int, list[tuple[float, float]]] = {n: [] for n in args.sizes}
        for _ in range(args.repeats):
            for n, request in requests.items():
                samples[n].append(await batch(provider, request, args.calls))
    finally:
        await provider.aclose()
    rows = {}
    for n, runs in samples.items():
        cpu, wall = sorted(c for c, _ in runs), statistics.median(w for _, w in runs)
        rows[n] = {"cpu_ms": statistics.median(cpu), "min": cpu[0], "max": cpu[-1], "wall_ms": wall}
    pairs = zip(args.sizes, args.sizes[1:], strict=False)
    ms = {n: row["cpu_ms"] for n, row in rows.items()}
    slopes = [
        {"from": a, "to": b, "us_per_message": (ms[b] - ms[a]) * 1000 / (b - a)} for a, b in pairs
    ]
    return {"sizes": rows, "slopes": slopes}


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def report(kind: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n== {kind}: {args.repeats} batches of {args.calls} calls per size")
    print(f"  {'messages':>8}  {'CPU ms/call (min-max)':>24}  {'wall ms/call':>12}")
    for n, row in result["sizes"].items():
        spread = f"{row['cpu_ms']:.3f} ({row['min']:.3f}-{row['max']:.3f})"
        print(f"  {n:>8}  {spread:>24}  {row['wall_ms']:>12.3f}")
    for slope in result["slopes"]:
        us = slope["us_per_message"]
        print(
            f"  slope {slope['from']} -> {slope['to']} messages: {us:.1f} us/message"
            f"  (goal <= {GOAL_SLOPE_US:g}: {verdict(us <= GOAL_SLOPE_US)})"
        )
    if GOAL_SIZE in result["sizes"]:
        cpu = result["sizes"][GOAL_SIZE]["cpu_ms"]
        met = verdict(cpu <= GOAL_CPU_MS)
        print(f"  CPU at {GOAL_SIZE} messages: {cpu:.3f} ms (goal <= {GOAL_CPU_MS:g} ms: {met})")


def sizes(text: str) -> list[int]:
    return sorted({positive_int(part) for part in text.split(",")})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The gateway's CPU per model call at several history lengths."
    )
    parser.add_argument("--calls", type=positive_int, default=200, help="calls per batch")
    parser.add_argument("--repeats", type=positive_int, default=5, help="batches per size")
    parser.add_argument("--sizes", type=sizes, default=[1, 41, 201], help="e.g. 1,41,201")
    parser.add_argument(
        "--provider",
        choices=(*KINDS, "both", "all"),
        default="all",
        help="both: openai and anthropic; all: both, then the httpx2 floor",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the middle size")
    parser.add_argument("--json", action="store_true", help="also print all figures as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine: dict[str, Any] = dict(machine_info())
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            machine[package] = importlib.metadata.version(package)
    machine["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    factory = loop_factory()
    versions = ", ".join(f"{p} {machine[p]}" for p in PACKAGES if p in machine)
    print("turngate provider overhead benchmark")
    print(f"  date:     {machine['date']}")
    print(f"  machine:  {machine['platform']}, {machine['nproc']} CPUs ({machine['cpu']})")
    print(f"  python:   {machine['python']}, loop: {'uvloop' if factory else 'asyncio'}")
    print(f"  packages: {versions}")
    print(f"  load average at start: {machine['loadavg']}")
    print(f"  history: alternating user/assistant messages of {MESSAGE_CHARS} characters")
    kinds = {"all": list(KINDS), "both": list(KINDS[:2])}.get(args.provider, [args.provider])
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    results: dict[str, Any] = {}
    try:
        if not parent.poll(SERVER_START_S):
            raise BenchError(f"the fake server did not start within {SERVER_START_S:g} s")
        port: int = parent.recv()
        print(f"  fake server: pid {server.pid}, http://{HOST}:{port}")
        with asyncio.Runner(loop_factory=factory) as runner:
            for kind in kinds:
                results[kind] = runner.run(measure(kind, port, args))
                if not args.profile:
                    report(kind, results[kind], args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        server.join(10)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json and not args.profile:
        settings = {k: getattr(args, k) for k in ("calls", "repeats", "sizes")}
        settings |= {"message_chars": MESSAGE_CHARS, "warmup_calls": WARMUP_CALLS}
        machine["loop"] = "uvloop" if factory else "asyncio"
        print(json.dumps({"machine": machine, "settings": settings, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
