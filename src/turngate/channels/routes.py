"""Which conversation a channel session's replies go to, and what its turns' ends owe it.

A channel session's key names its conversation: ``agent:<agent>:<channel>:direct:<peer>`` or
``agent:<agent>:<channel>:group:<chat>``, the id encoded by
:func:`~turngate.core.keys.id_segment`. So the owed messages of a turn's end are known from
the key and the outcomes alone, in the owner, before the end is written (the outbox), after a
restart as well as before.

What is owed: a run's reply, once per run (a message merged into a run, or steered into it,
is answered by that run's one reply); and, when the channel's ``failure_notice`` is on, a
short notice for a turn that ended without a reply, unless the person caused that end
themselves (a newer message superseded it, they aborted it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from turngate.config_channels import ChannelConfig
from turngate.core.keys import id_from_segment, id_segment
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode
from turngate.store.base import DeliveryOrder

KINDS = ("direct", "group")
QUIET_CODES = frozenset({ErrorCode.SUPERSEDED, ErrorCode.USER_ABORT})
"""Ends the person caused: no notice."""
NOTICES: dict[TurnState, str] = {
    TurnState.FAILED: "Sorry, I could not answer that: the model failed ({code}).",
    TurnState.EXPIRED: "Sorry, I could not answer that in time.",
    TurnState.ABORTED: "Sorry, my answer to that was cut short ({code}).",
    TurnState.REJECTED: "Sorry, I could not take that message ({code}); please try again.",
}


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a channel session's messages go."""

    channel: ChannelConfig
    conversation: str
    group: bool


def session_key_of(channel: ChannelConfig, conversation: str, *, group: bool) -> str | None:
    """The session of ``conversation`` on ``channel``; None when its id cannot be a key
    segment (too long once encoded)."""
    segment = id_segment(conversation)
    if segment is None:
        return None
    return f"agent:{channel.agent}:{channel.id}:{KINDS[group]}:{segment}"


class ChannelRoutes:
    """The :class:`~turngate.runtime.outbound.OutboundRouter` of the configured channels."""

    def __init__(self, channels: Sequence[ChannelConfig]) -> None:
        self._channels = {channel.id: channel for channel in channels}

    def conversation(self, session_key: str) -> Conversation | None:
        """The conversation a session key names, if a configured channel serves it."""
        parts = session_key.split(":")
        if len(parts) != 5 or parts[3] not in KINDS:
            return None
        channel = self._channels.get(parts[2])
        if channel is None or channel.agent != parts[1]:
            return None
        return Conversation(channel, id_from_segment(parts[4]), parts[3] == "group")

    def serves(self, session_key: str) -> bool:
        return self.conversation(session_key) is not None

    def orders(self, session_key: str, outcomes: Sequence[Outcome]) -> list[DeliveryOrder]:
        target = self.conversation(session_key)
        if target is None:
            return []
        channel, chat = target.channel, target.conversation
        orders: list[DeliveryOrder] = []
        replied: set[str] = set()
        for outcome in outcomes:
            if outcome.reply is not None:
                if outcome.run_id not in replied:
                    replied.add(outcome.run_id)
                    orders.append(
                        DeliveryOrder(
                            f"reply:{outcome.run_id}",
                            session_key,
                            outcome.run_id,
                            channel.id,
                            chat,
                            outcome.reply,
                        )
                    )
            elif channel.failure_notice and outcome.code not in QUIET_CODES:
                text = NOTICES[outcome.state].format(code=outcome.code or "unknown")
                orders.append(
                    DeliveryOrder(
                        f"notice:{outcome.turn_id}",
                        session_key,
                        outcome.run_id,
                        channel.id,
                        chat,
                        text,
                    )
                )
        return orders
