"""What every channel is made of, and what it is given.

A channel connects one bot (one set of platform credentials) to turngate. It has two halves:

- **Inbound**: it reads the platform (a socket, a long poll) under its
  :class:`~turngate.channels.supervisor.Supervisor` and hands each message to its
  :class:`Inbox`. ``Inbox.accept`` returns once the message is a turn committed to the store
  (or was refused): only then may the channel advance the platform's offset or ack the frame.
  A message the platform sends again (same ``message_id``) gives the same turn, not a second.
- **Outbound**: its :class:`~turngate.channels.outbox.Sender` puts one message into one
  conversation; the channel's outbox worker calls it for every reply the store says is owed,
  so a reply is never sent from memory alone.

Conversation and peer ids travel in session keys (``agent:<agent>:<channel>:direct:<peer>``,
``agent:<agent>:<channel>:group:<chat>``), encoded by :func:`~turngate.core.keys.id_segment`,
so the reply to a session finds its conversation from the key alone, after a restart too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from turngate.channels.outbox import Sender
from turngate.channels.supervisor import ConnectionSnapshot


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a platform delivered to the bot."""

    message_id: str
    """The platform's id for it, unique within the channel: a message delivered twice (a
    redelivery, a resumed stream, a replayed update) carries the same id and is one turn."""
    conversation: str
    """Where the reply goes: the platform's chat id (the peer's own chat, for a direct one)."""
    peer: str
    """Who sent it: the platform's user id (what the allowlist names)."""
    text: str
    group: bool = False
    """Whether the conversation is a group (its session is the group's, shared by its members)."""
    peer_name: str | None = None
    """The sender's display name, when the platform gives one (for logs and the transcript)."""
    space: str | None = None
    """The larger place the conversation belongs to, when the platform has one (a Discord
    server): ``group_allow`` may name it instead of each of its conversations."""


class Admission(Protocol):
    """What became of an inbound message."""

    @property
    def accepted(self) -> bool:
        """True when it is a turn in the store (now, or already before: a redelivery)."""
        ...


class Inbox(Protocol):
    """Where a channel hands its inbound messages (one per channel; see the module docstring)."""

    async def accept(self, message: InboundMessage) -> Admission:
        """Store ``message`` as a turn of its session, or refuse it (a peer not allowed).

        Returns once the decision is durable; raises
        :class:`~turngate.errors.StorageUnavailableError` (or another
        :class:`~turngate.errors.TurngateError`) when it could not be stored: the channel must
        then *not* advance past the message, so that the platform delivers it again.
        """
        ...


class Channel(Protocol):
    """One bot on one platform."""

    @property
    def channel_id(self) -> str:
        """The id the configuration gives it (a session key segment)."""
        ...

    @property
    def kind(self) -> str:
        """The platform: ``websocket``, ``telegram``, ..."""
        ...

    @property
    def sender(self) -> Sender:
        """How its outbox worker sends a message."""
        ...

    async def run(self, inbox: Inbox) -> None:
        """Read the platform until cancelled (under the channel's own supervisor), handing
        every message to ``inbox`` and advancing past it only once ``accept`` returned. A
        platform that refuses the credentials for good stops the channel, not the gateway."""
        ...

    async def typing(self, conversation: str) -> None:
        """Show the bot as typing in ``conversation`` (best effort; errors are the caller's to
        ignore). Platforms without such a thing do nothing."""
        ...

    def connection(self) -> ConnectionSnapshot:
        """Its connection as ``/health``, ``turngate channels status`` and metrics show it."""
        ...

    async def aclose(self) -> None:
        """Release what it holds (HTTP clients, sockets); called once, after :meth:`run` and
        the last send have ended."""
        ...
