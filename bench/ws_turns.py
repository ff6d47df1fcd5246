"""WebSocket turn benchmark: latency, throughput and memory of a ``turngate gateway`` process.

It starts a gateway as a subprocess exactly as ``bench/http_turns.py`` does (fresh temporary
state directory, echo provider with no latency, listening on 127.0.0.1 on a free port), speaks
the gateway WebSocket protocol to it at ``/ws`` (``connect.challenge``, ``connect``, then
``chat.send``: a ``res`` acknowledgement, ``chat`` deltas and one terminal ``chat`` event per
run id), then stops it (SIGTERM, then SIGKILL after 10 s). It measures:

a. single connection latency: ``--calls`` sequential ``chat.send`` turns (after 200 warm-up
   turns) on one connection to one session, each sent once the previous one's ``final``
   arrived; p50, p99, p99.9, mean and max in ms, and how many requests were answered
   ``rate_limited`` (a rate-limited turn is sent again, same key, after its ``retryAfterMs``;
   its latency counts from the send that was accepted; the phase stops after 40 s).
b. throughput: ``--clients`` connections, each on its own session, in a closed loop for
   ``--duration-s`` seconds after a 1 s warm-up: turns/s (terminal events received in the
   window), latency p50/p99 under load (turns sent and ended in the window), the gateway's CPU
   time per turn and this client's CPU use (one Python process may not be able to drive the
   gateway to its limit: the report says so).
c. memory: VmRSS of the gateway before, with ``--idle-clients`` connected and handshaken idle
   clients, and after they all closed (once the gateway's open file count is back to where it
   was, within 10 s): the increase in MB and kB per client. Twice: with clients that offer
   permessage-deflate, and with clients that do not; the report says whether the gateway
   negotiated it (``Sec-WebSocket-Extensions`` of the handshake response). Each of the two
   runs on a new gateway (3 clients connected and closed first): the memory a gateway frees
   stays in its heap and a later run would reuse it, which would make that run look cheaper.

Every reply is checked (``final`` with ``"echo: " + message`` as its text); failures are
counted and printed, never raised. The figures are compared to goals (p50 <= 1 ms, p99 <= 2.5
ms, p99.9 <= 5 ms, no ``rate_limited`` answer to a client sending sequential turns back to
back, >= 2000 turns/s with 200 clients, <= 40 MB more RSS for 1000 idle clients) and printed
as MET / NOT MET; missing a goal never makes the script fail. It is a benchmark, not a test.

The gateway's ``connections_max`` (1000 by default) is raised for the run, through
``TURNGATE_CONNECTIONS_MAX``, to fit the idle clients and the load clients with room to spare;
this process's open file limit is raised to its hard limit (the gateway inherits it). The
other ``TURNGATE_*`` variables of the environment reach the gateways unchanged (for instance
``TURNGATE_WS_COMPRESSION=true`` to measure clients whose compression is accepted).

The load client is the ``websockets`` library's asyncio client (without compression, on uvloop
when installed); latencies include its own overhead.

Run it from the project root::

    python bench/ws_turns.py
    python bench/ws_turns.py --calls 1000 --duration-s 3 --idle-clients 300 --json
    python bench/ws_turns.py --ws-frames-per-s-max 10000     # a gateway without rate limiting
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

# The helpers of the HTTP benchmark (the gateway process, /proc readings, the report) are
# shared, not copied: make bench/ importable whoever runs this file.
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import http_turns  # noqa: E402
from http_turns import (  # noqa: E402
    HOST,
    NET_TIMEOUT_S,
    START_TIMEOUT_S,
    WARMUP_CALLS,
    WARMUP_S,
    BenchError,
    LatencyStats,
    Tally,
    drain_stdout,
    gateway_command,
    loop_factory,
    machine_info,
    positive_float,
    positive_int,
    print_banner,
    print_errors,
    print_summary,
    read_cpu_s,
    read_rss_mb,
    stop_gateway,
    wait_listening,
    wait_ready,
)

ECHO_PREFIX = "echo: "
LATENCY_BUDGET_S = 40.0
"""Phase a stops after this long (a rate-limited client gets some 50 turns/s, not 5000)."""
RETRY_AFTER_MAX_S = 1.0
FRAMES_PER_TURN_MAX = 10_000
LOAD_TURNS_MAX = 10_000_000
CONNECT_CONCURRENCY = 50
CLOSE_TIMEOUT_S = 5.0
SETTLE_S = 0.5
"""Pause before reading RSS, so that the gateway is done with what just happened."""
FD_WAIT_MAX_S = 10.0
FD_POLL_S = 0.05
FD_SLACK = 5
"""Open files of the gateway above its count before the idle clients that still count as
"all gone" (its store or log may hold one more file than before)."""
CONNECTIONS_SPARE = 100
MEMORY_WARMUP_CLIENTS = 3
"""Clients connected and closed on a new gateway before its RSS is read (first-use costs)."""
GATEWAY_DIRS = ("gateway", "gateway-deflate", "gateway-plain")
"""The state directories (in one temporary directory) of the three gateways: a and b share
one; each memory figure gets a new gateway."""
DELTA_MARK = '"state": "delta"'
"""How a ``chat`` delta reads on the wire (``json.dumps`` with its default separators): such a
frame is skipped without parsing it, to keep the load client cheap. A message containing this
text is escaped in JSON, so it cannot match; if the server's spelling changes, deltas are
parsed and skipped."""

GOAL_P50_MS = 1.0
GOAL_P99_MS = 2.5
GOAL_P999_MS = 5.0
GOAL_RATE_LIMITED = 0
GOAL_TURNS_PER_S = 2000.0
GOAL_IDLE_CLIENTS = 1000
GOAL_IDLE_MB = 40.0

# websockets >= 15 reads proxy settings from the environment; the gateway is on loopback.
CONNECT_OPTIONS: dict[str, Any] = (
    {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
)

Outcome = Literal["ok", "failed", "limited"]
T = TypeVar("T")


# --- figures ------------------------------------------------------------------------------


@dataclass
class WsTally(Tally):
    """Turns done and failed, and requests answered ``rate_limited`` (not failures)."""

    rate_limited: int = 0


@dataclass
class LatencyResult:
    calls: int
    calls_done: int
    warmup_calls: int
    budget_hit: bool
    latency: LatencyStats
    rate_limited: int
    rate_limited_in_warmup: int
    errors: int
    error_examples: list[str]


@dataclass
class ThroughputResult:
    clients: int
    connected: int
    duration_s: float
    turns: int
    turns_per_s: float
    latency: LatencyStats
    gateway_cpu_s: float
    gateway_cpu_ms_per_turn: float
    gateway_cpu_pct: float
    client_cpu_pct: float
    rate_limited: int
    errors: int
    error_examples: list[str]


@dataclass
class MemoryResult:
    compression: str
    idle_clients: int
    connected: int
    negotiated: int
    extensions_header: str | None
    rss_before_mb: float
    rss_with_mb: float
    rss_after_mb: float
    increase_mb: float
    per_client_kb: float
    returned_mb: float
    fds_before: int
    fds_with: int
    fds_after: int
    all_gone: bool
    connect_s: float
    close_s: float
    errors: int
    error_examples: list[str]


# --- a WebSocket protocol client ----------------------------------------------------------


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a frame's fields are checked)."""
    return value if isinstance(value, dict) else {}


