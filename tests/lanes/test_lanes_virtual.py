"""Heartbeat and cron lanes on the virtual clock: a simulated day in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_models import Call, ScriptedModel, heartbeat_ok_or_echo
from tests.harness import EngineHarness
from turngate.config_agents import AgentConfig, CronJobConfig, HeartbeatConfig
from turngate.core.keys import parse_session_key
from turngate.lanes.cron import CronJob, CronLane
from turngate.lanes.heartbeat import HeartbeatLane
from turngate.runtime.engine import Engine, EngineSettings, SubmitRequest
from turngate.runtime.events import Event, EventKind
from turngate.sim.loop import run_virtual

DAY_S = 86_400.0
HOUR_S = 3_600.0
USER_PAUSE_S = 37.0
# 2027-01-15 08:00:00 UTC: an exact hour, so half-hourly ticks fall on round times.
WALL_AT_ZERO = 1_800_000_000.0 - HOUR_S


def agent(latency_s: float = 1.0) -> ScriptedModel:
    """Answers heartbeats with HEARTBEAT_OK, anything else by echoing, after ``latency_s``."""
    return ScriptedModel(then=Call(reply=heartbeat_ok_or_echo, latency_s=latency_s, chunks=1))


Life = Callable[[Engine], Awaitable[None]]


def live(
    tmp_path: Path, provider: ScriptedModel, *lives: tuple[float, Life], **settings: Any
) -> list[Event]:
    """Run engine lives one after another on one store; ``(downtime_s, body)`` each. The
    simulator's invariant checker watches every life."""
    harness = EngineHarness(
        tmp_path,
        provider,
        EngineSettings(**settings),
        wall_at_zero=WALL_AT_ZERO,
        check_invariants=True,
    )

    async def main() -> None:
        for downtime_s, body in lives:
            await asyncio.sleep(downtime_s)
            async with harness.engine() as engine:
                await body(engine)

    run_virtual(main())
    return harness.events


def of(events: list[Event], kind: EventKind, lane: str | None = None) -> list[Event]:
    return [e for e in events if e.kind is kind and (lane is None or e.lane == lane)]


async def for_a_while(engine: Engine, lane_run: Awaitable[None], seconds: float) -> None:
    task = asyncio.ensure_future(lane_run)
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_half_hourly_heartbeat_takes_48_turns_in_a_day(tmp_path: Path) -> None:
    lanes: list[HeartbeatLane] = []

    async def day(engine: Engine) -> None:
        lane = HeartbeatLane(engine, "main", HeartbeatConfig(every=1800.0))
        lanes.append(lane)
        await for_a_while(engine, lane.run(), DAY_S + 60.0)  # the last tick is at 24:00
        turns = await engine.store.session_turns("agent:main:main:heartbeat", 100)
        assert len(turns) == 48
        assert {t.state.value for t in turns} == {"replied"}
        assert {t.delivery for t in turns} == {"suppressed"}
        assert {t.lane for t in turns} == {"heartbeat"}

    events = live(tmp_path, agent(), (0.0, day))
    started = of(events, EventKind.STARTED, "heartbeat")
    assert [e.at for e in started] == [1800.0 * n for n in range(1, 49)]
    assert lanes[0].skipped == 0


def test_a_heartbeat_never_stacks_while_the_previous_one_is_still_running(tmp_path: Path) -> None:
    lanes: list[HeartbeatLane] = []

    async def slow_day(engine: Engine) -> None:
        lane = HeartbeatLane(engine, "main", HeartbeatConfig(every=1800.0))
        lanes.append(lane)
        # Up to just before the tick at 4 h, which would fall on the end of the window.
        await for_a_while(engine, lane.run(), 4 * HOUR_S - 1.0)

    events = live(
        tmp_path,
        agent(latency_s=45 * 60.0),
        (0.0, slow_day),
        stall_timeout_s=HOUR_S,
        run_timeout_s=2 * HOUR_S,
        turn_timeout_s=4 * HOUR_S,
    )
    skipped = of(events, EventKind.HEARTBEAT_SKIPPED)
    started = of(events, EventKind.STARTED, "heartbeat")
    assert lanes[0].skipped == len(skipped) == 3
    assert [e.at for e in started] == [1800.0, 5400.0, 9000.0, 12600.0]
    assert all("still queued or running" in e.detail for e in skipped)


