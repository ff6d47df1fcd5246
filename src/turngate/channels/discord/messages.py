"""Which Discord messages are turns, and as what.

A ``MESSAGE_CREATE`` becomes an :class:`~turngate.channels.base.InboundMessage` when a person
(never a bot, never ourselves: two bots answering each other would loop) wrote text:

- in a DM: always (the channel's allowlist then decides who may talk);
- in a server's channel (a group: the session is the channel's, shared by its members), as
  the ``groups`` setting says: ``mention`` (the default) takes messages that mention the bot or
  reply to it, the mention cut from the text; ``all`` takes every one; ``off`` none.

Its id is Discord's message id (unique across Discord, so a replay after a resume is the same
turn); the conversation is the Discord channel id (a DM's channel too: that is where the reply
goes); the peer is the author's user id; the space is the server (guild) id, for
``group_allow``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from turngate.channels.base import InboundMessage

MESSAGE_TYPES = frozenset({0, 19})
"""DEFAULT and REPLY: what people write (not joins, pins, boosts, thread starters)."""


class MessageFilter:
    """Turns ``MESSAGE_CREATE`` payloads into inbound messages (see the module docstring)."""

    def __init__(self, groups: Literal["mention", "all", "off"]) -> None:
        self.groups = groups
        self.bot_id: str | None = None
        """The bot's user id, from READY; None before the first."""

    def inbound(self, data: dict[str, Any]) -> InboundMessage | None:
        """The message as a turn's input, or None when it is not one for us."""
        author, content = data.get("author"), data.get("content")
        if not isinstance(author, dict) or not isinstance(content, str):
            return None
        author_id = snowflake(author.get("id"))
        message_id, channel_id = snowflake(data.get("id")), snowflake(data.get("channel_id"))
        if author_id is None or message_id is None or channel_id is None:
            return None
        if author.get("bot") is True or author_id == self.bot_id:
            return None
        if data.get("type", 0) not in MESSAGE_TYPES:
            return None
        guild_id = snowflake(data.get("guild_id"))
        text: str | None = content
        if guild_id is not None:
            text = self._addressed(data, content)
        if text is None or not text.strip():
            return None
        return InboundMessage(
            message_id=message_id,
            conversation=channel_id,
            peer=author_id,
            text=text,
            group=guild_id is not None,
            peer_name=_name(author),
            space=guild_id,
        )

    def _addressed(self, data: dict[str, Any], content: str) -> str | None:
        """A server message's text as the agent gets it, or None when it is not for the bot."""
        if self.groups == "off":
            return None
        if self.groups == "all":
            return content
        if self.bot_id is None:
            return None
        mentions = data.get("mentions")
        mentioned = isinstance(mentions, list) and any(
            isinstance(user, dict) and snowflake(user.get("id")) == self.bot_id for user in mentions
        )
        if mentioned:
            return re.sub(rf"<@!?{self.bot_id}>[,:]?", "", content).strip() or content
        replied = data.get("referenced_message")
        author = replied.get("author") if isinstance(replied, dict) else None
        if isinstance(author, dict) and snowflake(author.get("id")) == self.bot_id:
            return content
        return None


def _name(author: dict[str, Any]) -> str | None:
    for key in ("global_name", "username"):
        value = author.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def snowflake(value: object) -> str | None:
    """A Discord id: a string of digits (some payloads carry integers)."""
    if isinstance(value, str) and value.isdigit():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return None


__all__ = ["MessageFilter", "snowflake"]