def connect_frame(token: str | None) -> str:
    """The ``connect`` request, as tests/gateway/test_ws_protocol.py builds it."""
    return json.dumps(
        {
            "type": "req",
            "id": "connect-1",
            "method": "connect",
            "params": {
                "minProtocol": 4,
                "maxProtocol": 4,
                "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "cli"},
                "role": "operator",
                "scopes": ["operator.read", "operator.write"],
                "auth": {"token": token} if token else {},
            },
        }
    )


def reply_text(payload: dict[str, Any]) -> str | None:
    """The text of a terminal ``chat`` event's ``message``, or None if it has none."""
    content = as_dict(payload.get("message")).get("content")
    if not isinstance(content, list):
        return None
    parts = [as_dict(p).get("text") for p in content if as_dict(p).get("type") == "text"]
    return "".join(p for p in parts if isinstance(p, str))


NetErrors = (WebSocketException, OSError, TimeoutError, EOFError, ValueError, BenchError)


class WsClient:
    """One WebSocket connection through the handshake; it reconnects after a failure."""

    def __init__(self, port: int, compression: str | None, token: str | None) -> None:
        self.uri = f"ws://{HOST}:{port}/ws"
        self.compression = compression
        self.token = token
        self.ws: ClientConnection | None = None
        self.extensions: str | None = None
        self.sent = 0

    async def open(self) -> ClientConnection:
        """Connect and go through the handshake (challenge, connect, hello-ok)."""
        async with asyncio.timeout(NET_TIMEOUT_S):
            ws = await connect(
                self.uri,
                compression=self.compression,
                open_timeout=NET_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
                ping_interval=None,  # the gateway pings; the library answers
                **CONNECT_OPTIONS,
            )
            try:
                challenge = as_dict(json.loads(await ws.recv()))
                if challenge.get("event") != "connect.challenge":
                    raise BenchError(f"expected connect.challenge, got {str(challenge)[:200]}")
                await ws.send(connect_frame(self.token))
                hello = as_dict(json.loads(await ws.recv()))
                kind = as_dict(hello.get("payload")).get("type")
                if hello.get("ok") is not True or kind != "hello-ok":
                    raise BenchError(f"connect refused: {str(hello)[:200]}")
            except BaseException:
                await ws.close()
                raise
        response = ws.response
        if response is not None:
            self.extensions = response.headers.get("Sec-WebSocket-Extensions")
        self.ws = ws
        return ws

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(*NetErrors):
                async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
                    await ws.close()

    async def turn(
        self, session_key: str, message: str, key: str, tally: WsTally
    ) -> tuple[Outcome, float]:
        """One checked ``chat.send``: its outcome, and when rate limited the seconds to wait.

        Failures are counted in ``tally``, not raised; after one, the connection is closed
        (frames of the failed turn may still come) and the next turn opens a new one.
        """
        self.sent += 1
        request_id = f"r{self.sent}"
        frame = json.dumps(
            {
                "type": "req",
                "id": request_id,
                "method": "chat.send",
                "params": {"sessionKey": session_key, "message": message, "idempotencyKey": key},
            },
            separators=(",", ":"),
        )
        expected = ECHO_PREFIX + message
        try:
            async with asyncio.timeout(NET_TIMEOUT_S):
                ws = self.ws if self.ws is not None else await self.open()
                await ws.send(frame)
                for _ in range(FRAMES_PER_TURN_MAX):
                    raw = await ws.recv()
                    text = raw if isinstance(raw, str) else raw.decode()
                    if DELTA_MARK in text:
                        continue
                    data = as_dict(json.loads(text))
                    kind = data.get("type")
                    if kind == "res" and data.get("id") == request_id:
                        if data.get("ok") is True:
                            continue  # the acknowledgement; the turn's events follow
                        error = as_dict(data.get("error"))
                        if as_dict(error.get("details")).get("code") == "rate_limited":
                            tally.rate_limited += 1
                            retry_ms = error.get("retryAfterMs")
                            wait = retry_ms / 1000 if isinstance(retry_ms, int | float) else 0.0
                            return "limited", min(RETRY_AFTER_MAX_S, max(0.0, wait))
                        tally.fail(f"{key}: chat.send refused: {text[:200]}")
                        return "failed", 0.0
                    if kind != "event" or data.get("event") != "chat":
                        continue  # tick, health...
                    payload = as_dict(data.get("payload"))
                    if payload.get("runId") != key or payload.get("state") == "delta":
                        continue
                    if payload.get("state") == "final" and reply_text(payload) == expected:
                        tally.ok += 1
                        return "ok", 0.0
                    tally.fail(f"{key}: terminal event: {text[:200]}")
                    return "failed", 0.0
                raise BenchError(f"no terminal event in {FRAMES_PER_TURN_MAX} frames")
        except NetErrors as exc:
            tally.fail(f"{key}: {type(exc).__name__}: {exc}")
            await self.close()
            return "failed", 0.0


