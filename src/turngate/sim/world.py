"""The simulated world around the runtime: a schedule's parameters and a faulty model.

Everything random comes from the one ``random.Random`` of the run, drawn in the order the
program asks, so a seed replays exactly. Parameters are drawn per seed ("swarm testing"):
one seed has three sessions and a flaky fast model, the next has forty sessions, a slow model
and two crashes, so rare combinations come up without being designed in.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from turngate.core.queue import QueueMode
from turngate.errors import ErrorCode, ProviderError, ProviderRejectedError
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.sim.disk import Outage, draw_outages
from turngate.sim.surfaces import EDGES, Surface

if TYPE_CHECKING:
    from turngate.sim.channel import ChannelParams
    from turngate.sim.cluster import ClusterParams
    from turngate.sim.tools import SimToolCalls, ToolParams

SIM_PREFIX = "sim: "
LEASE_MODELS_SHARE = 0.3
"""Share of seeds whose model sometimes streams past ``run_timeout_s`` or stalls midway."""
ZOMBIES_SHARE = 0.3
"""Share of seeds with zombie writers."""
COMMIT_CRASH_SHARE = 0.15
"""Share of seeds whose crash lands right after a commit of the store (between two commits)."""
EDGES_SHARE = 0.15
"""Share of seeds whose clients go through the gateway's edges (``sim/surfaces.py``)."""
COMMIT_CRASH_AFTER_MAX = 200
"""The commit a crash follows is drawn log-uniformly from 1 to this (most seeds commit fewer
times than this in their safety phase; the crash then lands early)."""
LONG_STREAM_S = (1.05, 1.5)
"""A long stream lasts this many times ``run_timeout_s``..."""
LONG_DELTA_SHARE = (0.3, 0.9)
"""...with a delta every this share of ``stall_timeout_s``."""
NEAR_STALL_MARGIN = (0.005, 0.03)
"""Deltas just in time come this share of ``stall_timeout_s`` before the stall."""


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
    p_long: float = 0.0
    """Chance a call streams steadily (a delta well within ``stall_timeout_s``) for longer
    than ``run_timeout_s``: only the run timeout ends it."""
    p_stall_after: float = 0.0
    """Chance a call streams a little, then stalls: only the stall timeout ends it."""
    p_near_stall: float = 0.0
    """Chance a call's deltas come just under ``stall_timeout_s`` apart: it must not stall."""
    zombies: int = 0
    """Second processes on the same database that wake with a stale epoch and try to write
    (``sim/zombie.py``); paused owners come with every crash of a seed that has any."""
    crash_after_commit: int = 0
    """The gateway crashes right after the store's N-th successful commit of the safety
    phase, before anything else runs (0: no such crash); it replaces the timed crashes."""
    commit_crash_downtime_s: float = 0.0
    surfaces: tuple[Surface, ...] = (Surface.ENGINE,)
    """How the clients send their messages: each message draws one of these."""
    channel: ChannelParams | None = None
    """People on a chat platform, writing through a channel (``sim/channel_world.py``)."""
    tools: ToolParams | None = None
    """A model that calls tools, and the tools (``sim/tools.py``)."""
    cluster: ClusterParams | None = None
    """Several gateway processes on the one store, and their crashes and pauses
    (``sim/cluster.py``); None: one process, which crashes as ``crashes`` says."""

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

    def with_lease_models(self, rng: random.Random) -> SimParams:
        """The same schedule with models that test the lease terms, drawn from ``rng`` (its
        own Random): long streams, stalls after partial progress, deltas just in time."""
        if rng.random() < LEASE_MODELS_SHARE:
            return replace(
                self,
                p_long=rng.choice([0.05, 0.2]),
                p_stall_after=rng.choice([0.0, 0.05, 0.2]),
                p_near_stall=rng.choice([0.0, 0.05, 0.2]),
            )
        return self

    def with_zombies(self, rng: random.Random) -> SimParams:
        """The same schedule with zombie writers drawn from ``rng`` (its own Random)."""
        if rng.random() < ZOMBIES_SHARE:
            return replace(self, zombies=rng.randint(1, 3))
        return self

    def with_commit_crash(self, rng: random.Random) -> SimParams:
        """The same schedule with a crash between two commits, drawn from ``rng`` (its own
        Random)."""
        if rng.random() >= COMMIT_CRASH_SHARE:
            return self
        after = round(math.exp(rng.uniform(0.0, math.log(COMMIT_CRASH_AFTER_MAX))))
        return replace(
            self,
            crash_after_commit=after,
            commit_crash_downtime_s=rng.uniform(0.0, self.downtime_max_s),
        )

    def with_edges(self, rng: random.Random) -> SimParams:
        """The same schedule with clients that go through the gateway's edges, drawn from
        ``rng`` (its own Random); some keep the engine as one of their surfaces."""
        if rng.random() >= EDGES_SHARE:
            return self
        surfaces: list[Surface] = rng.sample(EDGES, rng.randint(1, len(EDGES)))
        if rng.random() < 0.3:
            surfaces.append(Surface.ENGINE)
        return replace(self, surfaces=tuple(surfaces))

    @property
    def lease_models(self) -> bool:
        """Whether any call may be one of the lease-testing models."""
        return bool(self.p_long or self.p_stall_after or self.p_near_stall)

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
            f" p_long={self.p_long} p_stall_after={self.p_stall_after}"
            f" p_near_stall={self.p_near_stall} zombies={self.zombies}"
            f" crash_after_commit={self.crash_after_commit or '-'}"
            f" surfaces={','.join(surface.value for surface in self.surfaces)}"
            f" channel={self.channel.line() if self.channel else '-'}"
            f" tools={self.tools.line() if self.tools else '-'}"
            f" processes={self.cluster.line() if self.cluster else '-'}"
        )


