"""HTTP turn benchmark: latency, throughput and memory of one ``turngate gateway`` process.

It starts a gateway as a subprocess (fresh temporary state directory, echo provider with no
latency, listening on 127.0.0.1 on a free port), drives it over HTTP/1.1 keep-alive
connections, then stops it (SIGTERM, then SIGKILL after 10 s). It measures:

a. single connection latency: ``--calls`` sequential ``POST /chat.send`` (after 200 warm-up
   calls) on one keep-alive connection to one session; p50, p90, p99, mean and max in ms.
b. throughput: ``--clients`` concurrent clients, each on its own keep-alive connection, over
   ``--sessions`` sessions (client i cycles over sessions i, i + clients, i + 2 * clients, ...
   so no two clients ever hit the same session at once) for ``--duration-s`` seconds after a
   1 s warm-up; turns/s and latency p50/p99 under load.
c. memory: VmRSS of the gateway process at start, and after ``--idle-sessions`` distinct
   sessions were each sent one turn and ``/health`` shows no running or queued turn.

Every response is checked (HTTP 200 and ``reply == "echo: " + message``); failures are counted
and printed, never raised. The figures are compared to their goals (p50 <= 1 ms, p99 <= 2.5
ms, p99.9 <= 5 ms, gateway CPU <= 0.4 ms a turn under load, >= 3000 turns/s, RSS <= 150 MB
with 10k idle sessions) and printed as MET / NOT MET; missing a goal never makes the script
fail. It is a benchmark, not a test: it asserts nothing on time.

The load client is a minimal asyncio HTTP/1.1 client (on uvloop when installed) so that it
takes as little CPU as possible away from the gateway: on a 2-core machine the gateway needs
one core to itself. Latencies include the client's own overhead (tens of microseconds).

Run it from the project root::

    python bench/http_turns.py            # or: make bench
    python bench/http_turns.py --calls 300 --duration-s 3 --idle-sessions 2000 --json
    python bench/http_turns.py --store postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
NET_TIMEOUT_S = 30.0
"""Bound on every single network wait (connect, one request/response, one /health poll)."""
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
WARMUP_CALLS = 200
WARMUP_S = 1.0
HEALTH_POLL_S = 0.05
HEALTH_WAIT_MAX_S = 60.0
STDOUT_LINES_MAX = 100_000
LISTENING = re.compile(r"^turngate listening on http://127\.0\.0\.1:(\d+)(?:\s|$)")

TARGET_P50_MS = 1.0
TARGET_P99_MS = 2.5
TARGET_P999_MS = 5.0
TARGET_TURNS_PER_S = 3000.0
TARGET_CPU_MS_PER_TURN = 0.4
TARGET_RSS_MB = 150.0
TARGET_IDLE_SESSIONS = 10_000


class BenchError(Exception):
    """The benchmark cannot go on (the gateway did not start, a connection is broken...)."""


# --- a minimal HTTP/1.1 keep-alive client -------------------------------------------------


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server will close, from a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise BenchError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length = -1
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length < 0:
        raise BenchError(f"response without Content-Length (status {status})")
    return status, length, close


class Connection:
    """One keep-alive connection; it reconnects after an error or a ``Connection: close``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host_header = f"Host: {HOST}:{port}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(NET_TIMEOUT_S):
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self.reader, self.writer

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(NET_TIMEOUT_S):
                    await writer.wait_closed()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and read its whole response: (status, body)."""
        if self.reader is None or self.writer is None:
            reader, writer = await self.connect()
        else:
            reader, writer = self.reader, self.writer
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.host_header
        if body is None:
            data = head + b"\r\n"
        else:
            data = (
                head
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        try:
            async with asyncio.timeout(NET_TIMEOUT_S):
                writer.write(data)
                await writer.drain()
                status, length, close = parse_head(await reader.readuntil(b"\r\n\r\n"))
                payload = await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, payload


def send_body(session_key: str, message: str) -> bytes:
    return json.dumps(
        {"sessionKey": session_key, "message": message}, separators=(",", ":")
    ).encode()


def reply_ok(status: int, payload: bytes, message: str) -> bool:
    """Whether a ``/chat.send`` response is the echo of ``message``."""
    if status != 200:
        return False
    try:
        data = json.loads(payload)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("reply") == "echo: " + message


@dataclass
class Tally:
    """Turns done and failed; failures are described (a few of them) for the report."""

    ok: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.examples) < 5:
            self.examples.append(what[:300])


async def turn(conn: Connection, session_key: str, message: str, tally: Tally) -> bool:
    """One checked ``/chat.send``; a failure is counted, not raised."""
    try:
        status, payload = await conn.request("POST", "/chat.send", send_body(session_key, message))
    except (
        OSError,
        TimeoutError,
        EOFError,
        asyncio.LimitOverrunError,
        BenchError,
        ValueError,
    ) as exc:
        tally.fail(f"{session_key}: {type(exc).__name__}: {exc}")
        return False
    if not reply_ok(status, payload, message):
        tally.fail(f"{session_key}: HTTP {status}: {payload[:200]!r}")
        return False
    tally.ok += 1
    return True


# --- figures ------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Latency figures in milliseconds (nearest-rank percentiles)."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> LatencyStats:
        if not samples_ns:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan)
        ordered = sorted(samples_ns)
        n = len(ordered)

        def rank(q: float) -> float:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1e6

        return cls(
            n=n,
            mean_ms=sum(ordered) / n / 1e6,
            p50_ms=rank(0.50),
            p90_ms=rank(0.90),
            p99_ms=rank(0.99),
            p99_9_ms=rank(0.999),
            max_ms=ordered[-1] / 1e6,
        )

    def line(self) -> str:
        return (
            f"p50 {self.p50_ms:.3f} ms  p90 {self.p90_ms:.3f} ms  p99 {self.p99_ms:.3f} ms"
            f"  p99.9 {self.p99_9_ms:.3f} ms"
            f"  mean {self.mean_ms:.3f} ms  max {self.max_ms:.3f} ms  (n={self.n})"
        )


@dataclass
class LatencyResult:
    calls: int
    latency: LatencyStats
    errors: int
    error_examples: list[str]


@dataclass
class ThroughputResult:
    clients: int
    sessions: int
    duration_s: float
    turns: int
    turns_per_s: float
    latency: LatencyStats
    client_cpu_pct: float
    gateway_cpu_pct: float
    gateway_cpu_ms_per_turn: float
    """The gateway's CPU time over the whole load (warm-up included) / the turns it served."""
    errors: int
    error_examples: list[str]