async def bounded_gather(
    count: int, make: Callable[[int], Awaitable[T]], concurrency: int
) -> list[T]:
    """``make(0) ... make(count - 1)``, at most ``concurrency`` of them at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> T:
        async with gate:
            return await make(index)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def open_clients(
    port: int, count: int, compression: str | None, token: str | None, tally: WsTally
) -> list[WsClient]:
    """``count`` handshaken clients (50 connecting at once); the ones that failed are left out
    and counted in ``tally``."""

    async def make(index: int) -> WsClient | None:
        client = WsClient(port, compression, token)
        try:
            await client.open()
        except NetErrors as exc:
            tally.fail(f"client {index}: connect: {type(exc).__name__}: {exc}")
            return None
        return client

    opened = await bounded_gather(count, make, CONNECT_CONCURRENCY)
    return [client for client in opened if client is not None]


async def close_clients(clients: Sequence[WsClient]) -> None:
    async def close(index: int) -> None:
        await clients[index].close()

    await bounded_gather(len(clients), close, CONNECT_CONCURRENCY)


# --- the three measurements ---------------------------------------------------------------


def count_fds(pid: int) -> int:
    """Open files (sockets included) of process ``pid``; -1 if unknown."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def wait_fds(pid: int, at_most: int) -> tuple[bool, int]:
    """Poll until process ``pid`` has at most ``at_most`` open files (at most 10 s)."""
    fds = count_fds(pid)
    for _ in range(int(FD_WAIT_MAX_S / FD_POLL_S)):
        if 0 <= fds <= at_most:
            return True, fds
        await asyncio.sleep(FD_POLL_S)
        fds = count_fds(pid)
    return 0 <= fds <= at_most, fds


