"""Every route of the console, in one list. Every ``POST`` is made by :func:`post`, which puts
it under the same-origin rule: no console route that changes something can skip it."""

from __future__ import annotations

from starlette.routing import Route

from turngate.gateway.console import access, actions, api, chat, feed, page, signin
from turngate.gateway.console.origin import Endpoint, same_origin


def get(path: str, endpoint: Endpoint) -> Route:
    """A ``GET`` route (it changes nothing)."""
    return Route(path, endpoint, methods=["GET"])


def post(path: str, endpoint: Endpoint) -> Route:
    """A ``POST`` route, answered only for the console's own page."""
    return Route(path, same_origin(endpoint), methods=["POST"])


def console_routes() -> list[Route]:
    """The console's routes, to add to the gateway's."""
    return [
        get(access.PREFIX, page.console_page),
        get(access.STATIC_PREFIX + "{name:str}", page.static_file),
        post(access.LOGIN_PATH, signin.login),
        post(access.LOGOUT_PATH, signin.logout),
        get("/console/api/gateway", api.gateway),
        get("/console/api/sessions", api.sessions),
        get("/console/api/sessions/{key:str}", api.session),
        post("/console/api/sessions/{key:str}/abort", actions.abort),
        post("/console/api/sessions/{key:str}/unstick", actions.unstick),
        get("/console/api/lanes", api.lanes),
        post("/console/api/cron/{job:str}/run", actions.cron_run),
        get("/console/api/connections", api.connections),
        post("/console/api/chat", chat.chat),
        get("/console/api/events", feed.events),
    ]
