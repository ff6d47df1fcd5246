"""The cron lane's jobs as OpenClaw's Control UI reads them on a WebSocket: ``cron.status``,
``cron.list`` (its automations page; a page shape the UI checks strictly), ``cron.run`` (run
now) and ``cron.runs`` (each job's past fires, from its session's turns).

A job here is a configured ``[[agents.cron]]`` entry: always enabled, a cron expression in
UTC, an agent turn with its ``message`` in its session. Its last fire's outcome is read from
the store (the turns of its session that the cron lane submitted).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from turngate.core.turn import TurnState
from turngate.errors import UnavailableError
from turngate.gateway.ws_frames import (
    CronListParams,
    CronPageParams,
    CronRunParams,
    CronRunsParams,
    RequestFrame,
    response,
)
from turngate.gateway.ws_peer import MethodHandler, Peer, Services
from turngate.lanes.cron import LANE, CronJob, CronLane
from turngate.store.base import CronJobState, TurnRecord

RUN_STATUS = {TurnState.REPLIED: "ok", TurnState.REJECTED: "skipped"}
"""A fire's status as OpenClaw shows it: replied ``ok``, refused ``skipped``, else ``error``."""

SUMMARY_CHARS_MAX = 200


class CronMethods:
    """The cron methods as answered on one connection (one per connection, made by its first
    request for one of them)."""

    def __init__(self, peer: Peer, services: Services) -> None:
        self.peer = peer
        self.services = services

    def _lane(self) -> CronLane | None:
        return self.services.cron

    async def _status(self, request: RequestFrame) -> None:
        lane = self._lane()
        nexts = [s.next_fire_wall for s in lane.states.values()] if lane else []
        payload = {
            "enabled": lane is not None,
            "jobs": len(lane.jobs) if lane else 0,
            "nextWakeAtMs": _ms(min(nexts)) if nexts else None,
        }
        self.peer.send(response(request.id, payload))

    async def _list(self, request: RequestFrame) -> None:
        params = CronListParams.model_validate(request.params)
        lane = self._lane()
        rows = [] if lane is None or params.enabled == "disabled" else list(lane.jobs.values())
        rows = [job for job in rows if params.agentId in (None, job.agent_id)]
        if params.query:
            needle = params.query.casefold()
            rows = [j for j in rows if needle in f"{j.job_id} {j.message}".casefold()]
        states = lane.states if lane else {}
        rows.sort(key=lambda job: _sort_key(job, states.get(job.job_id), params.sortBy))
        if params.sortDir == "desc":
            rows.reverse()
        page = rows[params.offset : params.offset + params.limit]
        last_runs = {job.job_id: await self._last_run(job) for job in page}
        jobs = [
            _job(job, states.get(job.job_id), last_runs[job.job_id], compact=params.compact)
            for job in page
        ]
        revision = json.dumps([[j.job_id, _state_key(states.get(j.job_id))] for j in rows])
        payload = {
            "jobs": jobs,
            "snapshotRevision": "sha256:" + hashlib.sha256(revision.encode()).hexdigest(),
            **_paging(params, len(page), len(rows)),
        }
        self.peer.send(response(request.id, payload))

    async def _run(self, request: RequestFrame) -> None:
        params = CronRunParams.model_validate(request.params)
        lane = self._lane()
        if lane is None:
            raise UnavailableError("cron: the gateway's lanes are not running")
        ticket = await lane.run_now(params.job_id())
        self.peer.send(
            response(request.id, {"ok": True, "enqueued": True, "runId": ticket.turn_id})
        )

    async def _runs(self, request: RequestFrame) -> None:
        params = CronRunsParams.model_validate(request.params)
        lane = self._lane()
        jobs = list(lane.jobs.values()) if lane else []
        job_id = params.id or params.jobId
        if job_id is not None:
            jobs = [job for job in jobs if job.job_id == job_id]
        jobs = [job for job in jobs if params.agentId in (None, job.agent_id)]
        entries = []
        for job in jobs:
            for turn in await self._fires(job, params.offset + params.limit):
                entry = _run_entry(job, turn)
                if params.status in ("all", entry["status"]):
                    entries.append(entry)
        entries.sort(key=lambda e: e["ts"], reverse=params.sortDir != "asc")
        page = entries[params.offset : params.offset + params.limit]
        payload = {"entries": page, **_paging(params, len(page), len(entries))}
        self.peer.send(response(request.id, payload))

    async def _fires(self, job: CronJob, limit: int) -> list[TurnRecord]:
        """The job's fires that ended, newest last (its session's cron turns of this job)."""
        turns = await self.services.engine.store.session_turns(str(job.session_key), limit)
        prefix = f"cron.{job.job_id}."
        return [
            t
            for t in turns
            if t.lane == LANE and t.turn_id.startswith(prefix) and t.state.is_terminal
        ]

    async def _last_run(self, job: CronJob) -> TurnRecord | None:
        fires = await self._fires(job, 16)
        return fires[-1] if fires else None


