"""The REST API of the Discord-shaped platform (``sim/discord.py``), in memory.

:class:`RestApi` answers the real channel's ``DiscordRest`` through an ``httpx2`` transport
(:meth:`RestApi.transport`, handed out by
:meth:`~turngate.sim.discord.DiscordPlatform.rest_transport`); nothing touches a network. A
request's trip is one loop iteration (``asyncio.sleep(0)``). Routes: ``GET /users/@me``,
``POST /channels/{id}/typing`` and ``POST /channels/{id}/messages`` (only to the people's DM
channels). A message with ``enforce_nonce`` and a nonce its channel has seen is answered with
the message again, not made twice (Discord's ``enforce_nonce``); the create-message limit is
:data:`BUCKET_LIMIT` per :data:`BUCKET_WINDOW_S` per channel, shown in ``X-RateLimit-*``
headers, and a send past it is a 429 (counted in :attr:`RestApi.rate_limited`).

What it needs of the platform is handed in: the platform's record, rng, parameters, fault
switch, its ``changed`` signal (set on every message made), its count of injected faults and
the set of the people's DM channels (the platform fills it).

Faults (only while the world's faults are on, probabilities from
:class:`~turngate.sim.channel.ChannelParams`): a send fails with a 500 (sometimes after the
message was made: the answer got lost), a 429 for that channel (``retry_after`` 0.5-5 s) or,
rarely, a 403 (refused for good).

Recorded for the checker (``sim/channel_world.py``): what each conversation saw
(``(nonce, content)`` once per nonce, in arrival order), the nonces refused for good, and
whatever the bot did that Discord forbids (``broken``: an unknown route, a channel the bot is
in no DM with, a message without content or nonce, a message over 2,000 characters or without
``enforce_nonce``).

Idealisation: nonces are remembered forever (Discord: a few minutes).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Set
from typing import Any
from urllib.parse import urlsplit

import httpx2

from turngate.channels.discord.rest import MESSAGE_CHARS_MAX
from turngate.sim.channel import ChannelParams, PlatformRecord
from turngate.sim.world import Faults

TOKEN = "sim-discord-token"
"""The bot's token (the gateway's IDENTIFY and RESUME check it too)."""
API_URL = "https://sim-discord/api/v10"
BOT_ID = "100000000000000001"
"""The bot's user id (the gateway's READY names it too)."""
MESSAGE_ID_BASE = 400_000_000_000_000_000
"""Message ids start above this: the people's (the gateway's), then the bot's (+ 10,000,000)."""
BUCKET = "sim-create-message"
BUCKET_LIMIT = 5
BUCKET_WINDOW_S = 2.0
"""The create-message limit per channel: this many per window (headers say so)."""