def test_a_shared_heartbeat_queues_with_the_users_turns_never_beside_them(tmp_path: Path) -> None:
    key = parse_session_key("agent:main:main")

    async def busy_session(engine: Engine) -> None:
        lane = HeartbeatLane(engine, "main", HeartbeatConfig(every=600.0, isolated=False))
        task = asyncio.ensure_future(lane.run())
        for index in range(30):
            ticket = await engine.submit(SubmitRequest(key, f"user message {index}"))
            outcome = await ticket.outcome
            assert outcome.reply == f"echo: user message {index}"
            await asyncio.sleep(USER_PAUSE_S)  # virtual time: the user reads, then writes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    events = live(tmp_path, agent(latency_s=20.0), (0.0, busy_session))
    lanes = {e.lane for e in of(events, EventKind.STARTED)}
    assert lanes == {"direct", "heartbeat"}
    assert {e.session_key for e in of(events, EventKind.STARTED)} == {str(key)}


def hourly_lane(engine: Engine) -> CronLane:
    agent = AgentConfig(
        id="main", cron=(CronJobConfig(id="hourly", schedule="0 * * * *", message="report"),)
    )
    return CronLane(engine, [CronJob.of(agent, job) for job in agent.cron])


def test_a_missed_cron_slot_fires_once_after_a_five_hour_outage(tmp_path: Path) -> None:
    async def two_hours(engine: Engine) -> None:
        lane = hourly_lane(engine)
        await for_a_while(engine, lane.run(), 2 * HOUR_S + 60.0)
        assert lane.fired == 2

    async def after_outage(engine: Engine) -> None:
        lane = hourly_lane(engine)
        await for_a_while(engine, lane.run(), 30 * 60.0)
        assert lane.fired == 1

    events = live(tmp_path, agent(), (0.0, two_hours), (5 * HOUR_S, after_outage))
    fired = of(events, EventKind.CRON_FIRED)
    assert [e.at for e in fired] == [HOUR_S, 2 * HOUR_S, 2 * HOUR_S + 60.0 + 5 * HOUR_S]
    assert fired[-1].turn_id == f"cron.hourly.{int(WALL_AT_ZERO + 3 * HOUR_S)}"
    assert all(e.session_key == "agent:main:cron:hourly" for e in fired)


def test_cron_next_fire_times_survive_a_restart(tmp_path: Path) -> None:
    saved: list[float] = []

    async def first(engine: Engine) -> None:
        lane = hourly_lane(engine)
        await for_a_while(engine, lane.run(), 10.0)
        saved.append(lane.states["hourly"].next_fire_wall)

    async def second(engine: Engine) -> None:
        lane = hourly_lane(engine)
        await lane.load()
        assert lane.states["hourly"].next_fire_wall == saved[0] == WALL_AT_ZERO + HOUR_S

    live(tmp_path, agent(), (0.0, first), (60.0, second))


def test_running_a_cron_job_by_hand_fires_it_now_and_an_unknown_job_is_named(
    tmp_path: Path,
) -> None:
    async def by_hand(engine: Engine) -> None:
        lane = hourly_lane(engine)
        await lane.load()
        ticket = await lane.run_now("hourly")
        assert (await ticket.outcome).reply == "echo: report"
        with pytest.raises(Exception, match="no cron job 'nightly'; configured: hourly"):
            await lane.run_now("nightly")

    live(tmp_path, agent(), (0.0, by_hand))