async def measure_latency(port: int, calls: int, token: str | None) -> LatencyResult:
    """Sequential turns on one connection to one session, each after the previous final."""
    client = WsClient(port, None, token)
    key = "agent:main:ws-latency"
    tally = WsTally()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + LATENCY_BUDGET_S
    warm_errors = warm_limited = 0
    done = 0
    budget_hit = False

    async def one(name: str) -> int | None:
        """A turn, sent again while rate limited; its latency from the accepted send."""
        for _ in range(int(LATENCY_BUDGET_S / 0.001)):
            start = clock()
            outcome, wait = await client.turn(key, name, name, tally)
            if outcome == "ok":
                return clock() - start
            if outcome == "failed" or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(wait)
        return None

    try:
        await client.open()
        for i in range(WARMUP_CALLS):
            await one(f"ws-warm-{i}")
            if time.monotonic() >= deadline:
                break
        warm_errors, warm_limited = tally.errors, tally.rate_limited
        for i in range(calls):
            if time.monotonic() >= deadline:
                budget_hit = True
                break
            sample = await one(f"ws-call-{i}")
            done += 1
            if sample is not None:
                samples.append(sample)
    except NetErrors as exc:
        tally.fail(f"connect: {type(exc).__name__}: {exc}")
    finally:
        await client.close()
    if warm_errors:
        tally.examples.insert(0, f"({warm_errors} of the errors during warm-up)")
    return LatencyResult(
        calls=calls,
        calls_done=done,
        warmup_calls=WARMUP_CALLS,
        budget_hit=budget_hit,
        latency=LatencyStats.of(samples),
        rate_limited=tally.rate_limited,
        rate_limited_in_warmup=warm_limited,
        errors=tally.errors,
        error_examples=tally.examples,
    )


