"""The REST half of the fake Discord (``fake_discord.py``): Discord's API under ``/api/v10``.

:class:`FakeRest` answers ``GET users/@me`` and ``gateway/bot``, ``POST
channels/{id}/messages`` (2,000 characters at most; ``enforce_nonce`` answers a nonce seen on
the channel with the message it made; a per-channel bucket whose headers every JSON answer
carries) and ``POST channels/{id}/typing``; a wrong ``Authorization: Bot <token>`` gets 401;
5xx answers come from the front proxy, as HTML (:func:`failure_response`, which answers the
gateway's refused handshakes too).

It also makes Discord's objects for both halves: the bot's user (:func:`bot_user`) and message
objects with snowflake ids of one sequence (:meth:`FakeRest.message_object`), the people's that
the gateway dispatches as well as the bot's. Each message the bot makes is handed to
``on_made`` (the gateway echoes it, when told to).

Scriptable: :meth:`FakeRest.rate_limit_next`, ``send_failures``, ``missing_channels``,
``forbidden_channels``. Records: ``attempts``, ``sent``, ``early_requests``, ``rate_limits``,
``typing``; ``signal`` is notified at every change.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.channels.fake_telegram import Signal
from tests.secrets import DISCORD_BOT_TOKEN

TOKEN = DISCORD_BOT_TOKEN
"""The bot token the fake accepts (its first part is the bot id in base64, as Discord's are)."""
BOT_ID = "1100000000000000001"
BOT_USERNAME = "turngate-test-bot"
API_PATH = "/api/v10"
MESSAGE_CHARS_MAX = 2000
NONCE_CHARS_MAX = 25
BUCKET_SIZE_DEFAULT = 10_000
BUCKET_WINDOW_S_DEFAULT = 5.0
BUCKET_HASH = "f4ke0b0c4e7c1d2a"
"""The messages route's ``X-RateLimit-Bucket``: one hash for every channel, as Discord's (the
channel id, the route's major parameter, tells the limits apart)."""
EARLY_TOLERANCE_S = 0.001
"""A request this close to the end of a limit is not early (timer and clock granularity)."""
_NOT_JSON = object()
"""A request body that is not JSON."""
DISCORD_EPOCH_MS = 1_420_070_400_000
SNOWFLAKE_BASE_MS = 1_767_225_600_000 - DISCORD_EPOCH_MS
"""Ids the fake makes are snowflakes of 2026-01-01 plus one millisecond each."""


@dataclass(frozen=True)
class Attempt:
    """A ``POST channels/{id}/messages`` the fake received, and the status it answered."""

    channel_id: str
    content: Any
    nonce: str | None
    at: float
    status: int
    body: Any


@dataclass(frozen=True)
class Sent:
    """A message the fake made."""

    channel_id: str
    content: str
    nonce: str | None
    at: float
    message_id: str
    reference: str | None = None
    """The ``message_reference.message_id`` it replies to."""
    allowed_mentions: Any = None


@dataclass(frozen=True)
class RateLimit:
    """A 429 the fake answered (scripted or from a spent bucket)."""

    channel_id: str
    retry_after_s: float
    global_: bool
    at: float
    ends_at: float


@dataclass(frozen=True)
class Failure:
    """A scripted answer: 5xx as the front proxy's HTML page, else Discord's JSON error."""

    status: int
    code: int = 0
    message: str = "Internal Server Error"


@dataclass(frozen=True)
class Typing:
    channel_id: str
    at: float


@dataclass
class _Bucket:
    window_start: float
    used: int = 0


def bot_user() -> dict[str, Any]:
    return {
        "id": BOT_ID,
        "username": BOT_USERNAME,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": True,
    }


def timestamp(snowflake: str) -> str:
    """The ISO 8601 time a snowflake id was made at."""
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class FakeRest:
    """The fake's REST API, its state and script (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str,
        signal: Signal,
        gateway_url: Callable[[], str],
        on_made: Callable[[dict[str, Any]], None],
        bucket_size: int = BUCKET_SIZE_DEFAULT,
        bucket_window_s: float = BUCKET_WINDOW_S_DEFAULT,
    ) -> None:
        """``gateway_url`` is what ``gateway/bot`` names; ``on_made`` is told of every message
        the bot makes (after it is recorded in ``sent``)."""
        self.token = token
        self.signal = signal
        self.bucket_size = bucket_size
        self.bucket_window_s = bucket_window_s
        self.missing_channels: set[str] = set()
        self.forbidden_channels: set[str] = set()
        self.send_failures: list[Failure] = []
        self.attempts: list[Attempt] = []
        self.sent: list[Sent] = []
        self.early_requests: list[Attempt] = []
        """Requests on a channel (or, after a global 429, on any) before a 429's time ran out."""
        self.rate_limits: list[RateLimit] = []
        self.typing: list[Typing] = []
        self.channel_guilds: dict[str, str] = {}
        """The guild of each channel a test message named (the bot's messages there carry it)."""
        self._gateway_url = gateway_url
        self._on_made = on_made
        self._ids = itertools.count(1)
        self._scripted: dict[str, list[tuple[float, bool]]] = {}
        self._limit_ends: dict[str, float] = {}
        self._global_end = -math.inf
        self._buckets: dict[str, _Bucket] = {}
        self._made: dict[str, dict[str, Any]] = {}
        self._nonces: dict[tuple[str, str], dict[str, Any]] = {}

    def rate_limit_next(
        self, channel_id: str, retry_after_s: float, *, global_: bool = False
    ) -> None:
        """Answer the next message POST on ``channel_id`` with 429 for ``retry_after_s``."""
        self._scripted.setdefault(channel_id, []).append((retry_after_s, global_))

    def routes(self) -> list[Route]:
        """The API's routes, for the fake's app."""
        api = API_PATH
        every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route(f"{api}/users/@me", self._me, methods=["GET"]),
            Route(f"{api}/gateway/bot", self._gateway_bot, methods=["GET"]),
            Route(f"{api}/channels/{{channel_id}}/messages", self._create, methods=["POST"]),
            Route(f"{api}/channels/{{channel_id}}/typing", self._typing, methods=["POST"]),
            Route(f"{api}/{{rest:path}}", self._not_found, methods=every),
        ]

    # Discord's objects, for both halves.

    def message_object(
        self,
        channel_id: str,
        guild_id: str | None,
        author: dict[str, Any],
        content: str,
        mentions: list[Any],
    ) -> dict[str, Any]:
        """A new message (``guild_id`` None: in a DM)."""
        message_id = self._snowflake()
        message: dict[str, Any] = {
            "id": message_id,
            "type": 0,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": timestamp(message_id),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "flags": 0,
        }
        if guild_id is not None:
            message["guild_id"] = guild_id
        return message

    def bot_message_in(self, channel_id: str) -> dict[str, Any]:
        """The bot's latest message in the channel (one made up if it sent none); the
        channel's guild is the last one a test message in it named."""
        for sent in reversed(self.sent):
            if sent.channel_id == channel_id:
                return self._made[sent.message_id]
        return self._made_message(channel_id, "an earlier reply", None, None)

    def _snowflake(self) -> str:
        return str((SNOWFLAKE_BASE_MS + next(self._ids)) << 22)

    def _made_message(
        self, channel_id: str, content: str, nonce: Any, reference: Any
    ) -> dict[str, Any]:
        """A message by the bot, remembered by id."""
        guild_id = self.channel_guilds.get(channel_id)
        made = self.message_object(channel_id, guild_id, bot_user(), content, [])
        if nonce is not None:
            made["nonce"] = nonce
        if reference:
            made.update(type=19, message_reference=reference)
        self._made[made["id"]] = made
        return made

    # The routes.

    async def _me(self, request: Request) -> Response:
        return _unauthorized() if not self._authorized(request) else JSONResponse(bot_user())

    async def _gateway_bot(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return JSONResponse({"url": self._gateway_url(), "shards": 1, "session_start_limit": limit})

    async def _not_found(self, request: Request) -> Response:
        return JSONResponse({"message": "404: Not Found", "code": 0}, status_code=404)

    async def _typing(self, request: Request) -> Response:
        channel_id = request.path_params["channel_id"]
        self.typing.append(Typing(channel_id, asyncio.get_running_loop().time()))
        self.signal.notify()
        if not self._authorized(request):
            return _unauthorized()
        if channel_id in self.missing_channels:
            return _error(404, 10003, "Unknown Channel")
        if channel_id in self.forbidden_channels:
            return _error(403, 50013, "Missing Permissions")
        return Response(status_code=204)

    async def _create(self, request: Request) -> Response:
        channel_id = request.path_params["channel_id"]
        now = asyncio.get_running_loop().time()
        try:
            body: Any = json.loads(await request.body())
        except (ValueError, RecursionError):
            body = _NOT_JSON
        fields = body if isinstance(body, dict) else {}
        nonce = fields.get("nonce")
        early = now + EARLY_TOLERANCE_S < self._limit_end(channel_id)
        response = self._answer(request, channel_id, body, now, early)
        attempt = Attempt(
            channel_id,
            fields.get("content"),
            str(nonce) if isinstance(nonce, str | int) else None,
            now,
            response.status_code,
            body,
        )
        self.attempts.append(attempt)
        if early:
            self.early_requests.append(attempt)
        self.signal.notify()
        return response

    def _answer(
        self, request: Request, channel_id: str, body: Any, now: float, early: bool
    ) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        if early:
            end = self._limit_end(channel_id)
            return self._too_many(channel_id, end - now, self._global_end > now, now, False)
        scripted = self._scripted.get(channel_id)
        if scripted:
            retry_after_s, global_ = scripted.pop(0)
            return self._too_many(channel_id, retry_after_s, global_, now, True)
        if self.send_failures:
            return failure_response(self.send_failures.pop(0))
        allowed, remaining, reset_after_s = self._take(channel_id, now)
        if not allowed:
            return self._too_many(channel_id, reset_after_s, False, now, True)
        headers = self._headers(remaining, reset_after_s)
        problem = self._refusal(channel_id, body)
        if problem is not None:
            problem.headers.update(headers)
            return problem
        nonce = body.get("nonce")
        key = (channel_id, str(nonce))
        if nonce is not None and body.get("enforce_nonce") and key in self._nonces:
            return JSONResponse(self._nonces[key], headers=headers)  # Discord's dedupe
        reference = body.get("message_reference")
        ref_id = reference.get("message_id") if isinstance(reference, dict) else None
        made = self._made_message(channel_id, body["content"], nonce, reference)
        if nonce is not None:
            self._nonces[key] = made
        sent = Sent(
            channel_id,
            body["content"],
            None if nonce is None else str(nonce),
            now,
            made["id"],
            str(ref_id) if ref_id is not None else None,
            body.get("allowed_mentions"),
        )
        self.sent.append(sent)
        self._on_made(made)
        return JSONResponse(made, headers=headers)

    def _refusal(self, channel_id: str, body: Any) -> Response | None:
        """Discord's 4xx for this message body, if any."""
        if not isinstance(body, dict):
            return _error(400, 50109, "The request body contains invalid JSON.")
        if channel_id in self.missing_channels:
            return _error(404, 10003, "Unknown Channel")
        if channel_id in self.forbidden_channels:
            return _error(403, 50013, "Missing Permissions")
        content, nonce = body.get("content"), body.get("nonce")
        if content is not None and not isinstance(content, str):
            return _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if not content or not content.strip():
            return _error(400, 50006, "Cannot send an empty message")
        if len(content) > MESSAGE_CHARS_MAX:
            message = f"Must be {MESSAGE_CHARS_MAX} or fewer in length."
            return _form_error("content", "BASE_TYPE_MAX_LENGTH", message)
        if "message_reference" in body and not isinstance(body["message_reference"], dict):
            return _form_error("message_reference", "MODEL_TYPE_CONVERT", "Must be an object.")
        if nonce is not None and (
            not isinstance(nonce, str | int) or len(str(nonce)) > NONCE_CHARS_MAX
        ):
            return _form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        return None

    # Authorization and rate limits.

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bot {self.token}"

    def _limit_end(self, channel_id: str) -> float:
        return max(self._limit_ends.get(channel_id, -math.inf), self._global_end)

    def _take(self, channel_id: str, now: float) -> tuple[bool, int, float]:
        """Take a slot in the channel's bucket: whether there was one, how many are left, and
        in how many seconds the bucket refills."""
        bucket = self._buckets.get(channel_id)
        if bucket is None or now >= bucket.window_start + self.bucket_window_s:
            bucket = self._buckets[channel_id] = _Bucket(now)
        allowed = bucket.used < self.bucket_size
        if allowed:
            bucket.used += 1
        reset_after_s = bucket.window_start + self.bucket_window_s - now
        return allowed, self.bucket_size - bucket.used, reset_after_s

    def _headers(self, remaining: int, reset_after_s: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.bucket_size),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after_s:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after_s:.3f}",
            "X-RateLimit-Bucket": BUCKET_HASH,
        }

    def _too_many(
        self, channel_id: str, retry_after_s: float, global_: bool, now: float, record: bool
    ) -> Response:
        if record:
            end = now + retry_after_s
            self.rate_limits.append(RateLimit(channel_id, retry_after_s, global_, now, end))
            if global_:
                self._global_end = max(self._global_end, end)
            else:
                self._limit_ends[channel_id] = max(self._limit_ends.get(channel_id, end), end)
        headers = self._headers(0, retry_after_s)
        headers["Retry-After"] = str(math.ceil(retry_after_s))
        headers["X-RateLimit-Scope"] = "global" if global_ else "user"
        if global_:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after_s, 3),
            "global": global_,
        }
        return JSONResponse(body, status_code=429, headers=headers)


def failure_response(failure: Failure) -> Response:
    """A scripted failure's answer: the front proxy's HTML page for a 5xx, else Discord's JSON."""
    if failure.status >= 500:  # the front proxy's page, not a Discord answer
        page = f"<html><body><h1>{failure.status} {failure.message}</h1></body></html>"
        return Response(page, status_code=failure.status, media_type="text/html")
    return _error(failure.status, failure.code, failure.message)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _form_error(name: str, code: str, message: str) -> JSONResponse:
    errors = {name: {"_errors": [{"code": code, "message": message}]}}
    answer = {"code": 50035, "errors": errors, "message": "Invalid Form Body"}
    return JSONResponse(answer, status_code=400)


def _unauthorized() -> JSONResponse:
    return JSONResponse({"message": "401: Unauthorized", "code": 0}, status_code=401)