HANDLERS: dict[str, MethodHandler[CronMethods]] = {
    "cron.status": CronMethods._status,
    "cron.list": CronMethods._list,
    "cron.run": CronMethods._run,
    "cron.runs": CronMethods._runs,
}
"""The dispatch table of :class:`CronMethods`: each method's handler, by method name."""


def _paging(params: CronPageParams, count: int, total: int) -> dict[str, Any]:
    """Where a page of ``count`` items out of ``total`` sits (the fields OpenClaw's Control
    UI checks: a last page has ``nextOffset`` null and ends at ``total``)."""
    end = params.offset + count
    return {
        "total": total,
        "offset": params.offset,
        "limit": params.limit,
        "hasMore": end < total,
        "nextOffset": end if end < total else None,
    }


def _ms(wall: float | None) -> int | None:
    return None if wall is None else int(wall * 1000)


def _state_key(state: CronJobState | None) -> list[float | None]:
    return [None, None] if state is None else [state.next_fire_wall, state.last_fire_wall]


def _sort_key(job: CronJob, state: CronJobState | None, sort_by: str) -> tuple[Any, ...]:
    if sort_by == "name":
        return (job.job_id,)
    if sort_by == "updatedAtMs":
        return ((state.last_fire_wall or 0.0) if state else 0.0, job.job_id)
    return (state.next_fire_wall if state else float("inf"), job.job_id)


def _job(
    job: CronJob, state: CronJobState | None, last: TurnRecord | None, *, compact: bool
) -> dict[str, Any]:
    """One job, in OpenClaw's full or compact shape."""
    next_ms = _ms(state.next_fire_wall) if state else None
    last_ms = _ms(state.last_fire_wall) if state else None
    status = None if last is None else RUN_STATUS.get(last.state, "error")
    schedule = {"kind": "cron", "expr": job.schedule, "tz": "UTC"}
    if compact:
        return {
            "id": job.job_id,
            "name": job.job_id,
            "agentId": job.agent_id,
            "enabled": True,
            "updatedAtMs": last_ms or 0,
            "nextRunAtMs": next_ms,
            "lastRunAtMs": last_ms,
            "lastRunStatus": status,
            "scheduleKind": "cron",
            "schedule": schedule,
        }
    run_state: dict[str, Any] = {}
    if next_ms is not None:
        run_state["nextRunAtMs"] = next_ms
    if last_ms is not None:
        run_state["lastRunAtMs"] = last_ms
    if status is not None:
        run_state["lastRunStatus"] = status
    if last is not None and status == "error" and last.error_message:
        run_state["lastError"] = last.error_message
    return {
        "id": job.job_id,
        "agentId": job.agent_id,
        "sessionKey": str(job.session_key),
        "name": job.job_id,
        "enabled": True,
        "createdAtMs": 0,
        "updatedAtMs": last_ms or 0,
        "schedule": schedule,
        "sessionTarget": f"session:{job.session_key}",
        "wakeMode": "now",
        "payload": {"kind": "agentTurn", "message": job.message},
        "state": run_state,
        **run_state,
    }


def _run_entry(job: CronJob, turn: TurnRecord) -> dict[str, Any]:
    """One ended fire of ``job`` as ``cron.runs`` shows it."""
    status = RUN_STATUS.get(turn.state, "error")
    entry: dict[str, Any] = {
        "ts": _ms(turn.ended_wall or turn.accepted_wall),
        "jobId": job.job_id,
        "jobName": job.job_id,
        "action": "finished",
        "status": status,
        "sessionKey": turn.session_key,
        "runId": turn.turn_id,
        "runAtMs": _ms(turn.started_wall or turn.accepted_wall),
    }
    if turn.started_wall is not None and turn.ended_wall is not None:
        entry["durationMs"] = int((turn.ended_wall - turn.started_wall) * 1000)
    text = turn.reply if status == "ok" else turn.error_message
    if text:
        entry["error" if status == "error" else "summary"] = text[:SUMMARY_CHARS_MAX]
    return entry