@dataclass
class RssResult:
    idle_sessions: int
    sessions_in_store: int | None
    rss_start_mb: float
    rss_before_mb: float
    rss_after_mb: float
    setup_s: float
    drained: bool
    errors: int
    error_examples: list[str]


def read_rss_mb(pid: int) -> float:
    """VmRSS of process ``pid`` in MB (MiB), from /proc/PID/status; NaN if unavailable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    return float("nan")


def read_cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` in seconds, from /proc/PID/stat; NaN if none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        fields = text.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_info() -> dict[str, str | int]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        nproc = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "nproc": nproc,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu_model,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# --- the gateway process ------------------------------------------------------------------


def safe_store(url: str) -> str:
    """The store URL without a password, for the report."""
    return re.sub(r"(://[^:/@]*:)[^@/]+@", r"\1***@", url)


def gateway_command(state_dir: Path) -> list[str]:
    """``turngate gateway ...``, from the same environment as this interpreter if possible."""
    sibling = Path(sys.executable).parent / "turngate"
    exe = str(sibling) if sibling.exists() else shutil.which("turngate")
    if exe is None:
        raise BenchError("turngate: command not found (run `make bench`, or install the package)")
    return [
        exe,
        "gateway",
        "--host",
        HOST,
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--echo-latency-ms",
        "0",
        "--log-level",
        "warning",
    ]


async def wait_listening(proc: asyncio.subprocess.Process) -> int:
    """Read the gateway's stdout until its ``listening on`` line; return the port."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            for _ in range(STDOUT_LINES_MAX):
                raw = await proc.stdout.readline()
                if not raw:
                    code = await proc.wait()
                    raise BenchError(f"gateway exited with code {code} before listening")
                line = raw.decode(errors="replace").strip()
                match = LISTENING.match(line)
                if match:
                    return int(match.group(1))
                print(f"[gateway] {line}", file=sys.stderr)
    except TimeoutError:
        raise BenchError(f"gateway: not listening after {START_TIMEOUT_S:.0f} s") from None
    raise BenchError("gateway: no `listening on` line in its output")


async def drain_stdout(proc: asyncio.subprocess.Process) -> None:
    """Pass on what the gateway prints after it started, so that its pipe never fills."""
    assert proc.stdout is not None
    for _ in range(STDOUT_LINES_MAX):
        raw = await proc.stdout.readline()
        if not raw:
            return
        print(f"[gateway] {raw.decode(errors='replace').rstrip()}", file=sys.stderr)