async def measure_throughput(
    port: int, pid: int, clients: int, duration_s: float, token: str | None
) -> ThroughputResult:
    """``clients`` closed-loop clients, each on its own session, for a fixed time."""
    tally = WsTally()
    conns = await open_clients(port, clients, None, token, tally)
    spans: list[tuple[int, int]] = []
    clock = time.perf_counter_ns
    window: dict[str, float] = {}
    try:
        begin = clock()
        window_start = begin + int(WARMUP_S * 1e9)
        window_end = window_start + int(duration_s * 1e9)

        async def load(index: int, client: WsClient) -> None:
            session_key = f"agent:main:ws-load-{index}"
            for n in range(LOAD_TURNS_MAX):
                start = clock()
                if start >= window_end:
                    return
                name = f"ws-c{index}-{n}"
                outcome, wait = await client.turn(session_key, name, name, tally)
                if outcome == "ok":
                    spans.append((start, clock()))
                elif outcome == "limited":
                    await asyncio.sleep(wait)
                elif client.ws is None:
                    await asyncio.sleep(FD_POLL_S)  # it failed to reconnect: do not spin

        async def sample() -> None:
            """Read both processes' CPU time at the window's start and end."""
            await asyncio.sleep(max(0.0, (window_start - clock()) / 1e9))
            window["t0"], window["cpu0"], window["gw0"] = (
                clock(),
                time.process_time(),
                read_cpu_s(pid),
            )
            await asyncio.sleep(max(0.0, (window_end - clock()) / 1e9))
            window["t1"], window["cpu1"], window["gw1"] = (
                clock(),
                time.process_time(),
                read_cpu_s(pid),
            )

        await asyncio.gather(sample(), *(load(i, c) for i, c in enumerate(conns)))
    finally:
        await close_clients(conns)
    t0, t1 = int(window["t0"]), int(window["t1"])
    wall = (t1 - t0) / 1e9
    turns = sum(1 for _, end in spans if t0 <= end <= t1)
    gateway_cpu = window["gw1"] - window["gw0"]
    return ThroughputResult(
        clients=clients,
        connected=len(conns),
        duration_s=wall,
        turns=turns,
        turns_per_s=turns / wall,
        latency=LatencyStats.of([end - start for start, end in spans if t0 <= start and end <= t1]),
        gateway_cpu_s=gateway_cpu,
        gateway_cpu_ms_per_turn=gateway_cpu * 1000 / turns if turns else float("nan"),
        gateway_cpu_pct=gateway_cpu / wall * 100,
        client_cpu_pct=(window["cpu1"] - window["cpu0"]) / wall * 100,
        rate_limited=tally.rate_limited,
        errors=tally.errors,
        error_examples=tally.examples,
    )


async def measure_memory(
    port: int, pid: int, idle_clients: int, compression: str | None, token: str | None
) -> MemoryResult:
    """RSS before, with ``idle_clients`` handshaken idle clients, and after they closed."""
    tally = WsTally()
    await close_clients(
        await open_clients(port, MEMORY_WARMUP_CLIENTS, compression, token, WsTally())
    )
    _, fds_before = await wait_fds(pid, count_fds(pid))
    await asyncio.sleep(SETTLE_S)
    rss_before = read_rss_mb(pid)
    began = time.perf_counter()
    clients = await open_clients(port, idle_clients, compression, token, tally)
    connect_s = time.perf_counter() - began
    await asyncio.sleep(SETTLE_S)
    rss_with, fds_with = read_rss_mb(pid), count_fds(pid)
    negotiated = sum(1 for c in clients if "permessage-deflate" in (c.extensions or ""))
    header = clients[0].extensions if clients else None
    began = time.perf_counter()
    await close_clients(clients)
    close_s = time.perf_counter() - began
    all_gone, fds_after = await wait_fds(pid, fds_before + FD_SLACK)
    await asyncio.sleep(SETTLE_S)
    rss_after = read_rss_mb(pid)
    increase = rss_with - rss_before
    return MemoryResult(
        compression="deflate offered" if compression else "none offered",
        idle_clients=idle_clients,
        connected=len(clients),
        negotiated=negotiated,
        extensions_header=header,
        rss_before_mb=rss_before,
        rss_with_mb=rss_with,
        rss_after_mb=rss_after,
        increase_mb=increase,
        per_client_kb=increase * 1024 / len(clients) if clients else float("nan"),
        returned_mb=rss_with - rss_after,
        fds_before=fds_before,
        fds_with=fds_with,
        fds_after=fds_after,
        all_gone=all_gone,
        connect_s=connect_s,
        close_s=close_s,
        errors=tally.errors,
        error_examples=tally.examples,
    )