class RestApi:
    """Discord's REST API, in memory (see the module docstring). Faults only while ``faults.on``."""

    def __init__(
        self,
        *,
        record: PlatformRecord,
        rng: random.Random,
        params: ChannelParams,
        faults: Faults,
        changed: asyncio.Event,
        injected: Counter[str],
        dm_channels: Set[str],
    ) -> None:
        """``record``, ``rng``, ``params``, ``faults``, ``changed`` and ``injected`` are the
        platform's own; ``dm_channels`` is the platform's set of the people's DM channels."""
        self._record = record
        self._rng = rng
        self._params = params
        self._faults = faults
        self._changed = changed
        self._injected = injected
        self._dm_channels = dm_channels
        self.rate_limited = 0
        """429s answered because the bot sent past a limit its headers had shown."""
        self._nonces: dict[str, set[str]] = {}
        self._windows: dict[str, tuple[float, int]] = {}

    def transport(self) -> httpx2.AsyncBaseTransport:
        """This API as an ``httpx2`` transport, for one bot's ``DiscordRest`` (no network)."""
        return _Rest(self)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _broken(self, what: str) -> None:
        self._record.broken.append((self._now(), what))

    def answer(self, method: str, path: str, authorization: str, body: bytes) -> httpx2.Response:
        """Discord's answer to one REST request."""
        if authorization != f"Bot {TOKEN}":
            return _error(401, "401: Unauthorized", 0)
        route = path.removeprefix(urlsplit(API_URL).path)
        if method == "GET" and route == "/users/@me":
            return httpx2.Response(200, json={"id": BOT_ID, "username": "sim-bot", "bot": True})
        found = re.fullmatch(r"/channels/([0-9]+)/(messages|typing)", route)
        if method != "POST" or found is None:
            self._broken(f"{method} {path[:80]}: no such route")
            return _error(404, "404: Not Found", 0)
        channel_id, what = found[1], found[2]
        if channel_id not in self._dm_channels:
            self._broken(f"{method} {path[:80]}: a channel the bot is in no DM with")
            return _error(404, "Unknown Channel", 10003)
        if what == "typing":
            return httpx2.Response(204)
        return self._create_message(channel_id, body)

    def _create_message(self, channel_id: str, body: bytes) -> httpx2.Response:
        try:
            payload = json.loads(body)
            content, nonce = payload["content"], payload["nonce"]
        except (ValueError, TypeError, KeyError):
            self._broken(f"a message without content or nonce: {body[:80]!r}")
            return _error(400, "Invalid Form Body", 50035)
        if not isinstance(content, str) or not content or len(content) > MESSAGE_CHARS_MAX:
            self._broken(f"a message of {len(str(content))} characters to {channel_id}")
            return _error(400, "Invalid Form Body", 50035)
        enforced = payload.get("enforce_nonce") is True
        if not enforced:
            self._broken(f"a message without enforce_nonce to {channel_id}")
        seen = self._nonces.setdefault(channel_id, set())
        if enforced and nonce in seen:
            return httpx2.Response(200, json=self._message(channel_id, content, nonce))
        now = self._now()
        start, count = self._windows.get(channel_id, (now, 0))
        if now >= start + BUCKET_WINDOW_S:
            start, count = now, 0
        reset_after_s = start + BUCKET_WINDOW_S - now
        if count >= BUCKET_LIMIT:
            self.rate_limited += 1
            return _rate_limited(reset_after_s)
        self._windows[channel_id] = (start, count + 1)
        headers = {
            "X-RateLimit-Limit": str(BUCKET_LIMIT),
            "X-RateLimit-Remaining": str(BUCKET_LIMIT - count - 1),
            "X-RateLimit-Reset-After": f"{reset_after_s:.3f}",
            "X-RateLimit-Bucket": BUCKET,
        }
        if self._faults.on and self._rng.random() < self._params.p_send_fail:
            if self._rng.random() < self._params.p_refuse:
                self._injected["refused"] += 1
                self._record.refused.add(nonce)
                return _error(403, "Cannot send messages to this user", 50007)
            if self._rng.random() < self._params.p_retry_after:
                self._injected["rate_limited"] += 1
                return _rate_limited(self._rng.uniform(0.5, 5.0))
            self._injected["server_error"] += 1
            if self._rng.random() < 0.5:
                self._injected["answer_lost"] += 1
                self._take(channel_id, content, nonce)  # made, but the answer is lost
            return _error(500, "500: Internal Server Error", 0, headers)
        self._take(channel_id, content, nonce)
        return httpx2.Response(200, json=self._message(channel_id, content, nonce), headers=headers)

    def _take(self, channel_id: str, content: str, nonce: str) -> None:
        seen = self._nonces.setdefault(channel_id, set())
        if nonce not in seen:
            seen.add(nonce)
            self._record.seen[channel_id].append((nonce, content))
        self._changed.set()

    def _message(self, channel_id: str, content: str, nonce: str) -> dict[str, Any]:
        return {
            "id": str(MESSAGE_ID_BASE + 10_000_000 + len(self._record.seen[channel_id])),
            "channel_id": channel_id,
            "author": {"id": BOT_ID, "username": "sim-bot", "bot": True},
            "content": content,
            "nonce": nonce,
            "type": 0,
        }


class _Rest(httpx2.AsyncBaseTransport):
    """A :class:`RestApi` as an ``httpx2`` transport."""

    def __init__(self, api: RestApi) -> None:
        self._api = api

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        await asyncio.sleep(0)  # the request's trip
        authorization = request.headers.get("authorization", "")
        return self._api.answer(request.method, request.url.path, authorization, body)


def _error(
    status: int, message: str, code: int, headers: dict[str, str] | None = None
) -> httpx2.Response:
    return httpx2.Response(status, json={"message": message, "code": code}, headers=headers)


def _rate_limited(retry_after_s: float) -> httpx2.Response:
    body = {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False}
    headers = {
        "Retry-After": str(max(1, round(retry_after_s + 0.5))),
        "X-RateLimit-Scope": "user",
        "X-RateLimit-Limit": str(BUCKET_LIMIT),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after_s:.3f}",
        "X-RateLimit-Bucket": BUCKET,
    }
    return httpx2.Response(429, json=body, headers=headers)


__all__ = [
    "API_URL",
    "BOT_ID",
    "BUCKET",
    "BUCKET_LIMIT",
    "BUCKET_WINDOW_S",
    "MESSAGE_ID_BASE",
    "TOKEN",
    "RestApi",
]
