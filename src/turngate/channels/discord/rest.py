"""Discord's REST API for one bot: the few calls the channel makes, and its outbox sender.

Plain httpx2, for the reasons ``channels/telegram.py`` gives: retries and pauses belong to the
outbox worker, which needs every failure as a :class:`~turngate.errors.ChannelError` carrying
Discord's ``retry_after``; a library's request layer would bring its own.

Rate limits (:mod:`turngate.channels.discord.ratelimit`): before each request
:class:`DiscordRest` asks its :class:`~turngate.channels.discord.ratelimit.RateLimits` for a
slot. A short wait (up to ``wait_max_s``) is slept through; a longer one fails the call at once
with that ``retry_after_s``, so the outbox retries the message when the bucket has refilled
instead of holding a send open. A 429 is learnt and raised the same way. The limit of one
bucket for one channel is that conversation's alone (``conversation_only``: other channels'
messages go on); Discord's global limit pauses the whole bot.

Failures: no answer in :data:`CALL_DEADLINE_S`, a network error, a 5xx, an answer that is not
JSON, a 401 (the token; the gateway connection is what stops the channel for a bad token):
:class:`DiscordApiError`, tried again. Any other 4xx (403 Missing Access, 404 Unknown Channel,
50007 Cannot send messages to this user): :class:`DiscordRefusedError`, refused for good, with
Discord's message and numeric code.

The token goes in the ``Authorization`` header only, which httpx2 does not log; every error
text is blanked with :func:`~turngate.logs.redact` as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import json as jsonlib
import logging
import math
import re
from typing import Any

import httpx2

from turngate import __version__
from turngate.channels.discord.ratelimit import RESET_AFTER_MAX_S, RateLimits
from turngate.channels.http import network_transport
from turngate.core.clock import Clock
from turngate.errors import ChannelError, DeliveryRefusedError
from turngate.logs import redact

log = logging.getLogger("turngate.channels")

API_URL_DEFAULT = "https://discord.com/api/v10"
USER_AGENT = f"DiscordBot (https://github.com/turngate/turngate, {__version__})"
"""Discord asks bots for this shape of User-Agent."""
MESSAGE_CHARS_MAX = 2000
"""Discord's longest message content, in characters (code points, as ``len`` counts)."""
NONCE_CHARS_MAX = 25
CALL_DEADLINE_S = 15.0
"""How long one request may take, from sending to the end of the answer."""
WAIT_MAX_S = 5.0
"""The longest rate limit wait a request sleeps through before failing with ``retry_after``."""
WAITS_MAX = 8
"""Rate limit waits one request takes at most (a bucket others keep emptying)."""
RETRY_AFTER_DEFAULT_S = 1.0
"""The pause after a 429 that does not say how long."""
DESCRIPTION_CHARS_MAX = 300
ROUTE_CREATE_MESSAGE = "POST /channels/{channel_id}/messages"
ROUTE_TYPING = "POST /channels/{channel_id}/typing"
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
_RETRYABLE_4XX = frozenset({401, 408, 429})
"""4xx answers that say nothing against the request itself."""