# --- report -------------------------------------------------------------------------------


def goal_row(figure: str, value: str, goal: str, met: bool) -> dict[str, Any]:
    return {"figure": figure, "value": value, "target": goal, "met": met}


def idle_goal_mb(mem: MemoryResult) -> tuple[float, str]:
    """The figure the 1000-client goal is checked against: the increase, or, for another
    number of clients, the per-client increase times 1000."""
    if mem.connected == GOAL_IDLE_CLIENTS:
        return mem.increase_mb, ""
    return (
        mem.per_client_kb * GOAL_IDLE_CLIENTS / 1024,
        f" (x{GOAL_IDLE_CLIENTS} from {mem.connected})",
    )


def summary(
    lat: LatencyResult, tput: ThroughputResult, memory: Sequence[MemoryResult]
) -> list[dict[str, Any]]:
    stats = lat.latency
    rows = [
        goal_row(
            "p50 latency, 1 connection",
            f"{stats.p50_ms:.3f} ms",
            f"<= {GOAL_P50_MS:g} ms",
            stats.p50_ms <= GOAL_P50_MS,
        ),
        goal_row(
            "p99 latency, 1 connection",
            f"{stats.p99_ms:.3f} ms",
            f"<= {GOAL_P99_MS:g} ms",
            stats.p99_ms <= GOAL_P99_MS,
        ),
        goal_row(
            "p99.9 latency, 1 connection",
            f"{stats.p99_9_ms:.3f} ms",
            f"<= {GOAL_P999_MS:g} ms",
            stats.p99_9_ms <= GOAL_P999_MS,
        ),
        goal_row(
            "rate_limited, sequential turns",
            f"{lat.rate_limited}",
            f"{GOAL_RATE_LIMITED}",
            lat.rate_limited <= GOAL_RATE_LIMITED,
        ),
        goal_row(
            f"throughput, {tput.connected} clients",
            f"{tput.turns_per_s:.0f} turns/s",
            f">= {GOAL_TURNS_PER_S:.0f} turns/s",
            tput.turns_per_s >= GOAL_TURNS_PER_S,
        ),
    ]
    for mem in memory:
        value, note = idle_goal_mb(mem)
        rows.append(
            goal_row(
                f"RSS increase, {GOAL_IDLE_CLIENTS} idle clients, {mem.compression}{note}",
                f"{value:.1f} MB",
                f"<= {GOAL_IDLE_MB:g} MB",
                value <= GOAL_IDLE_MB,
            )
        )
    return rows


def print_latency(lat: LatencyResult) -> None:
    stats = lat.latency
    print(f"  {lat.latency.line()}")
    print(
        f"  goals: p50 {stats.p50_ms:.3f} <= {GOAL_P50_MS:g} ms"
        f" {http_turns.verdict(stats.p50_ms <= GOAL_P50_MS)},"
        f" p99 {stats.p99_ms:.3f} <= {GOAL_P99_MS:g} ms"
        f" {http_turns.verdict(stats.p99_ms <= GOAL_P99_MS)},"
        f" p99.9 {stats.p99_9_ms:.3f} <= {GOAL_P999_MS:g} ms"
        f" {http_turns.verdict(stats.p99_9_ms <= GOAL_P999_MS)}"
    )
    print(
        f"  rate_limited answers: {lat.rate_limited}"
        f" ({lat.rate_limited_in_warmup} in warm-up) (goal {GOAL_RATE_LIMITED}:"
        f" {http_turns.verdict(lat.rate_limited <= GOAL_RATE_LIMITED)})"
    )
    if lat.budget_hit:
        print(
            f"  stopped at the {LATENCY_BUDGET_S:g} s budget: {lat.calls_done} of"
            f" {lat.calls} turns done"
        )
    print_errors(lat.errors, lat.error_examples)


