"""Telegram channel benchmark: message in -> reply delivered, through a real gateway process.

For each echo latency in ``--echo-latency-ms`` it starts the fake Telegram Bot API of the tests
(``tests/channels/fake_telegram.py``, uvicorn in this process's event loop) and a
``turngate gateway`` subprocess (fresh temporary state directory, echo model with that latency)
with one ``[[channels]]`` telegram entry pointed at the fake (``allow = ["*"]``,
``poll_timeout = "1s"``), waits for its first ``getUpdates``, then runs two phases, each over
``--peers`` private chats of their own:

a. closed loop: ``--messages`` messages; every peer sends its first message at once, and its
   next one as soon as the fake received the reply to the previous one.
b. paced (open loop): ``--messages`` messages queued at ``--paced-per-s`` a second, round-robin
   over the peers, whatever the replies do. The default rate is below the bot's send rate
   limit, so this phase shows the pipeline's own latency, not the limiter's queue.

Latency is from the moment the fake queued the update (the gateway's held ``getUpdates`` is
answered then) to the moment the fake received the ``sendMessage`` with the reply, both on
this loop's clock; p50, p90, p99 and max in ms (nearest rank). Throughput is replies
delivered per second from the first message queued to the last reply received. Gateway CPU
is utime + stime of the gateway process (/proc/PID/stat) from a phase's start until the
gateway is idle after it, per message; ``polls/msg`` and ``typing/msg`` count the
``getUpdates`` and ``sendChatAction`` calls the fake received, per message.

Every reply is checked as it arrives: each message is answered exactly once, with its echo,
in its own chat, in order per peer. The counts are printed, and any failure (a reply missing
after ``STALL_S`` without any reply, a duplicate, one out of order, an unexpected message)
makes the script exit with code 1. Nothing is asserted on time: it is a benchmark.

The gateway's outbox sends at most the channel's ``send_rate`` (default 25) messages a second
per bot, in bursts of as many, as Telegram asks of bots: at that rate the closed loop's
throughput is the limit, and its latency mostly the limiter's queue (about peers / rate
seconds). ``--send-rate 10000`` takes the limit away, to measure the gateway itself.

The event loop is plain asyncio, not uvloop: the fake stamps events with ``loop.time()``, which
uvloop only keeps to the millisecond.

Run it from the project root::

    python bench/channels_telegram.py            # or: make bench-channels
    python bench/channels_telegram.py --messages 200 --echo-latency-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The fake Bot API lives with the tests (one fake, not two): make the project root importable
# when this file runs as a script (then only bench/ is on sys.path, for http_turns).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.channels.fake_telegram import TOKEN, FakeTelegram, Sent, running  # noqa: E402

from http_turns import (  # noqa: E402
    HOST,
    BenchError,
    LatencyStats,
    Tally,
    drain_stdout,
    machine_info,
    positive_float,
    positive_int,
    read_cpu_s,
    stop_gateway,
    wait_listening,
)

TOKEN_ENV = "TG_BENCH_TOKEN"
CLOSED_CHAT_BASE = 100_000
PACED_CHAT_BASE = 200_000
FIRST_POLL_S = 30.0
"""Bound on the wait for the channel's first ``getUpdates`` after the gateway listens."""
STALL_S = 60.0
"""A phase gives up when no reply at all arrived for this long (replies are then missing)."""
SETTLE_MAX_S = 60.0
SETTLE_POLL_S = 0.05
HEALTH_TIMEOUT_S = 10.0
REPLY = re.compile(r"^echo: peer (\d+) message (\d+)$")


# --- one phase: messages out, replies checked as they come ---------------------------------