def _outages_text(outages: tuple[Outage, ...]) -> str:
    return ",".join(f"{o.start:.1f}-{o.end:.1f}s@{o.p_fail:g}" for o in outages) if outages else "-"


class Faults:
    """Whether faults are on: on in the safety phase, off in the liveness phase."""

    def __init__(self) -> None:
        self.on = True


class SimProvider:
    """A model whose latency, chunking and failures come from the run's Random.

    Its reply is ``sim: `` followed by the user messages since its last answer, so a checker
    can tell a real reply (one that contains the turn's own message) from anything else. In
    a seed with tools, a step may then call tools instead of answering (``tool_calls``).
    """

    name = "sim"

    def __init__(
        self,
        rng: random.Random,
        params: SimParams,
        faults: Faults,
        lease_rng: random.Random | None = None,
        tool_calls: SimToolCalls | None = None,
    ) -> None:
        self.tool_calls = tool_calls
        self.rng = rng
        self.params = params
        self.faults = faults
        self.calls = 0
        self.lease_rng = lease_rng or random.Random(0)
        """Draws of the lease-testing models: their own Random, so that the other seeds
        keep their schedules."""

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield the reply's deltas and a ``stop``, or fail, hang or stall as drawn."""
        self.calls += 1
        rng, params = self.rng, self.params
        reply = SIM_PREFIX + "\n".join(_since_last_answer(request))
        fault = rng.random() if self.faults.on else 1.0
        if self.faults.on and params.p_reject and rng.random() < params.p_reject:
            raise ProviderRejectedError(
                "sim model: context too long (injected)", code=ErrorCode.CONTEXT_TOO_LONG
            )
        if fault < params.p_hang:
            await asyncio.Event().wait()
        if fault < params.p_hang + params.p_stubborn:
            await ignore_cancellation_for(params.stubborn_s)
        timed = self._lease_model() if self.faults.on and params.lease_models else None
        if timed is not None:
            gaps, then_hang = timed
            # ``reply`` in one delta per gap (empty ones when there are more gaps than
            # characters: still progress), then, for a stall, nothing more.
            size = -(-len(reply) // len(gaps))
            for index, gap in enumerate(gaps):
                await asyncio.sleep(gap)
                yield TextDelta(reply[index * size : (index + 1) * size])
            if then_hang:
                await asyncio.Event().wait()
            yield Finish("stop")
            return
        calls = () if self.tool_calls is None else self.tool_calls.calls(request)
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
            yield TextDelta(reply[index * size : (index + 1) * size])
        for call in calls:
            yield call
        yield Finish("tool_calls" if calls else "stop")

    def _lease_model(self) -> tuple[list[float], bool] | None:
        """The pauses before each delta of a lease-testing model for this call, and whether
        it then stalls; None for an ordinary call."""
        rng, params = self.lease_rng, self.params
        stall = params.stall_timeout_s
        draw = rng.random()
        if draw < params.p_long:
            every = stall * rng.uniform(*LONG_DELTA_SHARE)
            total = params.run_timeout_s * rng.uniform(*LONG_STREAM_S)
            return [every] * math.ceil(total / every), False
        draw -= params.p_long
        if draw < params.p_stall_after:
            gaps = [stall * rng.uniform(0.05, 0.5) for _ in range(rng.randint(1, 3))]
            return gaps, True
        draw -= params.p_stall_after
        if draw < params.p_near_stall:
            every = stall * (1.0 - rng.uniform(*NEAR_STALL_MARGIN))
            return [every] * rng.randint(2, 4), False
        return None


def _since_last_answer(request: ProviderRequest) -> list[str]:
    """The user messages after the model's last answer (an assistant message that called no
    tools): those of the run so far, steered ones too, even across a restart."""
    said: list[str] = []
    for message in reversed(request.messages):
        if message.role == "assistant" and not message.tool_calls:
            break
        if message.role == "user":
            said.append(message.content)
    return said[::-1]


async def ignore_cancellation_for(seconds: float) -> None:
    """Model a provider that swallows cancellation for ``seconds``, then returns."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        try:
            await asyncio.sleep(until - loop.time())
        except asyncio.CancelledError:
            continue