def print_throughput(tput: ThroughputResult) -> None:
    print(
        f"  {tput.turns_per_s:.0f} turns/s ({tput.turns} turns, {tput.connected} clients"
        f" connected) (goal >= {GOAL_TURNS_PER_S:.0f}:"
        f" {http_turns.verdict(tput.turns_per_s >= GOAL_TURNS_PER_S)})"
    )
    print(f"  latency under load: {tput.latency.line()}")
    print(
        f"  gateway CPU: {tput.gateway_cpu_ms_per_turn:.3f} ms per turn"
        f" ({tput.gateway_cpu_s:.2f} s over {tput.duration_s:.2f} s)"
    )
    print(
        f"  CPU (100% = one core): gateway {tput.gateway_cpu_pct:.0f}%,"
        f" this client {tput.client_cpu_pct:.0f}%"
    )
    if tput.client_cpu_pct >= 90 and tput.gateway_cpu_pct < 90:
        print(
            "  note: this client used a whole core while the gateway did not: one client"
            " process cannot drive the gateway to its limit here; the figure is the"
            " client's limit as much as the gateway's"
        )
    print(f"  rate_limited answers: {tput.rate_limited}")
    print_errors(tput.errors, tput.error_examples)


def print_memory(mem: MemoryResult) -> None:
    print(
        f"  connected and handshaken: {mem.connected} of {mem.idle_clients}"
        f" in {mem.connect_s:.1f} s"
    )
    if mem.negotiated:
        print(
            f"  compression negotiated on {mem.negotiated} of {mem.connected}"
            f" (Sec-WebSocket-Extensions: {mem.extensions_header})"
        )
    else:
        print(f"  compression not negotiated (Sec-WebSocket-Extensions: {mem.extensions_header})")
    print(
        f"  RSS before {mem.rss_before_mb:.1f} MB, with the clients {mem.rss_with_mb:.1f} MB,"
        f" after they closed {mem.rss_after_mb:.1f} MB"
    )
    value, note = idle_goal_mb(mem)
    print(
        f"  increase {mem.increase_mb:.1f} MB, {mem.per_client_kb:.1f} kB per client;"
        f" for {GOAL_IDLE_CLIENTS} clients{note}: {value:.1f} MB (goal <= {GOAL_IDLE_MB:g} MB:"
        f" {http_turns.verdict(value <= GOAL_IDLE_MB)})"
    )
    print(f"  returned after the close: {mem.returned_mb:.1f} MB of {mem.increase_mb:.1f} MB")
    gone = "yes" if mem.all_gone else f"NO, still {mem.fds_after} after {FD_WAIT_MAX_S:g} s"
    print(
        f"  gateway open files: {mem.fds_before} before, {mem.fds_with} with the clients,"
        f" {mem.fds_after} after (all gone: {gone}); closed in {mem.close_s:.1f} s"
    )
    print_errors(mem.errors, mem.error_examples)


# --- main ---------------------------------------------------------------------------------


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's open file limit to its hard limit (the gateway inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def gateway_env(args: argparse.Namespace) -> tuple[dict[str, str], int]:
    """The gateway's environment: ``connections_max`` raised to fit every client."""
    env = dict(os.environ)
    needed = max(args.idle_clients, args.clients) + CONNECTIONS_SPARE
    try:
        configured = int(env.get("TURNGATE_CONNECTIONS_MAX", "0"))
    except ValueError:
        configured = 0
    connections_max = max(needed, configured)
    env["TURNGATE_CONNECTIONS_MAX"] = str(connections_max)
    if args.ws_frames_per_s_max is not None:
        env["TURNGATE_WS_FRAMES_PER_S_MAX"] = f"{args.ws_frames_per_s_max:g}"
    return env, connections_max


@dataclass
class Gateway:
    pid: int
    port: int
    rss_start_mb: float


