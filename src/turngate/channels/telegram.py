"""Telegram: one bot over the Bot API's long polling, under the connection supervisor.

**Why plain httpx2, not python-telegram-bot or aiogram.** We use four endpoints (``getMe``,
``getUpdates``, ``sendMessage``, ``sendChatAction``) and we must own the parts those libraries
own: the polling loop runs under our :class:`~turngate.channels.supervisor.Supervisor` (one
generation per attempt, our backoff, our states in ``/health``), the offset advances only
after :meth:`Inbox.accept <turngate.channels.base.Inbox.accept>` returned, and retries and
rate limits belong to the outbox worker, which needs every failure as a
:class:`~turngate.errors.ChannelError` with the platform's ``retry_after``. PTB's and
aiogram's request layers bring their own retry loops, flood-wait sleeps, timeouts and update
dispatch; used as "a client only" they would still wrap every call in their exceptions, and
log request URLs (with the token in them) through their own loggers. A hundred lines of
httpx2 say exactly what we do.

Inbound: ``getMe`` (401/404: :class:`~turngate.errors.ChannelRefusedError`, the supervisor
stops), then ``getUpdates`` in a loop, each under a deadline of ``poll_timeout`` plus a margin.
Each text message becomes an :class:`~turngate.channels.base.InboundMessage` whose id is
``<chat>:<message>`` (Telegram numbers messages per chat); the offset moves past an update
only once ``accept`` returned, and is committed to Telegram by the next ``getUpdates``. When
``accept`` fails, the generation ends without moving it: after the backoff the same update
comes again, with the same message id, and the inbox deduplicates. Updates without text are
skipped. In groups, ``groups`` decides: ``mention`` takes messages that name ``@<bot>`` (the
mention is cut from the text) or reply to the bot, ``all`` takes every one, ``off`` none.
409 (another poller with this token, or a webhook) and 5xx end the generation (WARNING, then
backoff); a 429 pauses the loop for its ``retry_after``.

Outbound (:class:`TelegramSender`): parts of at most 4,096 UTF-16 code units, each sent with
``parse_mode=HTML`` after :func:`telegram_html` turned the model's Markdown into Telegram's
HTML. If Telegram cannot parse the entities, the same part goes again as plain text, once.
429 and 5xx, timeouts and network errors are a :class:`~turngate.errors.ChannelError` (with
``retry_after_s``), other 4xx (chat not found, bot blocked) a
:class:`~turngate.errors.DeliveryRefusedError`.

The token is in every Bot API URL's path. Requests are built with ``bot<TOKEN>`` as a
placeholder and :class:`_TokenTransport` writes the token in just before the socket: httpx2
logs every request's URL at INFO, and those lines, like every error text here (blanked with
:func:`~turngate.logs.redact` as well), never see it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from typing import Any
from urllib.parse import quote

import httpx2

from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.generation import Generation
from turngate.channels.http import network_transport
from turngate.channels.split import utf16_length
from turngate.channels.supervisor import (
    LOST_ERRORS,
    ConnectionSnapshot,
    Supervisor,
    SupervisorSettings,
)
from turngate.channels.telegram_format import telegram_html
from turngate.config_channels import ChannelConfig
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ChannelError, ChannelRefusedError, DeliveryRefusedError, TurngateError
from turngate.logs import redact

log = logging.getLogger("turngate.channels")

API_URL_DEFAULT = "https://api.telegram.org"
TEXT_UTF16_MAX = 4096
"""Telegram's longest message, in UTF-16 code units after entities are parsed."""
POLL_MARGIN_S = 10.0
"""A ``getUpdates`` gets ``poll_timeout`` plus this long to answer before we give up on it."""
CALL_DEADLINE_S = 15.0
"""Deadline of ``getMe`` and ``sendChatAction``."""
ACCEPT_DEADLINE_S = 60.0
"""Deadline for the inbox to store one message; past it, the update comes again."""
RETRY_AFTER_MAX_S = 300.0
"""The longest pause a 429 on ``getUpdates`` makes the poller take."""
DESCRIPTION_CHARS_MAX = 300
TOKEN_PLACEHOLDER = "TOKEN"
_PLACEHOLDER_SEGMENT = f"/bot{TOKEN_PLACEHOLDER}/".encode()
_RETRYABLE_4XX = frozenset({401, 404, 408, 409, 429})
"""4xx answers to a send that may pass later (401/404: the token, not the message)."""


