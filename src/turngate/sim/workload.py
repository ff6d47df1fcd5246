"""Simulated clients and the crash driver, all drawing from the run's one Random.

A client is a person behind an HTTP connection: it sends its messages to one session, each
after the previous answer and a think time (often zero: a send in the same tick the reply
arrives). It sometimes sends a burst, aborts, or stops waiting mid-turn (an HTTP disconnect)
and later retries with the same idempotency key, as a real client would; when the gateway is
down it retries until it is back. Every wait has a deadline.

Each message goes through one of the seed's surfaces: the engine directly, or one of the
gateway's edges (``sim/surfaces.py``: HTTP, WebSocket, OpenAI). In a seed with several gateway
processes, each request goes to one of them, a retry perhaps to another (``sim/cluster.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from turngate.core.keys import SessionKey, parse_session_key
from turngate.core.queue import QueueMode
from turngate.core.turn import Outcome
from turngate.errors import StorageUnavailableError, StoreError, UnavailableError
from turngate.runtime.engine import Engine, SubmitRequest
from turngate.sim.asgi import Wire
from turngate.sim.surfaces import Answer, EdgeClient, Surface
from turngate.sim.world import SimParams

RETRY_BACKOFF_S = 0.5
RETRIES_MAX = 400
WAIT_MARGIN_S = 1.0


def _never(at: float, slack_s: float) -> bool:
    return False


@dataclass(slots=True)
class Gateway:
    """The engine the clients talk to now, and the network to its app; None while it is
    down after a crash."""

    engine: Engine | None = None
    wire: Wire | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)
    excuses: Callable[[float, float], bool] = _never
    """Whether a storage outage may explain an outcome late at a time (then the client,
    like a real one told ``pending``, asks again instead of giving up)."""
    wait_margin_s: float = WAIT_MARGIN_S
    """How long past a turn's deadline (and abort grace) a client waits for its outcome."""

    def pick(self) -> Engine | None:
        """The engine a request goes to (None while the gateway is down)."""
        return self.engine

    async def wait_up(self) -> None:
        """Wait (bounded) until the gateway is up, then a client's retry pause."""
        async with asyncio.timeout(3600.0):
            await self.up.wait()
        await asyncio.sleep(RETRY_BACKOFF_S)


@dataclass(frozen=True, slots=True)
class ClientTurn:
    """One message a client sends."""

    turn_id: str
    session_key: str
    message: str
    mode: QueueMode
    surface: Surface = Surface.ENGINE


@dataclass(slots=True)
class ClientRecord:
    """What the clients saw: acknowledgements, outcomes, and waits that ran out."""

    acked: dict[str, ClientTurn] = field(default_factory=dict)
    outcomes: dict[str, Outcome | Answer] = field(default_factory=dict)
    missed_deadlines: list[tuple[str, float]] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    extra_answers: list[tuple[str, float, str]] = field(default_factory=list)
    """Terminal answers beyond the first for one run id on one connection: (run id, time,
    what)."""


async def client(
    rng: random.Random,
    params: SimParams,
    gateway: Gateway,
    key: SessionKey,
    name: str,
    record: ClientRecord,
) -> None:
    """One client's whole conversation."""
    loop = asyncio.get_running_loop()
    edges = params.surfaces != (Surface.ENGINE,)
    edge = EdgeClient(rng, params, gateway, name, record) if edges else None
    index = 0
    pending: list[asyncio.Task[None]] = []
    while index < params.turns_per_client:
        burst = rng.randint(2, 4) if rng.random() < 0.1 else 1
        batch = []
        for _ in range(min(burst, params.turns_per_client - index)):
            surface = rng.choice(params.surfaces) if edges else Surface.ENGINE
            # The OpenAI surface has no queue mode: its turns take the agent's (followup).
            openai = surface in (Surface.OPENAI, Surface.OPENAI_STREAM)
            mode = QueueMode.FOLLOWUP if openai else rng.choice(params.modes)
            message = f"{name}-m{index}"
            batch.append(ClientTurn(f"{name}-t{index}", str(key), message, mode, surface))
            index += 1
        tasks = [
            loop.create_task(
                _exchange(rng, params, gateway, t, record)
                if edge is None or t.surface is Surface.ENGINE
                else edge.exchange(t)
            )
            for t in batch
        ]
        if burst == 1 and rng.random() < 0.3:
            pending.extend(tasks)  # do not wait: the next message races this one
        else:
            await asyncio.gather(*tasks)
        if rng.random() < params.p_abort:
            await _abort(gateway, key, edge)
        if rng.random() >= params.p_same_tick and params.think_max_s > 0:
            await asyncio.sleep(rng.uniform(0.0, params.think_max_s))
    await asyncio.gather(*pending)
    if edge is not None:
        edge.close()


async def _abort(gateway: Gateway, key: SessionKey, edge: EdgeClient | None) -> None:
    """Abort what runs in the session: over HTTP for a client of the edges."""
    if edge is not None:
        await edge.abort(str(key))
    elif (engine := gateway.pick()) is not None:
        # Refused while its session waits for storage (503 storage_unavailable, as a real
        # client is told); the client lets it be.
        with contextlib.suppress(StorageUnavailableError, UnavailableError):
            await engine.abort(key)


async def _exchange(
    rng: random.Random, params: SimParams, gateway: Gateway, turn: ClientTurn, record: ClientRecord
) -> None:
    """Send one message until it is acknowledged, then wait for its outcome (retrying)."""
    key = parse_session_key(turn.session_key)
    loop = asyncio.get_running_loop()
    for _ in range(RETRIES_MAX):
        engine = gateway.pick()
        if engine is None:
            await gateway.wait_up()
            continue
        request = SubmitRequest(
            key, turn.message, turn_id=turn.turn_id, mode=turn.mode, timeout_s=params.turn_timeout_s
        )
        try:
            ticket = await engine.submit(request)
        except (UnavailableError, StoreError):
            await gateway.wait_up()
            continue
        record.acked.setdefault(turn.turn_id, turn)
        disconnect_after = (
            rng.uniform(0.0, params.latency_max_s + 1.0)
            if rng.random() < params.p_disconnect
            else None
        )
        deadline = ticket.deadline + gateway.wait_margin_s
        if disconnect_after is not None:
            deadline = min(deadline, loop.time() + disconnect_after)
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await asyncio.shield(ticket.outcome)
        except UnavailableError:
            await gateway.wait_up()
            continue
        except TimeoutError:
            if disconnect_after is None and not gateway.excuses(loop.time(), gateway.wait_margin_s):
                record.missed_deadlines.append((turn.turn_id, loop.time()))
                return
            await asyncio.sleep(rng.uniform(0.0, 2.0))  # the client comes back and retries
            continue
        record.outcomes[turn.turn_id] = outcome
        return
    record.gave_up.append(turn.turn_id)


def crash_times(rng: random.Random, params: SimParams) -> list[tuple[float, float]]:
    """When the gateway crashes during the safety phase, and for how long it stays down."""
    times = sorted(rng.uniform(0.0, params.safety_s) for _ in range(params.crashes))
    return [(at, rng.uniform(0.0, params.downtime_max_s)) for at in times]
