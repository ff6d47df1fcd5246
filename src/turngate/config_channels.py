"""The settings of a chat platform bot (``[[channels]]``): WebSocket IM, Telegram, Discord."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from turngate.config_types import Duration
from turngate.core.keys import ID_PATTERN

DiscordIntent = Literal["guilds", "guild_messages", "direct_messages", "message_content"]
"""The Discord gateway intents a channel may ask for (what a text bot needs)."""


class ChannelConfig(BaseModel):
    """A bot on a chat platform, feeding one agent.

    Each peer gets a session ``agent:<agent>:<id>:direct:<peer>``, each group one
    ``agent:<agent>:<id>:group:<chat>``. The bot's credential is read from the environment
    variable ``token_env`` names, at start, and is never logged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    type: Literal["websocket", "telegram", "discord"]
    agent: str = "main"
    token_env: str | None = None
    """The environment variable holding the bot's token (required for ``telegram`` and
    ``discord``)."""
    url: str | None = None
    """``websocket``: the IM server to dial (``ws://`` or ``wss://``, required).
    ``telegram``: the Bot API's base URL (default ``https://api.telegram.org``).
    ``discord``: the gateway's URL (default ``wss://gateway.discord.gg``)."""
    api_url: str | None = None
    """``discord``: the REST API's base URL (default ``https://discord.com/api/v10``)."""
    intents: tuple[DiscordIntent, ...] | None = None
    """``discord``: the gateway intents to ask for. Default: ``guild_messages`` and
    ``direct_messages``, plus ``message_content`` (privileged: enable it in Discord's
    Developer Portal) when ``groups`` is ``all``."""
    allow: tuple[str, ...] = ()
    """Peer ids that may talk to the bot; ``"*"`` lets everyone. Empty: nobody (the gateway
    says so at start)."""
    refusal: str = ""
    """What a peer not allowed is told (empty: nothing; their message is not a turn)."""
    groups: Literal["mention", "all", "off"] = "mention"
    """In groups, answer messages that mention or reply to the bot, every message, or none."""
    group_allow: tuple[str, ...] = ("*",)
    """The groups the bot answers in, by id: a Telegram chat id, an IM server's chat, a
    Discord channel or server id; ``"*"``: every group it is in. Messages in other groups are
    not turns (and get no refusal: the group did not ask)."""
    failure_notice: bool = True
    """Tell the conversation when a turn ends without a reply (the model failed, it timed out)."""
    heartbeat: Duration = 30.0
    """``websocket``: how often to send a heartbeat (the server must answer within as long)."""
    poll_timeout: Duration = 30.0
    """``telegram``: how long one ``getUpdates`` long poll waits for news."""
    send_rate: float = Field(default=25.0, gt=0, le=10_000)
    """Messages a second the bot may send, in bursts of as many (Telegram allows about 30)."""

    @field_validator("url", "api_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(wss?|https?)://[^\s/]+", value):
            raise ValueError(f"{value!r} is not a ws://, wss://, http:// or https:// URL")
        return value
