"""The cron lane: scheduled turns, from cron expressions (croniter), in UTC.

Each job's next fire time lives in the store, so a restart neither skips nor repeats a slot.
After downtime, a job whose slot passed fires once, not once per missed slot, and its next
slot is computed from now. A fire's turn id is derived from the slot it serves, so firing the
same slot twice (a crash between submitting and saving the next slot) runs it once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

from turngate.config_agents import AgentConfig, CronJobConfig
from turngate.core.keys import SessionKey, parse_session_key
from turngate.core.queue import QueueMode
from turngate.errors import NotFoundError, StorageUnavailableError, StoreError, TurngateError
from turngate.lanes.delivery import DeliveryTargets, follow
from turngate.runtime.engine import Engine, SubmitRequest, Ticket
from turngate.runtime.events import EventKind
from turngate.store.base import CronJobState
from turngate.types import WallS

LANE = "cron"
IDLE_WAIT_S = 3600.0
"""With no job configured the lane still wakes hourly; every wait has a deadline."""
STORAGE_RETRY_S = 5.0
"""A slot that could not be stored (storage unavailable) is tried again after this long."""


@dataclass(frozen=True, slots=True)
class CronJob:
    """One configured job, resolved."""

    job_id: str
    agent_id: str
    schedule: str
    message: str
    session_key: SessionKey

    @classmethod
    def of(cls, agent: AgentConfig, job: CronJobConfig) -> CronJob:
        """Resolve ``job`` of ``agent`` (its session defaults to ``agent:<id>:cron:<job>``)."""
        key = parse_session_key(job.session or f"agent:{agent.id}:cron:{job.id}")
        if key.agent_id != agent.id:
            raise TurngateError(
                f"agents.{agent.id}.cron.{job.id}.session: {key} belongs to another agent"
            )
        return cls(job.id, agent.id, job.schedule, job.message, key)


def next_fire(schedule: str, after: WallS) -> WallS:
    """The first slot of ``schedule`` strictly after ``after`` (UTC)."""
    start = datetime.fromtimestamp(after, tz=UTC)
    return float(croniter(schedule, start).get_next(datetime).timestamp())


class CronLane:
    """All cron jobs of a gateway. Run :meth:`run` as a task; cancel it to stop."""

    def __init__(
        self, engine: Engine, jobs: list[CronJob], targets: DeliveryTargets | None = None
    ) -> None:
        self.engine = engine
        self.targets = targets
        self.jobs = {job.job_id: job for job in jobs}
        self.states: dict[str, CronJobState] = {}
        self.fired = 0
        self._followers: asyncio.TaskGroup | None = None

    async def load(self) -> None:
        """Read the jobs' saved state; start new or rescheduled jobs from now."""
        saved = {state.job_id: state for state in await self.engine.store.cron_jobs()}
        now = self.engine.clock.wall()
        for job in self.jobs.values():
            state = saved.get(job.job_id)
            if state is None or state.schedule != job.schedule or state.agent_id != job.agent_id:
                state = CronJobState(
                    job.job_id, job.agent_id, job.schedule, next_fire(job.schedule, now)
                )
                await self.engine.store.save_cron_job(state)
            self.states[job.job_id] = state

    async def run(self) -> None:
        """Fire jobs at their slots until cancelled."""
        await self.load()
        async with asyncio.TaskGroup() as followers:
            self._followers = followers
            try:
                while True:
                    now = self.engine.clock.wall()
                    due_at = min((s.next_fire_wall for s in self.states.values()), default=None)
                    wait = IDLE_WAIT_S if due_at is None else min(IDLE_WAIT_S, due_at - now)
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                    for state in list(self.states.values()):
                        if state.next_fire_wall <= now and not await self._fire_slot(state, now):
                            await asyncio.sleep(STORAGE_RETRY_S)
                            break
            finally:
                self._followers = None

    async def run_now(self, job_id: str) -> Ticket:
        """Fire ``job_id`` once now, outside its schedule (``turngate cron run``)."""
        job = self.jobs.get(job_id)
        if job is None:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise NotFoundError(f"job: no cron job {job_id!r}; configured: {known}")
        wall = self.engine.clock.wall()
        ticket = await self._submit(job, f"cron.{job.job_id}.manual.{int(wall * 1000)}", wall)
        # A manual fire is a fire: ``cron list`` shows it as the last one. The schedule is
        # untouched (the next slot stays where it was).
        state = self.states.get(job.job_id)
        next_wall = state.next_fire_wall if state is not None else next_fire(job.schedule, wall)
        updated = CronJobState(job.job_id, job.agent_id, job.schedule, next_wall, wall)
        try:
            await self.engine.store.save_cron_job(updated)
        except StoreError as exc:
            # The turn is stored and runs; only the last-fire record is lost.
            self._failed(job, wall, exc, "; its last fire was not recorded")
        else:
            self.states[job.job_id] = updated
        self._follow(ticket)
        return ticket

    async def _fire_slot(self, state: CronJobState, now: WallS) -> bool:
        """Fire one due slot and move the job to its next one; False if storage could not
        take it (the slot stays due and is tried again: its turn id makes that safe)."""
        job = self.jobs[state.job_id]
        slot = state.next_fire_wall
        try:
            ticket: Ticket | None = await self._submit(job, f"cron.{job.job_id}.{int(slot)}", slot)
        except StorageUnavailableError as exc:
            self._failed(job, slot, exc, "; the slot will be tried again")
            return False
        except TurngateError as exc:
            self._failed(job, slot, exc)
            ticket = None
        updated = CronJobState(
            job.job_id, job.agent_id, job.schedule, next_fire(job.schedule, max(now, slot)), slot
        )
        try:
            await self.engine.store.save_cron_job(updated)
        except StoreError as exc:
            self._failed(job, slot, exc, "; its next slot was not saved, so it is tried again")
            return False
        self.states[job.job_id] = updated
        if ticket is not None:
            self._follow(ticket)
        return True

    def _failed(self, job: CronJob, slot: WallS, exc: TurngateError, then: str = "") -> None:
        self.engine.emit(
            EventKind.LANE_FAILED,
            str(job.session_key),
            lane=LANE,
            code=exc.code,
            detail=f"cron job {job.job_id}: slot {slot:.0f} could not be submitted:"
            f" {exc.message}{then}",
        )

    async def _submit(self, job: CronJob, turn_id: str, slot: WallS) -> Ticket:
        ticket = await self.engine.submit(
            SubmitRequest(
                job.session_key, job.message, turn_id=turn_id, mode=QueueMode.FOLLOWUP, lane=LANE
            )
        )
        self.fired += 1
        self.engine.emit(
            EventKind.CRON_FIRED,
            str(job.session_key),
            turn_id=ticket.turn_id,
            lane=LANE,
            detail=f"cron job {job.job_id} fired for slot {slot:.0f}",
        )
        return ticket

    def _follow(self, ticket: Ticket) -> None:
        if self._followers is not None:
            self._followers.create_task(follow(self.engine, ticket, None, self.targets))
