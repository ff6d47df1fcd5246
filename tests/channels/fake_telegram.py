"""A fake Telegram Bot API on 127.0.0.1, for the Telegram channel's tests.

It serves ``/bot<token>/getMe``, ``getUpdates``, ``sendMessage`` and ``sendChatAction`` under
uvicorn, in the test's own event loop (so that its state and :class:`Signal` are shared with
the test), on a socket bound before the server starts: a client may connect at once.

Like Telegram: ``getUpdates`` confirms (forgets) every update below the ``offset`` it is given,
answers at once when updates are pending, else holds the request until one is queued or its
``timeout`` passes; a wrong token gets 401; a message is at most 4,096 UTF-16 code units
after its entities are parsed; 5xx answers come from the front proxy, as HTML.

Scriptable: :meth:`FakeTelegram.message` queues a text message (private or group, replying to
the bot or not), :meth:`FakeTelegram.update` any update; ``send_failures`` and
``poll_failures`` answer the next calls with an error; ``refuse_entities_marker`` makes a
formatted message holding it unparsable; ``missing_chats`` and ``blocked_chats`` refuse
messages to those chats. Every ``sendMessage`` is recorded in ``attempts`` (with its loop
time), and the ones taken in ``sent``.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.secrets import TELEGRAM_BOT_TOKEN
from turngate.channels.split import utf16_length
from turngate.gateway.server import listening_socket

TOKEN = TELEGRAM_BOT_TOKEN
"""The token the fake accepts."""
BOT_ID = 123456789
BOT_USERNAME = "turngate_test_bot"
SERVER_STOP_S = 10.0


class Signal:
    """Something changed: wakes every task waiting for a condition to hold."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, holds: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Return once ``holds()``; TimeoutError if it does not within ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not holds():
                await self._changed.wait()


@dataclass(frozen=True)
class Failure:
    """An error answer: ``status`` with Telegram's ``description`` (and ``retry_after``)."""

    status: int
    description: str
    retry_after: int | None = None


@dataclass(frozen=True)
class Sent:
    """A ``sendMessage`` the fake received."""

    chat_id: str
    text: str
    parse_mode: str | None
    at: float
    """The event loop's time when it arrived."""