async def stop_gateway(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, then SIGKILL after ``STOP_GRACE_S``; the exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                return await proc.wait()
        except TimeoutError:
            print(f"gateway: still running {STOP_GRACE_S:.0f} s after SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return await proc.wait()


async def health(port: int) -> dict[str, Any]:
    conn = Connection(port)
    try:
        status, payload = await conn.request("GET", "/health")
    finally:
        await conn.close()
    if status != 200:
        raise BenchError(f"/health: HTTP {status}: {payload[:200]!r}")
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise BenchError(f"/health: not a JSON object: {payload[:200]!r}")
    return data


# --- the three measurements ---------------------------------------------------------------


async def wait_ready(port: int, deadline: float) -> None:
    """Poll /health until the gateway answers (every 50 ms, until ``deadline``).

    The gateway may print its ``listening on`` line as soon as its socket is bound, before the
    server accepts connections (and before its lifespan started the engine).
    """
    problem = "no answer"
    for _ in range(int(START_TIMEOUT_S / HEALTH_POLL_S) + 1):
        try:
            await health(port)
        except (OSError, EOFError, TimeoutError, BenchError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            return
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(HEALTH_POLL_S)
    raise BenchError(
        f"gateway: /health not answering {START_TIMEOUT_S:.0f} s after start ({problem})"
    )


async def measure_latency(port: int, calls: int) -> LatencyResult:
    """Sequential turns on one keep-alive connection to one session."""
    conn = Connection(port)
    key = "agent:main:bench-latency"
    tally = Tally()
    samples: list[int] = []
    clock = time.perf_counter_ns
    try:
        await conn.connect()
        for i in range(WARMUP_CALLS):
            await turn(conn, key, f"warm-{i}", tally)
        warm_errors = tally.errors
        for i in range(calls):
            start = clock()
            ok = await turn(conn, key, f"call-{i}", tally)
            if ok:
                samples.append(clock() - start)
    finally:
        await conn.close()
    if warm_errors:
        tally.examples.insert(0, f"({warm_errors} of the errors during warm-up)")
    return LatencyResult(calls, LatencyStats.of(samples), tally.errors, tally.examples)


async def measure_throughput(
    port: int, pid: int, clients: int, sessions: int, duration_s: float
) -> ThroughputResult:
    """``clients`` closed-loop clients over disjoint session sets, for a fixed time."""
    conns = [Connection(port) for _ in range(clients)]
    tally = Tally()
    samples: list[int] = []
    counted = 0
    clock = time.perf_counter_ns
    try:
        await asyncio.gather(*(conn.connect() for conn in conns))
        begin = clock()
        window_start = begin + int(WARMUP_S * 1e9)
        window_end = window_start + int(duration_s * 1e9)

        async def client(index: int, conn: Connection) -> None:
            nonlocal counted
            keys = [f"agent:main:load-{s}" for s in range(index, sessions, clients)]
            n = 0
            while True:
                start = clock()
                if start >= window_end:
                    return
                ok = await turn(conn, keys[n % len(keys)], f"c{index}-{n}", tally)
                end = clock()
                n += 1
                if ok and window_start <= start and end <= window_end:
                    counted += 1
                    samples.append(end - start)

        wall0, cpu0, gw0 = time.perf_counter(), time.process_time(), read_cpu_s(pid)
        await asyncio.gather(*(client(i, conn) for i, conn in enumerate(conns)))
        wall = time.perf_counter() - wall0
        client_cpu = (time.process_time() - cpu0) / wall * 100
        gateway_cpu_s = read_cpu_s(pid) - gw0
        gateway_cpu = gateway_cpu_s / wall * 100
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))
    return ThroughputResult(
        clients=clients,
        sessions=sessions,
        duration_s=duration_s,
        turns=counted,
        turns_per_s=counted / duration_s,
        latency=LatencyStats.of(samples),
        client_cpu_pct=client_cpu,
        gateway_cpu_pct=gateway_cpu,
        gateway_cpu_ms_per_turn=gateway_cpu_s * 1000 / max(1, tally.ok),
        errors=tally.errors,
        error_examples=tally.examples,
    )


async def wait_drained(port: int) -> tuple[bool, dict[str, Any]]:
    """Poll /health until no turn runs or waits (every 50 ms, at most 60 s)."""
    data: dict[str, Any] = {}
    for _ in range(int(HEALTH_WAIT_MAX_S / HEALTH_POLL_S)):
        data = await health(port)
        if data.get("runningTurns") == 0 and data.get("queuedTurns") == 0:
            return True, data
        await asyncio.sleep(HEALTH_POLL_S)
    return False, data


async def measure_rss(
    port: int, pid: int, idle_sessions: int, clients: int, rss_start_mb: float
) -> RssResult:
    """RSS after one turn to each of ``idle_sessions`` new sessions, once all turns ended."""
    rss_before = read_rss_mb(pid)
    tally = Tally()
    next_index = 0
    began = time.perf_counter()

    async def worker() -> None:
        nonlocal next_index
        conn = Connection(port)
        try:
            for _ in range(idle_sessions):
                if next_index >= idle_sessions:
                    return
                i = next_index
                next_index += 1
                await turn(conn, f"agent:main:idle-{i}", f"hello {i}", tally)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(max(1, min(clients, idle_sessions)))))
    drained, data = await wait_drained(port)
    setup_s = time.perf_counter() - began
    sessions = data.get("sessions")
    return RssResult(
        idle_sessions=idle_sessions,
        sessions_in_store=sessions if isinstance(sessions, int) else None,
        rss_start_mb=rss_start_mb,
        rss_before_mb=rss_before,
        rss_after_mb=read_rss_mb(pid),
        setup_s=setup_s,
        drained=drained,
        errors=tally.errors,
        error_examples=tally.examples,
    )