@contextlib.asynccontextmanager
async def running_gateway(env: dict[str, str], state_dir: Path) -> AsyncIterator[Gateway]:
    """A gateway started as http_turns starts it (in ``state_dir``), stopped on the way out."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(state_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    drain: asyncio.Task[None] | None = None
    try:
        port = await wait_listening(proc)
        await wait_ready(port, started + START_TIMEOUT_S)
        drain = asyncio.create_task(drain_stdout(proc))
        gateway = Gateway(proc.pid, port, read_rss_mb(proc.pid))
        print(f"gateway: pid {proc.pid}, ws://{HOST}:{port}/ws, state dir {state_dir}")
        print(f"gateway RSS at start: {gateway.rss_start_mb:.1f} MB")
        yield gateway
    finally:
        code = await stop_gateway(proc)
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        how = " (killed by SIGTERM, as uvicorn re-raises it)" if code == -signal.SIGTERM else ""
        print(f"gateway pid {proc.pid} stopped: exit code {code}{how}")


async def run(args: argparse.Namespace, state_dir: Path, machine: dict[str, str | int]) -> None:
    env, connections_max = gateway_env(args)
    token = env.get("TURNGATE_TOKEN") or None
    rate = env.get("TURNGATE_WS_FRAMES_PER_S_MAX", "default")
    print(f"gateway settings: connections_max {connections_max}, ws_frames_per_s_max {rate}")
    gc.collect()
    gc.freeze()
    print()
    async with running_gateway(env, state_dir / GATEWAY_DIRS[0]) as gateway:
        gateways = [asdict(gateway)]
        print()
        print(f"== a. single connection latency: {args.calls} turns after {WARMUP_CALLS} warm-up")
        lat = await measure_latency(gateway.port, args.calls, token)
        print_latency(lat)

        print()
        print(
            f"== b. throughput: {args.clients} clients, one session each,"
            f" {args.duration_s:g} s after {WARMUP_S:g} s warm-up"
        )
        tput = await measure_throughput(
            gateway.port, gateway.pid, args.clients, args.duration_s, token
        )
        print_throughput(tput)
        print()

    # Each memory figure on a gateway of its own: memory the gateway freed stays in its heap
    # (its RSS does not go down), and a second run would reuse it and look cheaper.
    memory: list[MemoryResult] = []
    for compression in ("deflate", None):
        print()
        offered = "offering permessage-deflate" if compression else "without compression"
        print(f"== c. memory: {args.idle_clients} idle clients {offered}, on a new gateway")
        name = GATEWAY_DIRS[1] if compression else GATEWAY_DIRS[2]
        async with running_gateway(env, state_dir / name) as gateway:
            gateways.append(asdict(gateway))
            mem = await measure_memory(
                gateway.port, gateway.pid, args.idle_clients, compression, token
            )
            print_memory(mem)
            memory.append(mem)

    rows = summary(lat, tput, memory)
    print_summary(rows, machine)
    if args.json:
        report = {
            "machine": machine,
            "gateway": {
                "processes": gateways,
                "connections_max": connections_max,
                "ws_frames_per_s_max": rate,
            },
            "latency": asdict(lat),
            "throughput": asdict(tput),
            "memory": [asdict(mem) for mem in memory],
            "goals": rows,
        }
        print()
        print(json.dumps(report, indent=2))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark a turngate gateway over WebSocket: latency, throughput, memory."
    )
    parser.add_argument("--calls", type=positive_int, default=5000, help="sequential turns (a)")
    parser.add_argument("--duration-s", type=positive_float, default=10.0, help="load time (b)")
    parser.add_argument("--clients", type=positive_int, default=200, help="connections in (b)")
    parser.add_argument(
        "--idle-clients", type=positive_int, default=GOAL_IDLE_CLIENTS, help="clients in (c)"
    )
    parser.add_argument(
        "--ws-frames-per-s-max",
        type=positive_float,
        metavar="N",
        help="set the gateway's ws_frames_per_s_max (default: the gateway's own default)",
    )
    parser.add_argument("--json", action="store_true", help="also print all figures as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = raise_fd_limit()
    machine = machine_info()
    factory = loop_factory()
    print_banner("turngate WebSocket turn benchmark", machine, factory)
    print(f"  open file limit: {soft} (hard {hard})")
    needed = 2 * max(args.idle_clients, args.clients) + 100
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(f"  warning: {needed} open files needed; connections will fail past the limit")
    state_dir = Path(tempfile.mkdtemp(prefix="turngate-bench-ws-"))
    try:
        for name in GATEWAY_DIRS:
            (state_dir / name).mkdir()
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run(args, state_dir, machine))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
