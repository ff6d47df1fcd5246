"""Durable inbound: a platform message becomes a turn in the store before the platform may
forget it.

:meth:`ChannelInbox.accept` returns only once the message is a turn committed to the store
(``Engine.submit`` acknowledges only what is written down), so a channel that advances its
platform's offset or acks the frame after it can lose nothing: if turngate dies first, the
platform delivers the message again. The turn's id is derived from the channel and the
platform's message id, so a message delivered twice is one turn (the store keeps a turn id
once).

Who may talk to the bot is the channel's ``allow`` list (peer ids, or ``"*"``); anyone else
gets the channel's ``refusal`` text, if it has one, at most once per :data:`REFUSAL_EVERY_S`,
and their message is not a turn. Groups not on ``group_allow`` are ignored (silently). In a
group, each message is prefixed with its sender's name, since the session is the group's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from turngate.channels.base import InboundMessage
from turngate.channels.routes import session_key_of
from turngate.config_channels import ChannelConfig
from turngate.core.keys import IDEMPOTENCY_KEY_PATTERN, parse_session_key
from turngate.errors import ChannelError, IdempotencyConflictError
from turngate.runtime.engine import Engine, SubmitRequest

log = logging.getLogger("turngate.channels")

LANE = "channel"
REFUSAL_EVERY_S = 3600.0
"""A peer who is not allowed is told so at most this often."""
PEERS_REMEMBERED_MAX = 10_000
NOTIFY_TIMEOUT_S = 30.0
_TURN_ID = re.compile(IDEMPOTENCY_KEY_PATTERN)

Notify = Callable[[str, str], Awaitable[None]]
"""Sends a text straight to a conversation (refusals: not turns, so not in the outbox)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """What became of one inbound message."""

    accepted: bool
    """True when the message is a turn in the store (now, or already: a redelivery)."""
    turn_id: str | None = None
    session_key: str | None = None
    reason: str = ""
    """Why it is not a turn (a peer not allowed, a group message not for the bot, ...)."""


class ChannelInbox:
    """The :class:`~turngate.channels.base.Inbox` of one channel (see the module docstring)."""

    def __init__(
        self,
        channel: ChannelConfig,
        engine: Engine,
        *,
        message_chars_max: int,
        notify: Notify | None = None,
    ) -> None:
        self.channel = channel
        self.engine = engine
        self.message_chars_max = message_chars_max
        self._notify = notify
        self._everyone = "*" in channel.allow
        self._allowed = frozenset(channel.allow)
        self._groups_allowed = frozenset(channel.group_allow)
        self._refused_at: dict[str, float] = {}

    async def accept(self, message: InboundMessage) -> Admitted:
        """Store ``message`` as a turn of its conversation's session, or refuse it."""
        channel = self.channel
        if not self._everyone and message.peer not in self._allowed:
            await self._refuse(message)
            return Admitted(False, reason=f"peer {message.peer} is not on the allowlist")
        if message.group and channel.groups == "off":
            return Admitted(False, reason="group messages are off for this channel")
        if message.group and not self._group_allowed(message):
            return Admitted(False, reason=f"group {message.conversation} is not on group_allow")
        text = message.text.strip()
        if not text:
            return Admitted(False, reason="no text")
        if len(text) > self.message_chars_max:
            await self._tell(
                message.conversation,
                f"That message is too long ({len(text)} characters; the limit is"
                f" {self.message_chars_max}).",
            )
            return Admitted(False, reason="message too long")
        key = session_key_of(channel, message.conversation, group=message.group)
        if key is None:
            log.warning(
                "channel %s: conversation id %r is too long for a session key; message %s dropped",
                channel.id,
                message.conversation[:80],
                message.message_id[:80],
            )
            return Admitted(False, reason="conversation id too long")
        if message.group:
            text = f"{message.peer_name or message.peer}: {text}"
        turn_id = self._turn_id(message.message_id)
        mode = self.engine.agents.get(channel.agent).queue_mode
        request = SubmitRequest(parse_session_key(key), text, turn_id, mode, lane=LANE)
        try:
            ticket = await self.engine.submit(request)
        except IdempotencyConflictError:
            # The platform reused a message id for another text (an edit arriving as a new
            # message): the first text is the turn; this one is not another.
            log.warning(
                "channel %s: message %s came again with another text; the first is kept",
                channel.id,
                message.message_id[:80],
                extra={"session_key": key, "run_id": turn_id},
            )
            return Admitted(True, turn_id, key, reason="a redelivery with another text")
        return Admitted(True, ticket.turn_id, key)

    def _group_allowed(self, message: InboundMessage) -> bool:
        allowed = self._groups_allowed
        return "*" in allowed or message.conversation in allowed or message.space in allowed

    def _turn_id(self, message_id: str) -> str:
        """``<channel>:<message id>``, or a digest of the message id when that is not a valid
        idempotency key (too long, characters outside the key's alphabet)."""
        turn_id = f"{self.channel.id}:{message_id}"
        if _TURN_ID.fullmatch(turn_id):
            return turn_id
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"{self.channel.id}:h{digest}"

    async def _refuse(self, message: InboundMessage) -> None:
        now = self.engine.clock.now()
        last = self._refused_at.get(message.peer)
        if last is not None and now - last < REFUSAL_EVERY_S:
            return
        if len(self._refused_at) >= PEERS_REMEMBERED_MAX:
            del self._refused_at[next(iter(self._refused_at))]
        self._refused_at[message.peer] = now
        log.warning(
            "channel %s: peer %s is not on the allowlist; their message is not a turn%s",
            self.channel.id,
            message.peer[:80],
            " (refusal sent)" if self.channel.refusal else "",
        )
        if self.channel.refusal:
            await self._tell(message.conversation, self.channel.refusal)

    async def _tell(self, conversation: str, text: str) -> None:
        if self._notify is None:
            return
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT_S):
                await self._notify(conversation, text)
        except (ChannelError, TimeoutError) as exc:
            log.warning("channel %s: could not tell %s: %s", self.channel.id, conversation, exc)