# --- report -------------------------------------------------------------------------------


def print_errors(errors: int, examples: list[str]) -> None:
    print(f"  errors: {errors}")
    for example in examples:
        print(f"    e.g. {example}")


def verdict(met: bool | None) -> str:
    return "SKIPPED" if met is None else "MET" if met else "NOT MET"


def summary(
    lat: LatencyResult, tput: ThroughputResult, rss: RssResult | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "figure": "p50 latency, 1 connection",
            "value": f"{lat.latency.p50_ms:.3f} ms",
            "target": f"<= {TARGET_P50_MS:g} ms",
            "met": lat.latency.p50_ms <= TARGET_P50_MS,
        },
        {
            "figure": "p99 latency, 1 connection",
            "value": f"{lat.latency.p99_ms:.3f} ms",
            "target": f"<= {TARGET_P99_MS:g} ms",
            "met": lat.latency.p99_ms <= TARGET_P99_MS,
        },
        {
            "figure": "p99.9 latency, 1 connection",
            "value": f"{lat.latency.p99_9_ms:.3f} ms",
            "target": f"<= {TARGET_P999_MS:g} ms",
            "met": lat.latency.p99_9_ms <= TARGET_P999_MS,
        },
        {
            "figure": "gateway CPU per turn, under load",
            "value": f"{tput.gateway_cpu_ms_per_turn:.3f} ms",
            "target": f"<= {TARGET_CPU_MS_PER_TURN:g} ms",
            "met": tput.gateway_cpu_ms_per_turn <= TARGET_CPU_MS_PER_TURN,
        },
        {
            "figure": f"throughput, {tput.clients} clients",
            "value": f"{tput.turns_per_s:.0f} turns/s",
            "target": f">= {TARGET_TURNS_PER_S:.0f} turns/s",
            "met": tput.turns_per_s >= TARGET_TURNS_PER_S,
        },
    ]
    if rss is None:
        rows.append(
            {
                "figure": f"RSS, {TARGET_IDLE_SESSIONS} idle sessions",
                "value": "-",
                "target": f"<= {TARGET_RSS_MB:g} MB",
                "met": None,
            }
        )
    else:
        note = "" if rss.idle_sessions == TARGET_IDLE_SESSIONS else " (target is for 10000)"
        rows.append(
            {
                "figure": f"RSS, {rss.idle_sessions} idle sessions{note}",
                "value": f"{rss.rss_after_mb:.1f} MB",
                "target": f"<= {TARGET_RSS_MB:g} MB",
                "met": rss.rss_after_mb <= TARGET_RSS_MB,
            }
        )
    return rows


def print_summary(rows: list[dict[str, Any]], machine: dict[str, str | int]) -> None:
    width = max(len(str(row["figure"])) for row in rows)
    print()
    print(
        f"== summary ({machine['date']}; {machine['nproc']} CPUs, {machine['cpu']};"
        f" {machine['python']})"
    )
    print(f"  {'figure':<{width}}  {'measured':>16}  {'goal':>18}  verdict")
    for row in rows:
        print(
            f"  {row['figure']:<{width}}  {row['value']:>16}  {row['target']:>18}"
            f"  {verdict(row['met'])}"
        )