class DiscordApiError(ChannelError):
    """A call failed and may pass later. ``status`` is Discord's HTTP status (None: no
    answer at all)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        conversation_only: bool = False,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, conversation_only=conversation_only)
        self.status = status


class DiscordRefusedError(DeliveryRefusedError):
    """Discord refused the request for good (a 4xx with its JSON error): ``status``, and
    ``discord_code`` (e.g. 50007, 10003) when it gave one."""

    def __init__(self, message: str, *, status: int, discord_code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.discord_code = discord_code


class DiscordRest:
    """Calls Discord's REST API as one bot (see the module docstring)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        clock: Clock,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        wait_max_s: float = WAIT_MAX_S,
    ) -> None:
        """``api_url`` is the API's base (:data:`API_URL_DEFAULT`); ``transport`` replaces
        the network (tests pass a ``MockTransport``)."""
        if not token or any(ch.isspace() for ch in token) or not token.isprintable():
            # Said without the value: an unusable token must not reach a header or a log.
            raise ValueError("the Discord bot token is empty or holds whitespace")
        self._clock = clock
        self._secrets = (token,)
        self._wait_max_s = wait_max_s
        self.limits = RateLimits()
        """What this bot has learnt of Discord's rate limits."""
        self._client = httpx2.AsyncClient(
            base_url=api_url.rstrip("/") + "/",
            headers={"Authorization": f"Bot {token}", "User-Agent": USER_AGENT},
            transport=transport or network_transport(api_url),
            timeout=None,  # the deadline is asyncio's, around the whole call
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        route: str,
        major: str,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """Send ``method path`` (``path`` under the API's base, ``/channels/1/messages``)
        once its rate limit allows; the answer's JSON, or None when it has no body.
        ``route`` is the path's template with the method, ``major`` its major parameter
        (the channel id; ``""`` when none). Raises :class:`DiscordApiError` (tried again)
        or :class:`DiscordRefusedError` (refused for good)."""
        await self._wait_for_slot(route, major)
        try:
            async with asyncio.timeout(CALL_DEADLINE_S):
                response = await self._client.request(method, path, json=json)
        except TimeoutError as exc:
            raise DiscordApiError(f"discord {route}: no answer in {CALL_DEADLINE_S:g}s") from exc
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DiscordApiError(redact(f"discord {route}: {text}", self._secrets)) from exc
        self.limits.observe(route, major, response.headers, self._clock.now())
        return self._answer(route, major, response)

    async def create_message(self, channel_id: str, content: str, nonce: str) -> None:
        """Post ``content`` in ``channel_id``. With ``enforce_nonce``, Discord answers a
        repeated ``nonce`` (within a few minutes) with the message it already made instead of
        a second one: see :func:`nonce_of`."""
        body = {
            "content": content,
            "nonce": nonce,
            "enforce_nonce": True,
            # The text is a model's: whatever it writes (quoting "@everyone", a role, a user),
            # it must not ping anyone. An empty parse list turns every mention into plain text.
            "allowed_mentions": {"parse": []},
        }
        path = f"/channels/{_snowflake(channel_id)}/messages"
        await self.request("POST", path, route=ROUTE_CREATE_MESSAGE, major=channel_id, json=body)

    async def trigger_typing(self, channel_id: str) -> None:
        """Show "typing..." in ``channel_id`` (for about ten seconds, or until a message)."""
        path = f"/channels/{_snowflake(channel_id)}/typing"
        await self.request("POST", path, route=ROUTE_TYPING, major=channel_id)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _wait_for_slot(self, route: str, major: str) -> None:
        """Sleep through a short rate limit wait; fail at once with ``retry_after_s`` when
        the wait, or all of them together, would pass ``wait_max_s``."""
        waited_s = 0.0
        for _ in range(WAITS_MAX):
            wait = self.limits.reserve(route, major, self._clock.now())
            if wait.wait_s <= 0.0:
                return
            if waited_s + wait.wait_s > self._wait_max_s:
                break
            log.debug("discord %s: waiting %.3fs for its rate limit", route, wait.wait_s)
            await asyncio.sleep(wait.wait_s)
            waited_s += wait.wait_s
        whose = "the whole bot" if wait.is_global else "this channel"
        raise DiscordApiError(
            f"discord {route}: rate limited for {wait.wait_s:.3g}s ({whose})",
            retry_after_s=wait.wait_s,
            conversation_only=not wait.is_global,
        )

    def _answer(self, route: str, major: str, response: httpx2.Response) -> Any:
        """The JSON of a successful answer, or the error it stands for."""
        status = response.status_code
        if status == 429:
            raise self._rate_limited(route, major, response)
        if status == 401:
            raise DiscordApiError(f"discord {route}: 401, the bot token was refused", status=401)
        if 200 <= status < 300:
            if status == 204 or not response.content:
                return None
            body = _json(response)
            if body is None:
                raise DiscordApiError(f"discord {route}: HTTP {status}, not JSON", status=status)
            return body
        body = _json(response)
        if 400 <= status < 500 and status not in _RETRYABLE_4XX and isinstance(body, dict):
            raise self._refused(route, status, body)
        raise DiscordApiError(f"discord {route}: HTTP {status}", status=status)

    def _rate_limited(self, route: str, major: str, response: httpx2.Response) -> ChannelError:
        """Learn a 429 and say it as an error. An answer without Discord's JSON comes from
        in front of Discord (Cloudflare limits the bot's address): the whole bot waits."""
        body = _json(response)
        headers = response.headers
        is_global = (
            not isinstance(body, dict)
            or body.get("global") is True
            or headers.get("x-ratelimit-global", "").lower() == "true"
            or headers.get("x-ratelimit-scope", "").lower() == "global"
        )
        retry_after_s = _retry_after_s(body, headers)
        self.limits.limited(route, major, retry_after_s, global_=is_global, now=self._clock.now())
        whose = "the whole bot" if is_global else "this channel"
        return DiscordApiError(
            f"discord {route}: rate limited for {retry_after_s:.3g}s ({whose})",
            status=429,
            retry_after_s=retry_after_s,
            conversation_only=not is_global,
        )

    def _refused(self, route: str, status: int, body: dict[str, Any]) -> DiscordRefusedError:
        code = body.get("code")
        discord_code = code if isinstance(code, int) and not isinstance(code, bool) else None
        description = str(body.get("message") or "no message")
        errors = body.get("errors")
        if errors:  # which field of the request was wrong (400 Invalid Form Body)
            description += " " + jsonlib.dumps(errors, separators=(",", ":"))
        if discord_code is not None:
            description += f" (code {discord_code})"
        description = redact(description[:DESCRIPTION_CHARS_MAX], self._secrets)
        return DiscordRefusedError(
            f"discord {route}: {status} {description}", status=status, discord_code=discord_code
        )


class DiscordSender:
    """Puts one part of a reply into one Discord channel (DM or guild channel): the outbox's
    :class:`~turngate.channels.outbox.Sender`. The conversation is the channel's id."""

    def __init__(self, rest: DiscordRest) -> None:
        self._rest = rest

    @property
    def limit(self) -> int:
        return MESSAGE_CHARS_MAX

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        """Post ``text``; the part's key becomes the message's nonce (:func:`nonce_of`)."""
        await self._rest.create_message(conversation, text, nonce_of(part_key))


def nonce_of(part_key: str) -> str:
    """The message nonce of the outbox part ``part_key``: the first 25 hex digits of its
    SHA-256 (Discord takes at most 25 characters). The same part always gets the same nonce,
    so a part sent again after a crash, before its progress was recorded, is answered by
    Discord with the message it already made (``enforce_nonce``) instead of showing twice.
    Discord remembers nonces for a few minutes only: a part resent later shows again."""
    return hashlib.sha256(part_key.encode()).hexdigest()[:NONCE_CHARS_MAX]


def _snowflake(channel_id: str) -> str:
    """``channel_id`` if it is a Discord id; it goes in a URL path, so nothing else may."""
    if not _SNOWFLAKE.fullmatch(channel_id):
        raise DeliveryRefusedError(f"discord: {channel_id[:40]!r} is not a channel id")
    return channel_id


def _json(response: httpx2.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after_s(body: Any, headers: httpx2.Headers) -> float:
    """How long a 429 says to wait: its JSON's ``retry_after``, else ``Retry-After``, else
    ``X-RateLimit-Reset-After``; within [0, :data:`RESET_AFTER_MAX_S`]."""
    candidates: list[object] = [
        body.get("retry_after") if isinstance(body, dict) else None,
        headers.get("retry-after"),
        headers.get("x-ratelimit-reset-after"),
    ]
    for candidate in candidates:
        if isinstance(candidate, bool) or not isinstance(candidate, int | float | str):
            continue
        try:
            value = float(candidate)
        except ValueError:
            continue
        if math.isfinite(value):
            return min(max(value, 0.0), RESET_AFTER_MAX_S)
    return RETRY_AFTER_DEFAULT_S


__all__ = [
    "API_URL_DEFAULT",
    "MESSAGE_CHARS_MAX",
    "DiscordApiError",
    "DiscordRefusedError",
    "DiscordRest",
    "DiscordSender",
    "nonce_of",
]
