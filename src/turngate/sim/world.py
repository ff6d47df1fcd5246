"""The simulated world around the runtime: a schedule's parameters and a faulty model.

Everything random comes from the one ``random.Random`` of the run, drawn in the order the
program asks, so a seed replays exactly. Parameters are drawn per seed ("swarm testing"):
one seed has three sessions and a flaky fast model, the next has forty sessions, a slow model
and two crashes, so rare combinations come up without being designed in.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from turngate.core.queue import QueueMode
from turngate.errors import ErrorCode, ProviderError, ProviderRejectedError
from turngate.providers.base import ProviderRequest
from turngate.sim.disk import Outage, draw_outages

SIM_PREFIX = "sim: "


class Profile(enum.StrEnum):
    """Families of schedules."""

    FAST = "fast"
    """A fast model (0-300 ms), few faults: the field reports' race window."""
    SLOW = "slow"
    """A slow model (0.5-3 s), few faults."""
    CHAOS = "chaos"
    """Any latency, frequent errors, hangs, stubborn runs, aborts and crashes."""


@dataclass(frozen=True, slots=True)
class SimParams:
    """One schedule's parameters, drawn from the seed."""

    profile: Profile
    sessions: int
    turns_per_client: int
    clients_per_session: int
    latency_min_s: float
    latency_max_s: float
    chunks_max: int
    p_error: float
    p_hang: float
    p_stubborn: float
    stubborn_s: float
    p_same_tick: float
    think_max_s: float
    p_abort: float
    p_disconnect: float
    crashes: int
    downtime_max_s: float
    modes: tuple[QueueMode, ...]
    stall_timeout_s: float
    run_timeout_s: float
    abort_grace_s: float
    turn_timeout_s: float
    queue_turns_max: int
    safety_s: float
    heartbeat_every_s: float | None = None
    heartbeat_isolated: bool = True
    models: int = 1
    """Models in the fallback chain (each its own simulated model)."""
    model_retries: int = 0
    retry_backoff_s: float = 0.1
    p_reject: float = 0.0
    """Chance a call is refused outright (context too long): never retried."""
    storage_outages: tuple[Outage, ...] = ()
    """When the disk is full (writes fail) during the safety phase."""

    @classmethod
    def draw(cls, rng: random.Random, profile: Profile) -> SimParams:
        """Draw a schedule's parameters for ``profile``."""
        chaos = profile is Profile.CHAOS
        if profile is Profile.SLOW:
            latency = (rng.uniform(0.5, 1.5), rng.uniform(1.5, 3.0))
        elif profile is Profile.FAST:
            latency = (0.0, rng.choice([0.0, 0.05, 0.3]))
        else:
            low = rng.uniform(0.0, 1.0)
            latency = (low, rng.uniform(low, 3.0))
        mode_pool = list(QueueMode)
        modes = (
            tuple(rng.sample(mode_pool, rng.randint(1, len(mode_pool))))
            if chaos or rng.random() < 0.5
            else (QueueMode.FOLLOWUP,)
        )
        stall = rng.choice([2.0, 5.0, 10.0])
        sessions = rng.choice([1, 1, 2, 3, 5, 8, 20, 50]) if chaos else rng.choice([1, 2, 5, 10])
        per_session_budget = max(2, 60 // sessions)
        return cls(
            profile=profile,
            sessions=sessions,
            turns_per_client=rng.randint(1, min(12, per_session_budget)),
            clients_per_session=rng.choice([1, 1, 2, 3]),
            latency_min_s=latency[0],
            latency_max_s=latency[1],
            chunks_max=rng.randint(1, 5),
            p_error=rng.choice([0.0, 0.05, 0.2]) if chaos else rng.choice([0.0, 0.02]),
            p_hang=rng.choice([0.0, 0.05, 0.15]) if chaos else rng.choice([0.0, 0.01]),
            p_stubborn=rng.choice([0.0, 0.05, 0.15]) if chaos else 0.0,
            stubborn_s=rng.uniform(0.5, 3.0) * stall,
            p_same_tick=rng.choice([0.1, 0.5, 0.9]),
            think_max_s=rng.choice([0.0, 0.5, 2.0]),
            p_abort=rng.choice([0.0, 0.05]) if chaos else 0.0,
            p_disconnect=rng.choice([0.0, 0.1, 0.3]) if chaos else rng.choice([0.0, 0.05]),
            crashes=rng.choice([0, 0, 1, 2]) if chaos else rng.choice([0, 0, 0, 1]),
            downtime_max_s=rng.choice([0.0, 2.0, 30.0]),
            modes=modes,
            stall_timeout_s=stall,
            run_timeout_s=rng.choice([stall * 2, stall * 6]),
            abort_grace_s=rng.choice([0.5, 1.0, 2.0]),
            turn_timeout_s=rng.choice([30.0, 120.0, 600.0]),
            queue_turns_max=rng.choice([2, 5, 100]),
            safety_s=rng.uniform(5.0, 60.0),
        )

    def with_lanes(self, rng: random.Random) -> SimParams:
        """The same schedule plus lanes drawn from ``rng`` (a Random of their own, so a seed
        without lanes keeps the schedule it had before lanes existed)."""
        if rng.random() < 0.5:
            return self
        return replace(
            self,
            heartbeat_every_s=rng.choice([0.5, 2.0, 5.0, 20.0]),
            heartbeat_isolated=rng.random() < 0.5,
        )

    def with_models(self, rng: random.Random) -> SimParams:
        """The same schedule with a fallback chain drawn from ``rng`` (its own Random)."""
        if rng.random() < 0.5:
            return self
        return replace(
            self,
            models=rng.randint(1, 3),
            model_retries=rng.randint(0, 2),
            retry_backoff_s=rng.choice([0.05, 0.5, 2.0]),
            p_reject=rng.choice([0.0, 0.02]),
        )

    def with_storage(self, rng: random.Random) -> SimParams:
        """The same schedule with storage outages drawn from ``rng`` (its own Random)."""
        return replace(self, storage_outages=draw_outages(rng, self.safety_s))

    def line(self) -> str:
        """The parameters on one line."""
        modes = ",".join(mode.value for mode in self.modes)
        return (
            f"profile={self.profile.value} sessions={self.sessions}"
            f" clients/session={self.clients_per_session} turns/client={self.turns_per_client}"
            f" latency={self.latency_min_s:.2f}-{self.latency_max_s:.2f}s chunks<={self.chunks_max}"
            f" p_error={self.p_error} p_hang={self.p_hang} p_stubborn={self.p_stubborn}"
            f" stubborn={self.stubborn_s:.1f}s p_same_tick={self.p_same_tick}"
            f" think<={self.think_max_s}s p_abort={self.p_abort} p_disconnect={self.p_disconnect}"
            f" crashes={self.crashes} downtime<={self.downtime_max_s}s modes={modes}"
            f" stall={self.stall_timeout_s}s run_timeout={self.run_timeout_s}s"
            f" grace={self.abort_grace_s}s turn_timeout={self.turn_timeout_s}s"
            f" queue_max={self.queue_turns_max} safety={self.safety_s:.1f}s"
            f" heartbeat={self.heartbeat_every_s or '-'}"
            f" models={self.models} retries={self.model_retries}"
            f" backoff={self.retry_backoff_s}s p_reject={self.p_reject}"
            f"{'' if self.heartbeat_isolated else ' (shared)'}"
            f" storage_outages={_outages_text(self.storage_outages)}"
        )


def _outages_text(outages: tuple[Outage, ...]) -> str:
    return ",".join(f"{o.start:.1f}-{o.end:.1f}s@{o.p_fail:g}" for o in outages) if outages else "-"


class Faults:
    """Whether faults are on: on in the safety phase, off in the liveness phase."""

    def __init__(self) -> None:
        self.on = True


class SimProvider:
    """A model whose latency, chunking and failures come from the run's Random.

    Its reply is ``sim: `` followed by the new user messages, so a checker can tell a real
    reply (one that contains the turn's own message) from anything else.
    """

    name = "sim"

    def __init__(self, rng: random.Random, params: SimParams, faults: Faults) -> None:
        self.rng = rng
        self.params = params
        self.faults = faults
        self.calls = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str]:
        self.calls += 1
        rng, params = self.rng, self.params
        reply = SIM_PREFIX + "\n".join(request.new_user_messages())
        fault = rng.random() if self.faults.on else 1.0
        if self.faults.on and params.p_reject and rng.random() < params.p_reject:
            raise ProviderRejectedError(
                "sim model: context too long (injected)", code=ErrorCode.CONTEXT_TOO_LONG
            )
        if fault < params.p_hang:
            await asyncio.Event().wait()
        if fault < params.p_hang + params.p_stubborn:
            await ignore_cancellation_for(params.stubborn_s)
        chunks = rng.randint(1, params.chunks_max)
        total = rng.uniform(params.latency_min_s, params.latency_max_s)
        fail_at = (
            rng.randint(0, chunks - 1)
            if fault < params.p_hang + params.p_stubborn + params.p_error
            else -1
        )
        size = -(-len(reply) // chunks)
        for index in range(chunks):
            if total > 0:
                await asyncio.sleep(total / chunks)
            if index == fail_at:
                raise ProviderError(f"sim model: injected error at chunk {index}")
            yield reply[index * size : (index + 1) * size]


async def ignore_cancellation_for(seconds: float) -> None:
    """Model a provider that swallows cancellation for ``seconds``, then returns."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        try:
            await asyncio.sleep(until - loop.time())
        except asyncio.CancelledError:
            continue
