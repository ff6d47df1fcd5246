"""What the console's buttons do: abort a session's run, force a session free, fire a cron
job now. The same engine and lane calls as ``POST /chat.abort``, ``/sessions/unstick`` and
``/cron/run``, with the session or job in the path; each is a ``POST`` under the same-origin
rule (:mod:`~turngate.gateway.console.origin`), and the page asks for confirmation first.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turngate.errors import UnavailableError
from turngate.gateway.app_state import engine_of
from turngate.gateway.frames import parse_session
from turngate.lanes.cron import CronLane


async def abort(request: Request) -> Response:
    """``POST /console/api/sessions/{key}/abort``: abort the session's running turn
    (``user_abort``); answers which turns it ended (none when nothing ran)."""
    key = parse_session(request.path_params["key"])
    aborted = await engine_of(request).abort(key)
    return JSONResponse(
        {"ok": True, "sessionKey": str(key), "aborted": bool(aborted), "runIds": aborted}
    )


async def unstick(request: Request) -> Response:
    """``POST /console/api/sessions/{key}/unstick``: force the session free now: its run is
    cancelled and fenced at once (no grace), its turns end aborted, the next queued turn
    starts (audited at WARNING)."""
    key = parse_session(request.path_params["key"])
    ended = await engine_of(request).unstick(key)
    return JSONResponse(
        {"ok": True, "sessionKey": str(key), "unstuck": bool(ended), "runIds": ended}
    )


async def cron_run(request: Request) -> Response:
    """``POST /console/api/cron/{job}/run``: fire a cron job now; answers once its turn is
    stored (``202``), or ``404`` naming the jobs there are."""
    cron: CronLane | None = getattr(request.app.state, "cron", None)
    if cron is None:
        raise UnavailableError("cron: the gateway's lanes are not running")
    ticket = await cron.run_now(request.path_params["job"])
    return JSONResponse(
        {"runId": ticket.turn_id, "sessionKey": ticket.session_key, "status": "accepted"},
        status_code=202,
    )
