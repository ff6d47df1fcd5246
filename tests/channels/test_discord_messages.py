"""Which Discord messages become turns: people's text in DMs always, in servers as the
``groups`` setting says; never a bot's (two bots answering each other would loop)."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from turngate.channels.base import InboundMessage
from turngate.channels.discord.messages import MessageFilter

BOT = "900"


def filter_of(groups: Literal["mention", "all", "off"] = "mention") -> MessageFilter:
    messages = MessageFilter(groups)
    messages.bot_id = BOT
    return messages


def payload(content: str, *, guild: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "1001",
        "channel_id": "55",
        "author": {"id": "7", "username": "ann", "global_name": "Ann"},
        "content": content,
        "type": 0,
        "mentions": [],
    }
    if guild is not None:
        data["guild_id"] = guild
    data.update(extra)
    return data


def test_a_dm_is_a_turn_of_its_dm_channel_from_its_author() -> None:
    assert filter_of().inbound(payload("hello")) == InboundMessage(
        message_id="1001", conversation="55", peer="7", text="hello", peer_name="Ann"
    )


def test_in_a_server_a_mention_is_a_turn_without_the_mention() -> None:
    data = payload(f"<@{BOT}> what time is it?", guild="3", mentions=[{"id": BOT}])
    inbound = filter_of().inbound(data)
    assert inbound is not None
    assert (inbound.text, inbound.group, inbound.space) == ("what time is it?", True, "3")


def test_in_a_server_a_reply_to_the_bot_is_a_turn_and_other_talk_is_not() -> None:
    reply = payload("and tomorrow?", guild="3", type=19, referenced_message={"author": {"id": BOT}})
    assert filter_of().inbound(reply) is not None
    assert filter_of().inbound(payload("just chatting", guild="3")) is None
    assert filter_of("all").inbound(payload("just chatting", guild="3")) is not None
    dm_even_when_off = filter_of("off").inbound(payload("hi"))
    assert dm_even_when_off is not None
    assert (
        filter_of("off").inbound(payload(f"<@{BOT}> hi", guild="3", mentions=[{"id": BOT}])) is None
    )


@pytest.mark.parametrize(
    "data",
    [
        payload("from a bot", author={"id": "8", "username": "other", "bot": True}),
        payload("from ourselves", author={"id": BOT, "username": "turngate"}),
        payload("a pin notice", type=6),
        payload("   "),
        payload("no author", author=None),
        payload("bad id", id="not-a-snowflake"),
        {"content": 5},
    ],
    ids=["bot", "self", "system-message", "blank", "no-author", "bad-id", "garbage"],
)
def test_what_is_not_a_persons_text_is_no_turn(data: dict[str, Any]) -> None:
    assert filter_of("all").inbound(data) is None


def test_before_the_first_ready_no_server_message_can_address_the_bot_but_dms_can() -> None:
    messages = MessageFilter("mention")
    assert messages.inbound(payload("<@900> hi", guild="3", mentions=[{"id": BOT}])) is None
    assert messages.inbound(payload("hi")) is not None
