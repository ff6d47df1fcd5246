"""OpenClaw's Control UI, served from the user's own copy (``control_ui_dir``: the
``dist/control-ui`` folder of an installed ``openclaw`` package), with the WebSocket protocol on
the same origin, so that no gateway hand-off is needed. turngate ships none of its files.

:class:`ControlUiFiles` sits in front of the gateway's app. A GET or HEAD that none of the
gateway's own routes answers is the UI's: a file of the folder, else its ``index.html`` (the
UI's routes, like ``/chat/main``, live in the page). The UI's files are public (OpenClaw
publishes them), so they need no token; everything of the gateway's still does, and the UI
presents the gateway token itself (in its WebSocket ``connect``, and as a bearer token on
``/control-ui-config.json``, the small document it reads at start).

``index.html`` is served with its relative asset paths made absolute, and pinned to the root
(``data-openclaw-control-ui-base-path=""``): a page opened at a deep link then still loads its
assets and connects to the WebSocket at ``/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from turngate import __version__
from turngate.errors import InvalidFieldError

CONFIG_PATHS = (
    "/control-ui-config.json",
    "/__openclaw/control-ui-config.json",
    "/__openclaw__/control-ui-config.json",
)
"""Where the UI looks for its start-up document (OpenClaw answers all three)."""
GATEWAY_PREFIXES = ("/console", "/v1/")
"""Namespaces of the gateway's own: a path under one that no route answers is the gateway's
404, not the UI's page."""
_RELATIVE = re.compile(r'(href|src)="\./')
_HTML_TAG = re.compile(r"<html\b")


def check_control_ui_dir(directory: Path) -> Path:
    """``directory`` resolved, if it holds the Control UI (an ``index.html``); else an
    :class:`InvalidFieldError` naming ``control_ui_dir`` and what to point it at."""
    resolved = directory.expanduser().resolve()
    if not (resolved / "index.html").is_file():
        raise InvalidFieldError(
            "control_ui_dir",
            f"{directory} holds no index.html: point it at the dist/control-ui folder of an"
            " installed openclaw package (e.g. node_modules/openclaw/dist/control-ui)",
        )
    return resolved


def config_routes(agent_name: str) -> list[BaseRoute]:
    """The UI's start-up document, behind the gateway token like every route of the app."""

    async def control_ui_config(request: Request) -> Response:
        del request
        body = {
            "basePath": "",
            "assistantAgentId": agent_name,
            "assistantName": agent_name,
            "serverVersion": f"turngate {__version__}",
            # The page's attribute says false too: when they differ, the UI reloads itself.
            "terminalEnabled": False,
            "cliAgentsEnabled": False,
            "communityInvite": False,
            "embedSandbox": "strict",
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return [Route(path, control_ui_config, methods=["GET"]) for path in CONFIG_PATHS]


class ControlUiFiles:
    """Serves the Control UI's files for the GET and HEAD requests the gateway's ``routes``
    do not answer; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, directory: Path, routes: list[BaseRoute]) -> None:
        self.app = app
        self.directory = directory
        self.routes = routes
        self._index = _pinned_index((directory / "index.html").read_text(encoding="utf-8"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or self._routed(scope):
            await self.app(scope, receive, send)
            return
        await self._file_or_index(scope["path"])(scope, receive, send)

    def _routed(self, scope: Scope) -> bool:
        if scope["path"].startswith(GATEWAY_PREFIXES):
            return True
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)

    def _file_or_index(self, path: str) -> Response:
        relative = path.lstrip("/")
        # Assets are asked for relative to deep links too (/chat/assets/x.js): the folder's
        # own assets/ is meant.
        if "/assets/" in path:
            relative = "assets/" + path.split("/assets/", 1)[1]
        candidate = (self.directory / relative).resolve()
        if relative and candidate.is_relative_to(self.directory) and candidate.is_file():
            return FileResponse(candidate)
        return HTMLResponse(self._index, headers={"Cache-Control": "no-cache"})


def _pinned_index(html: str) -> str:
    """``index.html`` with its ``./`` paths made absolute and its base path pinned to ``/``."""
    html = _RELATIVE.sub(r'\1="/', html)
    return _HTML_TAG.sub(
        '<html data-openclaw-control-ui-base-path="" data-openclaw-terminal-enabled="false"',
        html,
        count=1,
    )
