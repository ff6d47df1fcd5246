"""Which replies a chat platform is owed: the seam between the runtime and the channels.

The runtime does not know chat platforms (arrows point inward); a channel layer gives the
engine an :class:`OutboundRouter`, and when a run of one of its sessions ends, the owner asks
it for the :class:`~turngate.store.base.DeliveryOrder` to write in the same transaction as
that end (the outbox). Without channels, nothing is owed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from turngate.core.turn import Outcome
from turngate.store.base import DeliveryOrder


class OutboundRouter(Protocol):
    """Turns a run's ending into the messages its session's platform conversation is owed."""

    def serves(self, session_key: str) -> bool:
        """Whether a channel answers this session (its replies go through the outbox)."""
        ...

    def orders(self, session_key: str, outcomes: Sequence[Outcome]) -> list[DeliveryOrder]:
        """What the end of turns with ``outcomes`` owes (nothing for a session no channel
        serves)."""
        ...


class NoOutbound:
    """The router of a gateway without channels: nothing is ever owed."""

    def serves(self, session_key: str) -> bool:
        del session_key
        return False

    def orders(self, session_key: str, outcomes: Sequence[Outcome]) -> list[DeliveryOrder]:
        del session_key, outcomes
        return []