# --- main ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace, state_dir: Path, machine: dict[str, str | int]) -> None:
    started = time.monotonic()
    env = dict(os.environ)
    if args.store is not None:
        env["TURNGATE_STORE"] = args.store
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
        rss_start = read_rss_mb(proc.pid)
        print(f"gateway: pid {proc.pid}, http://{HOST}:{port}, state dir {state_dir}")
        print(f"store: {'SQLite (state dir)' if args.store is None else safe_store(args.store)}")
        print(f"gateway RSS at start: {rss_start:.1f} MB")
        gc.collect()
        gc.freeze()

        print()
        print(f"== a. single connection latency: {args.calls} calls after {WARMUP_CALLS} warm-up")
        lat = await measure_latency(port, args.calls)
        print(f"  {lat.latency.line()}")
        print_errors(lat.errors, lat.error_examples)

        print()
        print(
            f"== b. throughput: {args.clients} clients, {args.sessions} sessions,"
            f" {args.duration_s:g} s after {WARMUP_S:g} s warm-up"
        )
        tput = await measure_throughput(
            port, proc.pid, args.clients, args.sessions, args.duration_s
        )
        print(f"  {tput.turns_per_s:.0f} turns/s ({tput.turns} turns)")
        print(f"  latency under load: {tput.latency.line()}")
        print(
            f"  CPU (100% = one core): gateway {tput.gateway_cpu_pct:.0f}%"
            f" ({tput.gateway_cpu_ms_per_turn:.3f} ms a turn),"
            f" this client {tput.client_cpu_pct:.0f}%"
        )
        print_errors(tput.errors, tput.error_examples)

        rss: RssResult | None = None
        print()
        if args.skip_rss:
            print("== c. RSS with idle sessions: skipped (--skip-rss)")
        else:
            print(f"== c. RSS with {args.idle_sessions} idle sessions")
            rss = await measure_rss(port, proc.pid, args.idle_sessions, args.clients, rss_start)
            print(f"  RSS at start: {rss.rss_start_mb:.1f} MB")
            print(f"  RSS before creating the idle sessions: {rss.rss_before_mb:.1f} MB")
            print(
                f"  RSS with {rss.idle_sessions} idle sessions: {rss.rss_after_mb:.1f} MB"
                f"  (sessions in store: {rss.sessions_in_store}, set up in {rss.setup_s:.1f} s)"
            )
            if not rss.drained:
                print(f"  warning: turns still running or queued after {HEALTH_WAIT_MAX_S:g} s")
            print_errors(rss.errors, rss.error_examples)

        rows = summary(lat, tput, rss)
        print_summary(rows, machine)
        if args.json:
            report = {
                "machine": machine,
                "gateway": {"pid": proc.pid, "rss_start_mb": rss_start},
                "latency": asdict(lat),
                "throughput": asdict(tput),
                "rss": None if rss is None else asdict(rss),
                "targets": rows,
            }
            print()
            print(json.dumps(report, indent=2))
    finally:
        code = await stop_gateway(proc)
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        how = " (killed by SIGTERM, as uvicorn re-raises it)" if code == -signal.SIGTERM else ""
        print(f"gateway stopped: exit code {code}{how}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark a turngate gateway over HTTP: latency, throughput, RSS."
    )
    parser.add_argument("--calls", type=positive_int, default=2000, help="sequential calls (a)")
    parser.add_argument("--duration-s", type=positive_float, default=10.0, help="load time (b)")
    parser.add_argument("--clients", type=positive_int, default=50, help="concurrent clients")
    parser.add_argument("--sessions", type=positive_int, default=500, help="sessions in (b)")
    parser.add_argument(
        "--idle-sessions", type=positive_int, default=TARGET_IDLE_SESSIONS, help="sessions in (c)"
    )
    parser.add_argument("--skip-rss", action="store_true", help="skip the RSS measurement (c)")
    parser.add_argument("--json", action="store_true", help="also print all figures as JSON")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the gateway's store: a postgresql:// URL (an empty database); default SQLite",
    )
    args = parser.parse_args(argv)
    if args.sessions < args.clients:
        parser.error("--sessions must be >= --clients (each client needs its own sessions)")
    return args


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def print_banner(
    title: str,
    machine: dict[str, str | int],
    factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> None:
    """The benchmark's name, then the date, the machine and the Python it runs on."""
    print(title)
    print(f"  date:     {machine['date']}")
    print(f"  machine:  {machine['platform']}, {machine['nproc']} CPUs ({machine['cpu']})")
    print(f"  python:   {machine['python']}, client loop: {'uvloop' if factory else 'asyncio'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    factory = loop_factory()
    print_banner("turngate HTTP turn benchmark", machine, factory)
    state_dir = Path(tempfile.mkdtemp(prefix="turngate-bench-"))
    try:
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