@dataclass
class Phase:
    """Messages of ``peers`` chats and the replies to them; what a run of them showed."""

    fake: FakeTelegram
    name: str
    chat_base: int
    peers: int
    messages: int
    closed_loop: bool
    sent_count: list[int] = field(init=False)
    """Per peer: messages queued so far."""
    answered: list[int] = field(init=False)
    """Per peer: replies received so far, in order (the next expected is this index)."""
    queued_at: dict[tuple[int, int], float] = field(default_factory=dict)
    samples_ns: list[int] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    cursor: int = 0
    """How much of ``fake.sent`` this phase has looked at."""
    first_queued: float = float("nan")
    last_delivered: float = float("nan")

    def __post_init__(self) -> None:
        self.sent_count = [0] * self.peers
        self.answered = [0] * self.peers
        self.cursor = len(self.fake.sent)

    def quota(self, peer: int) -> int:
        """Messages peer ``peer`` sends in all (the first ``messages % peers`` send one more)."""
        return self.messages // self.peers + (1 if peer < self.messages % self.peers else 0)

    def queue(self, peer: int, now: float) -> None:
        """Peer ``peer`` sends its next message (queued in the fake: a held poll answers)."""
        index = self.sent_count[peer]
        self.sent_count[peer] += 1
        if not self.queued_at:
            self.first_queued = now
        self.queued_at[(peer, index)] = now
        self.fake.message(self.chat_base + peer, f"peer {peer} message {index}")

    @property
    def delivered(self) -> int:
        """Messages answered (once each)."""
        return self.tally.ok

    @property
    def problems(self) -> int:
        return self.tally.errors

    def check_new_sends(self) -> None:
        """Check every ``sendMessage`` the fake took since the last call."""
        fresh, self.cursor = self.fake.sent[self.cursor :], len(self.fake.sent)
        for sent in fresh:
            self.check(sent)

    def check(self, sent: Sent) -> None:
        text = sent.text
        if sent.parse_mode == "HTML":  # what the user sees
            text = html.unescape(re.sub(r"<[^>]*>", "", text))
        match = REPLY.match(text)
        peer = int(match.group(1)) if match else -1
        if (
            match is None
            or not 0 <= peer < self.peers
            or sent.chat_id != str(self.chat_base + peer)
        ):
            self.unexpected += 1
            self.tally.fail(f"unexpected message to chat {sent.chat_id}: {sent.text[:100]!r}")
            return
        index = int(match.group(2))
        expected = self.answered[peer]
        if index < expected or index >= self.sent_count[peer]:
            self.duplicates += 1
            self.tally.fail(f"peer {peer}: reply to message {index} again, or to one not sent")
            return
        if index > expected:
            self.out_of_order += 1
            self.tally.fail(f"peer {peer}: reply to message {index} before message {expected}")
        self.answered[peer] = index + 1
        self.tally.ok += 1
        self.samples_ns.append(round((sent.at - self.queued_at[(peer, index)]) * 1e9))
        self.last_delivered = sent.at
        if self.closed_loop and self.sent_count[peer] < self.quota(peer):
            self.queue(peer, asyncio.get_running_loop().time())

    async def watch(self) -> None:
        """Check replies as they come, until every message was answered or none came for
        ``STALL_S``; a closed loop's next messages are queued from here, at once."""
        fake = self.fake
        for _ in range(2 * self.messages + 1):  # each turn takes one reply at least
            if self.delivered >= self.messages:
                return
            try:
                await fake.signal.wait_until(lambda: len(fake.sent) > self.cursor, STALL_S)
            except TimeoutError:
                missing = self.messages - self.delivered
                self.tally.fail(f"no reply for {STALL_S:g} s; {missing} replies missing")
                return
            self.check_new_sends()

    async def pace(self, per_s: float) -> None:
        """Queue every message at ``per_s`` a second, round-robin over the peers."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(self.messages):
            delay = start + k / per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.queue(k % self.peers, loop.time())

    def report_lines(self) -> list[str]:
        missing = self.messages - self.delivered
        verdict = "OK" if self.problems == 0 and missing == 0 else "FAILED"
        lines = [
            f"correctness: {self.delivered}/{self.messages} answered, {missing} missing,"
            f" {self.duplicates} duplicate, {self.out_of_order} out of order,"
            f" {self.unexpected} unexpected: {verdict}"
        ]
        lines += [f"  e.g. {example}" for example in self.tally.examples]
        return lines


@dataclass
class PhaseResult:
    """The figures of one phase at one echo latency."""

    echo_latency_ms: int
    mode: str
    messages: int
    latency: LatencyStats
    replies_per_s: float
    gateway_cpu_ms_per_msg: float
    polls_per_msg: float
    typing_per_msg: float
    ok: bool


# --- the gateway ---------------------------------------------------------------------------


def write_config(path: Path, api_url: str, send_rate: float) -> Path:
    path.write_text(
        f"""