class BotApiError(ChannelError):
    """The Bot API answered a call with ``ok: false`` (tried again unless a caller decides
    otherwise from ``status`` and ``description``)."""

    def __init__(
        self, method: str, status: int, description: str, retry_after_s: float | None
    ) -> None:
        super().__init__(f"telegram {method}: {status} {description}", retry_after_s=retry_after_s)
        self.method = method
        self.status = status
        self.description = description


class _TokenTransport(httpx2.AsyncBaseTransport):
    """Writes the token into the path of the request that goes to the socket; the request
    the client logs (and the one a caller could see) keeps the placeholder."""

    def __init__(self, token: str, inner: httpx2.AsyncBaseTransport) -> None:
        self._segment = f"/bot{quote(token, safe=':')}/".encode()
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raw_path = request.url.raw_path.replace(_PLACEHOLDER_SEGMENT, self._segment, 1)
        real = httpx2.Request(
            request.method,
            request.url.copy_with(raw_path=raw_path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(real)

    async def aclose(self) -> None:
        await self._inner.aclose()


class BotApi:
    """Calls one bot's Bot API: parameters in as JSON, the answer's ``result`` out, every
    failure a :class:`~turngate.errors.ChannelError` whose text never holds the token.
    Callers set the deadline."""

    def __init__(self, api_url: str, token: str) -> None:
        self._base = f"{api_url.rstrip('/')}/bot{TOKEN_PLACEHOLDER}/"
        self._secrets = (token,)
        transport = _TokenTransport(token, network_transport(api_url))
        self._client = httpx2.AsyncClient(transport=transport, timeout=None)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """The ``result`` of ``method``; raises :class:`BotApiError` for ``ok: false``."""
        try:
            response = await self._client.post(self._base + method, json=params)
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ChannelError(redact(f"telegram {method}: {text}", self._secrets)) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            raise ChannelError(
                f"telegram {method}: HTTP {response.status_code}, not a Bot API answer"
            )
        if body["ok"]:
            return body.get("result")
        status = body.get("error_code")
        description = str(body.get("description") or "no description")[:DESCRIPTION_CHARS_MAX]
        parameters = body.get("parameters")
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        retry_after_s = (
            float(retry_after)
            if isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
            else None
        )
        raise BotApiError(
            method,
            status if isinstance(status, int) else response.status_code,
            redact(description, self._secrets),
            retry_after_s,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class TelegramSender:
    """Puts one part of a reply into one chat (see the module docstring)."""

    def __init__(self, api: BotApi, channel_id: str) -> None:
        self._api = api
        self._channel_id = channel_id

    @property
    def limit(self) -> int:
        return TEXT_UTF16_MAX

    def measure(self, text: str) -> int:
        return utf16_length(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        """Send ``text`` formatted; as plain text if Telegram refuses the formatting. The Bot
        API does not deduplicate, so ``part_key`` is not sent."""
        chat_id = _chat_id(conversation)
        formatted = {"chat_id": chat_id, "text": telegram_html(text), "parse_mode": "HTML"}
        try:
            await self._api.call("sendMessage", formatted)
            return
        except BotApiError as exc:
            if exc.status != 400 or "can't parse entities" not in exc.description.lower():
                raise _send_error(exc) from exc
            log.warning(
                "channel %s: Telegram refused the formatting of part %s for chat %s (%s);"
                " sending it as plain text",
                self._channel_id,
                part_key,
                conversation,
                exc.description,
                extra={"event": "telegram_entities_refused"},
            )
        try:
            await self._api.call("sendMessage", {"chat_id": chat_id, "text": text})
        except BotApiError as exc:
            raise _send_error(exc) from exc


def _send_error(exc: BotApiError) -> ChannelError:
    """Tried again (429, 5xx, a token problem) or refused for good (any other 4xx)."""
    if 400 <= exc.status < 500 and exc.status not in _RETRYABLE_4XX:
        return DeliveryRefusedError(exc.message)
    return exc


def _chat_id(conversation: str) -> int | str:
    """Telegram's chat ids are integers; a ``@channelname`` stays a string."""
    try:
        return int(conversation)
    except ValueError:
        return conversation


class TelegramChannel:
    """One Telegram bot: long polling under a supervisor, and its :class:`TelegramSender`."""

    def __init__(
        self,
        config: ChannelConfig,
        token: str,
        clock: Clock,
        rng: random.Random,
        *,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        """``config.url`` is the Bot API's base URL (a fake one in tests); ``token`` is the
        value of ``config.token_env``, which is only ever named, never shown."""
        self._config = config
        self._token_env = f"${config.token_env}" if config.token_env else "its token variable"
        if not token or any(ch.isspace() or ch == "/" for ch in token):
            raise ValueError(
                f"channel {config.id}: {self._token_env} does not hold a Bot API token"
            )
        self._api = BotApi(config.url or API_URL_DEFAULT, token)
        self._sender = TelegramSender(self._api, config.id)
        settings = SupervisorSettings(
            backoff=backoff or BackoffPolicy(),
            ready_timeout_s=CALL_DEADLINE_S + POLL_MARGIN_S,
            lost_errors=(*LOST_ERRORS, TurngateError),
        )
        self._supervisor: Supervisor[None] = Supervisor(
            config.id, self._poll, clock=clock, rng=rng, settings=settings, secrets=(token,)
        )
        self._inbox: Inbox | None = None
        self._offset: int | None = None
        self._bot_id: int | None = None
        self._mention: re.Pattern[str] | None = None

    @property
    def channel_id(self) -> str:
        return self._config.id

    @property
    def kind(self) -> str:
        return "telegram"

    @property
    def sender(self) -> TelegramSender:
        return self._sender

    @property
    def offset(self) -> int | None:
        """The next ``getUpdates`` offset: one past the last update handled (None: none yet)."""
        return self._offset

    async def run(self, inbox: Inbox) -> None:
        """Poll until :meth:`stop`, cancellation, or Telegram refusing the token."""
        self._inbox = inbox
        await self._supervisor.run()

    def stop(self) -> None:
        """End the current poll now; :meth:`run` returns promptly."""
        self._supervisor.stop()

    async def aclose(self) -> None:
        """Close the HTTP client (after :meth:`run` returned and the outbox worker stopped)."""
        await self._api.aclose()

    async def typing(self, conversation: str) -> None:
        try:
            async with asyncio.timeout(CALL_DEADLINE_S):
                params = {"chat_id": _chat_id(conversation), "action": "typing"}
                await self._api.call("sendChatAction", params)
        except TimeoutError:
            raise ChannelError(
                f"telegram sendChatAction: no answer in {CALL_DEADLINE_S:g}s"
            ) from None

    def connection(self) -> ConnectionSnapshot:
        return self._supervisor.snapshot()

    async def _poll(self, gen: Generation[None]) -> None:
        """One generation: ``getMe``, then ``getUpdates`` until something fails."""
        await self._identify()
        gen.received()
        gen.ready()
        while True:
            updates = await self._get_updates()
            gen.received()
            for update in updates:
                update_id = update.get("update_id") if isinstance(update, dict) else None
                if not isinstance(update_id, int):
                    raise ChannelError("telegram getUpdates: an update without an update_id")
                message = update.get("message")
                inbound = self._inbound(message) if isinstance(message, dict) else None
                if inbound is not None:
                    await self._accept(inbound)
                self._offset = update_id + 1  # only now: the message is a turn, or not ours

    async def _identify(self) -> None:
        try:
            async with asyncio.timeout(CALL_DEADLINE_S):
                me = await self._api.call("getMe", {})
        except BotApiError as exc:
            if exc.status in (401, 404):
                raise self._refused(exc) from None
            raise
        except TimeoutError:
            raise ChannelError(f"telegram getMe: no answer in {CALL_DEADLINE_S:g}s") from None
        if not isinstance(me, dict) or not isinstance(me.get("id"), int):
            raise ChannelError("telegram getMe: the answer does not describe a bot")
        self._bot_id = me["id"]
        username = me.get("username")
        self._mention = (
            re.compile(rf"(?i)[ \t]*@{re.escape(username)}\b[,:]?")
            if isinstance(username, str) and username
            else None
        )

    def _refused(self, exc: BotApiError) -> ChannelRefusedError:
        return ChannelRefusedError(
            f"channel {self._config.id}: Telegram refused the bot token in {self._token_env}"
            f" ({exc.status} {exc.description}); set a valid token and restart"
        )

    async def _get_updates(self) -> list[Any]:
        poll_s = max(1, math.ceil(self._config.poll_timeout))
        params: dict[str, Any] = {"timeout": poll_s, "allowed_updates": ["message"]}
        if self._offset is not None:
            params["offset"] = self._offset
        try:
            async with asyncio.timeout(poll_s + POLL_MARGIN_S):
                updates = await self._api.call("getUpdates", params)
        except BotApiError as exc:
            if exc.status in (401, 404):
                raise self._refused(exc) from None
            if exc.status == 409:
                raise ChannelError(
                    f"{exc.message} (another process polls with this token, or a webhook is"
                    " set: only one poller per bot token)"
                ) from None
            if exc.status == 429 and exc.retry_after_s is not None:
                pause_s = min(max(exc.retry_after_s, 0.0), RETRY_AFTER_MAX_S)
                log.warning(
                    "channel %s: getUpdates rate limited; polling again in %gs",
                    self._config.id,
                    pause_s,
                    extra={"event": "telegram_rate_limited"},
                )
                await asyncio.sleep(pause_s)
                return []
            raise
        except TimeoutError:
            raise ChannelError(
                f"telegram getUpdates: no answer in {poll_s + POLL_MARGIN_S:g}s"
            ) from None
        if not isinstance(updates, list):
            raise ChannelError("telegram getUpdates: the answer is not a list of updates")
        return updates

    async def _accept(self, inbound: InboundMessage) -> None:
        assert self._inbox is not None
        try:
            async with asyncio.timeout(ACCEPT_DEADLINE_S):
                await self._inbox.accept(inbound)
        except (TurngateError, TimeoutError) as exc:
            why = exc.message if isinstance(exc, TurngateError) else "no answer in time"
            raise ChannelError(
                f"message {inbound.message_id} not stored ({why}); Telegram sends it again"
            ) from exc

    def _inbound(self, message: dict[str, Any]) -> InboundMessage | None:
        """The message as an inbound one; None when it is not for us (no text, a group
        message that does not address the bot, a malformed one)."""
        text, chat = message.get("text"), message.get("chat")
        sender = message.get("from") or message.get("sender_chat")
        if not isinstance(text, str) or not isinstance(chat, dict) or not isinstance(sender, dict):
            return None
        chat_id, message_id, peer_id = chat.get("id"), message.get("message_id"), sender.get("id")
        if not all(isinstance(v, int) for v in (chat_id, message_id, peer_id)):
            return None
        group = chat.get("type") in ("group", "supergroup")
        if group:
            addressed = self._addressed(message, text)
            if addressed is None:
                return None
            text = addressed
        elif chat.get("type") != "private":
            return None
        if not text.strip():
            return None
        return InboundMessage(
            message_id=f"{chat_id}:{message_id}",
            conversation=str(chat_id),
            peer=str(peer_id),
            text=text,
            group=group,
            peer_name=_display_name(sender),
        )

    def _addressed(self, message: dict[str, Any], text: str) -> str | None:
        """A group message's text as the agent gets it, or None when it is not for the bot."""
        if self._config.groups == "off":
            return None
        if self._config.groups == "all":
            return text
        if self._mention is not None and self._mention.search(text):
            return self._mention.sub("", text).strip() or text
        reply_to = message.get("reply_to_message")
        author = reply_to.get("from") if isinstance(reply_to, dict) else None
        if isinstance(author, dict) and author.get("id") == self._bot_id:
            return text
        return None


def _display_name(sender: dict[str, Any]) -> str | None:
    names = [sender.get("first_name"), sender.get("last_name")]
    name = " ".join(n for n in names if isinstance(n, str) and n)
    fallback = sender.get("username") or sender.get("title")
    return name or (fallback if isinstance(fallback, str) else None)


__all__ = ["BotApi", "BotApiError", "TelegramChannel", "TelegramSender"]
