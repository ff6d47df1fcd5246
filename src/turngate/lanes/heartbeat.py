"""The heartbeat lane: an agent wakes every ``every`` and takes a turn.

Ticks are aligned to wall-clock multiples of ``every``, and a tick's turn id is derived from
its index, so a restart neither shifts the schedule nor runs one tick twice. A heartbeat
never stacks: if the previous heartbeat turn is still queued or running when the next tick
comes, that tick is skipped, logged and counted.
"""

from __future__ import annotations

import asyncio
import math

from turngate.config_agents import HeartbeatConfig
from turngate.core.keys import parse_session_key
from turngate.core.queue import QueueMode
from turngate.errors import TurngateError
from turngate.lanes.delivery import DeliveryTargets, follow
from turngate.runtime.engine import Engine, SubmitRequest, Ticket
from turngate.runtime.events import EventKind

LANE = "heartbeat"


def heartbeat_session(agent_id: str, config: HeartbeatConfig) -> str:
    """The session a heartbeat's turns go to."""
    return f"agent:{agent_id}:main:heartbeat" if config.isolated else f"agent:{agent_id}:main"


class HeartbeatLane:
    """One agent's heartbeat. Run :meth:`run` as a task; cancel it to stop."""

    def __init__(
        self,
        engine: Engine,
        agent_id: str,
        config: HeartbeatConfig,
        targets: DeliveryTargets | None = None,
    ) -> None:
        self.engine = engine
        self.targets = targets
        self.agent_id = agent_id
        self.config = config
        self.session_key = parse_session_key(heartbeat_session(agent_id, config))
        self.fired = 0
        self.skipped = 0

    async def run(self) -> None:
        """Tick until cancelled."""
        engine = self.engine
        every = self.config.every
        previous: Ticket | None = None
        async with asyncio.TaskGroup() as followers:
            while True:
                wall = engine.clock.wall()
                tick = math.floor(wall / every) + 1
                await asyncio.sleep(tick * every - wall)
                if previous is not None and not previous.outcome.done():
                    self.skipped += 1
                    engine.emit(
                        EventKind.HEARTBEAT_SKIPPED,
                        str(self.session_key),
                        turn_id=previous.turn_id,
                        lane=LANE,
                        detail=f"heartbeat tick {tick} skipped: the previous heartbeat turn"
                        " is still queued or running",
                    )
                    continue
                previous = await self._fire(tick)
                if previous is not None:
                    followers.create_task(
                        follow(engine, previous, self.config.ok_token, self.targets)
                    )

    async def _fire(self, tick: int) -> Ticket | None:
        request = SubmitRequest(
            self.session_key,
            self.config.prompt,
            turn_id=f"heartbeat.{self.agent_id}.{tick}",
            mode=QueueMode.FOLLOWUP,
            lane=LANE,
        )
        try:
            ticket = await self.engine.submit(request)
        except TurngateError as exc:
            self.engine.emit(
                EventKind.LANE_FAILED,
                str(self.session_key),
                lane=LANE,
                code=exc.code,
                detail=f"heartbeat tick {tick} could not be submitted: {exc.message}",
            )
            return None
        self.fired += 1
        return ticket