[[channels]]
id = "tg"
type = "telegram"
token_env = "{TOKEN_ENV}"
url = "{api_url}"
allow = ["*"]
poll_timeout = "1s"
send_rate = {send_rate}
""",
        encoding="utf-8",
    )
    return path


def gateway_command(state_dir: Path, config: Path, echo_latency_ms: int) -> list[str]:
    """``turngate gateway ...`` with the telegram channel, from this interpreter's venv."""
    sibling = Path(sys.executable).parent / "turngate"
    exe = str(sibling) if sibling.exists() else shutil.which("turngate")
    if exe is None:
        raise BenchError("turngate: command not found (run `make bench-channels`)")
    return [
        exe,
        "gateway",
        "--host",
        HOST,
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--config",
        str(config),
        "--echo-latency-ms",
        str(echo_latency_ms),
        "--log-level",
        "warning",
    ]


def gateway_env() -> dict[str, str]:
    """This environment without any ``TURNGATE_*`` (they would change the gateway), plus the
    fake's bot token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNGATE_")}
    env[TOKEN_ENV] = TOKEN
    return env


def health(port: int) -> dict[str, Any]:
    url = f"http://{HOST}:{port}/health"
    with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as answer:
        body = json.loads(answer.read())
    if not isinstance(body, dict):
        raise BenchError(f"/health: not a JSON object: {body!r:.200}")
    return body


def idle(body: dict[str, Any]) -> bool:
    deliveries = body.get("deliveries") or {}
    return (
        body.get("runningTurns") == 0
        and body.get("queuedTurns") == 0
        and deliveries.get("pending", 0) == 0
    )


async def settle(port: int) -> bool:
    """Until no turn runs or waits and the outbox holds nothing pending (at most 60 s)."""
    for _ in range(int(SETTLE_MAX_S / SETTLE_POLL_S)):
        if idle(await asyncio.to_thread(health, port)):
            return True
        await asyncio.sleep(SETTLE_POLL_S)
    return False


# --- a run at one echo latency -------------------------------------------------------------


async def run_phase(
    phase: Phase, port: int, pid: int, echo_latency_ms: int, paced_per_s: float
) -> PhaseResult:
    fake = phase.fake
    polls0, typing0, cpu0 = len(fake.polls), len(fake.actions), read_cpu_s(pid)
    async with asyncio.TaskGroup() as group:
        group.create_task(phase.watch())
        if phase.closed_loop:
            now = asyncio.get_running_loop().time()
            for peer in range(phase.peers):
                if phase.quota(peer):
                    phase.queue(peer, now)
        else:
            group.create_task(phase.pace(paced_per_s))
    settled = await settle(port)
    phase.check_new_sends()  # a late duplicate counts too
    if not settled:
        phase.tally.fail(f"gateway not idle {SETTLE_MAX_S:g} s after the phase")
    cpu_s = read_cpu_s(pid) - cpu0
    wall_s = phase.last_delivered - phase.first_queued
    delivered = phase.delivered
    for line in phase.report_lines():
        print(f"  {line}")
    return PhaseResult(
        echo_latency_ms=echo_latency_ms,
        mode=phase.name,
        messages=phase.messages,
        latency=LatencyStats.of(phase.samples_ns),
        replies_per_s=delivered / wall_s if wall_s > 0 else float("nan"),
        gateway_cpu_ms_per_msg=cpu_s / max(1, delivered) * 1e3,
        polls_per_msg=(len(fake.polls) - polls0) / max(1, delivered),
        typing_per_msg=(len(fake.actions) - typing0) / max(1, delivered),
        ok=phase.problems == 0 and delivered == phase.messages,
    )


async def run_at(args: argparse.Namespace, echo_latency_ms: int) -> list[PhaseResult]:
    """Both phases against one fresh fake Bot API and one fresh gateway."""
    fake = FakeTelegram()
    results: list[PhaseResult] = []
    state_dir = Path(tempfile.mkdtemp(prefix="turngate-bench-tg-"))
    try:
        async with running(fake) as api_url:
            config = write_config(state_dir / "turngate.toml", api_url, args.send_rate)
            proc = await asyncio.create_subprocess_exec(
                *gateway_command(state_dir / "state", config, echo_latency_ms),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=gateway_env(),
            )
            drain: asyncio.Task[None] | None = None
            try:
                port = await wait_listening(proc)
                drain = asyncio.create_task(drain_stdout(proc))
                try:
                    await fake.signal.wait_until(lambda: bool(fake.polls), FIRST_POLL_S)
                except TimeoutError:
                    raise BenchError(f"no getUpdates {FIRST_POLL_S:g} s after start") from None
                print(f"gateway: pid {proc.pid}, http://{HOST}:{port}, fake Bot API {api_url}")
                for closed in (True, False):
                    phase = Phase(
                        fake,
                        "closed loop" if closed else f"paced {args.paced_per_s:g}/s",
                        CLOSED_CHAT_BASE if closed else PACED_CHAT_BASE,
                        args.peers,
                        args.messages,
                        closed_loop=closed,
                    )
                    print(f"-- {phase.name}: {args.messages} messages over {args.peers} peers")
                    result = await run_phase(
                        phase, port, proc.pid, echo_latency_ms, args.paced_per_s
                    )
                    print(f"  {result.latency.line()}")
                    results.append(result)
            finally:
                code = await stop_gateway(proc)
                if drain is not None:
                    drain.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await drain
                print(f"gateway stopped: exit code {code}")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return results


# --- report and main -----------------------------------------------------------------------


def print_table(results: list[PhaseResult]) -> None:
    print()
    print("== summary (latency: message queued by the fake -> sendMessage received, ms)")
    print(
        f"  {'echo':>6}  {'mode':<13} {'msgs':>5}  {'p50':>8} {'p90':>8} {'p99':>8}"
        f" {'max':>8}  {'replies/s':>9}  {'gw CPU ms/msg':>13}  {'polls/msg':>9}"
        f"  {'typing/msg':>10}  check"
    )
    for r in results:
        lat = r.latency
        print(
            f"  {r.echo_latency_ms:>4}ms  {r.mode:<13} {r.messages:>5}  {lat.p50_ms:>8.1f}"
            f" {lat.p90_ms:>8.1f} {lat.p99_ms:>8.1f} {lat.max_ms:>8.1f}  {r.replies_per_s:>9.1f}"
            f"  {r.gateway_cpu_ms_per_msg:>13.2f}  {r.polls_per_msg:>9.2f}"
            f"  {r.typing_per_msg:>10.2f}"
            f"  {'OK' if r.ok else 'FAILED'}"
        )


def latencies_ms(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"a comma-separated list of ms >= 0, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the Telegram channel of a turngate gateway against a fake Bot API."
    )
    parser.add_argument(
        "--echo-latency-ms", type=latencies_ms, default=[0, 50], help='e.g. "0,50" (default)'
    )
    parser.add_argument("--messages", type=positive_int, default=1000, help="per phase")
    parser.add_argument("--peers", type=positive_int, default=50, help="private chats")
    parser.add_argument(
        "--paced-per-s", type=positive_float, default=20.0, help="rate of the paced phase"
    )
    parser.add_argument(
        "--send-rate",
        type=positive_float,
        default=25.0,
        help="the channel's send_rate, messages/s per bot (default 25, the gateway's default)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    print("turngate Telegram channel benchmark")
    print(f"  date:     {machine['date']}")
    print(f"  machine:  {machine['platform']}, {machine['nproc']} CPUs ({machine['cpu']})")
    print(f"  python:   {machine['python']}, loop: asyncio")
    with contextlib.suppress(OSError):
        print(f"  load:     {Path('/proc/loadavg').read_text(encoding='ascii').strip()}")
    print(f"  outbox:   at most {args.send_rate:g} messages/s per bot (send_rate)")
    results: list[PhaseResult] = []
    try:
        for echo_ms in args.echo_latency_ms:
            print()
            print(f"== echo latency {echo_ms} ms")
            results += asyncio.run(run_at(args, echo_ms))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(results)
    if not all(r.ok for r in results):
        print("some messages were not answered exactly once, in order: the run is broken")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
