"""Discord: a bot over Discord's gateway (inbound) and REST API (outbound).

:mod:`.gateway` speaks the gateway protocol under the channel's supervisor, :mod:`.messages`
decides which messages are turns, :mod:`.rest` and :mod:`.ratelimit` send replies within
Discord's rate limits, and :mod:`.channel` puts them together from a ``[[channels]]`` entry.
"""

from turngate.channels.discord.channel import DiscordChannel, DiscordSettings

__all__ = ["DiscordChannel", "DiscordSettings"]