@dataclass
class FakeTelegram:
    """The fake's state and script (see the module docstring)."""

    token: str = TOKEN
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Updates not yet confirmed by an offset."""
    polls: list[int | None] = field(default_factory=list)
    """The offset of every ``getUpdates``, in order (None: none given)."""
    poll_times: list[float] = field(default_factory=list)
    """The event loop's time when each ``getUpdates`` arrived."""
    poll_failures: list[Failure] = field(default_factory=list)
    send_failures: list[Failure] = field(default_factory=list)
    refuse_entities_marker: str | None = None
    missing_chats: set[str] = field(default_factory=set)
    blocked_chats: set[str] = field(default_factory=set)
    attempts: list[Sent] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)
    signal: Signal = field(default_factory=Signal)
    confirm_offsets: bool = True
    """False: an ``offset`` confirms nothing (as if the poll carrying it never reached
    Telegram: the bot died first), so every update comes again."""
    conflicts: int = 0
    """``getUpdates`` refused because another was in flight (two pollers of one bot: Telegram
    answers ``409 Conflict``)."""
    _polling: int = 0
    _poll_generation: int = 0
    _update_ids: int = 0
    _message_ids: dict[int, int] = field(default_factory=dict)
    _closing: bool = False

    def message(
        self,
        chat_id: int,
        text: str,
        *,
        from_id: int | None = None,
        chat_type: str = "private",
        reply_to_bot: bool = False,
    ) -> int:
        """Queue a text message from ``from_id`` (the chat's own id by default) in
        ``chat_id``; returns its message id (numbered per chat, like Telegram's)."""
        message_id = self._message_ids.get(chat_id, 0) + 1
        self._message_ids[chat_id] = message_id
        sender = from_id if from_id is not None else chat_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": {"id": sender, "is_bot": False, "first_name": "Ada", "last_name": "L"},
            "chat": {"id": chat_id, "type": chat_type},
            "date": 1_700_000_000,
            "text": text,
        }
        if reply_to_bot:
            message["reply_to_message"] = {
                "message_id": 1,
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot"},
                "chat": {"id": chat_id, "type": chat_type},
                "text": "an earlier reply",
            }
        self.update({"message": message})
        return message_id

    def update(self, content: dict[str, Any]) -> int:
        """Queue an update with ``content`` (``{"message": ...}``, ``{"edited_message": ...}``);
        returns its update id."""
        self._update_ids += 1
        self.updates.append({"update_id": self._update_ids, **content})
        self.signal.notify()
        return self._update_ids

    def close(self) -> None:
        """Answer every held ``getUpdates`` now (the server is stopping)."""
        self._closing = True
        self.signal.notify()

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )

    async def _endpoint(self, request: Request) -> Response:
        params: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        if body:
            params.update(json.loads(body))
        if request.path_params["token"] != self.token:
            # Telegram does not echo the token; this fake does, to prove it gets blanked.
            return _error(Failure(401, f"Unauthorized: no bot {request.path_params['token']}"))
        method = request.path_params["method"]
        try:
            if method == "getMe":
                bot = {"id": BOT_ID, "is_bot": True, "first_name": "Test", "username": BOT_USERNAME}
                return _ok(bot)
            if method == "getUpdates":
                return await self._get_updates(params)
            if method == "sendMessage":
                return self._send_message(params)
            if method == "sendChatAction":
                self.actions.append((str(params["chat_id"]), str(params["action"])))
                return _ok(True)
            return _error(Failure(404, "Not Found"))
        finally:
            self.signal.notify()

    async def _get_updates(self, params: dict[str, Any]) -> Response:
        offset = int(params["offset"]) if "offset" in params else None
        self.polls.append(offset)
        self.poll_times.append(asyncio.get_running_loop().time())
        self.signal.notify()  # now, not when this long poll is answered
        if self.poll_failures:
            return _error(self.poll_failures.pop(0))
        if self._polling:
            # As Telegram does: the poll in flight is cut off (409), this one goes on.
            self.conflicts += 1
        self._poll_generation += 1
        generation = self._poll_generation
        if offset is not None and self.confirm_offsets:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self._polling += 1
        try:
            with suppress(TimeoutError):  # a long poll that saw nothing answers an empty list
                await self.signal.wait_until(
                    lambda: (
                        bool(self.updates) or self._closing or self._poll_generation != generation
                    ),
                    float(params.get("timeout", 0)),
                )
        finally:
            self._polling -= 1
        if self._poll_generation != generation:
            return _error(
                Failure(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only"
                    " one bot instance is running",
                )
            )
        return _ok(self.updates[:100])

    def _send_message(self, params: dict[str, Any]) -> Response:
        chat_id, text = str(params["chat_id"]), str(params["text"])
        parse_mode = params.get("parse_mode")
        sent = Sent(chat_id, text, parse_mode, asyncio.get_running_loop().time())
        self.attempts.append(sent)
        if self.send_failures:
            return _error(self.send_failures.pop(0))
        if parse_mode and self.refuse_entities_marker and self.refuse_entities_marker in text:
            return _error(Failure(400, "Bad Request: can't parse entities: Unsupported start tag"))
        if chat_id in self.missing_chats:
            return _error(Failure(400, "Bad Request: chat not found"))
        if chat_id in self.blocked_chats:
            return _error(Failure(403, "Forbidden: bot was blocked by the user"))
        visible = html.unescape(re.sub(r"<[^>]*>", "", text)) if parse_mode == "HTML" else text
        if not visible.strip():
            return _error(Failure(400, "Bad Request: message text is empty"))
        if utf16_length(visible) > 4096:
            return _error(Failure(400, "Bad Request: message is too long"))
        self.sent.append(sent)
        return _ok({"message_id": len(self.sent), "chat": {"id": chat_id}, "text": visible})


def _ok(result: object) -> Response:
    return JSONResponse({"ok": True, "result": result})


def _error(failure: Failure) -> Response:
    if failure.status >= 500:  # the front proxy's page, not a Bot API answer
        page = f"<html><body><h1>{failure.status} {failure.description}</h1></body></html>"
        return Response(page, status_code=failure.status, media_type="text/html")
    answer: dict[str, Any] = {
        "ok": False,
        "error_code": failure.status,
        "description": failure.description,
    }
    if failure.retry_after is not None:
        answer["parameters"] = {"retry_after": failure.retry_after}
    return JSONResponse(answer, status_code=failure.status)


@asynccontextmanager
async def running(fake: FakeTelegram) -> AsyncIterator[str]:
    """Serve ``fake`` on an ephemeral loopback port in this loop; yield its base URL."""
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(),
        # No logging configuration of uvicorn's own: it would be global to the test session
        # (uvicorn's loggers would stop propagating), and other tests read those lines.
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        fake.close()
        server.should_exit = True
        try:
            async with asyncio.timeout(SERVER_STOP_S):
                await task
        finally:
            sock.close()
