"""One channel at work: its platform connection, its outbox worker and its typing indicator.

:class:`ChannelRuntime` runs the three in one task group for as long as the gateway runs.
It watches the engine's events for its own sessions: a run that starts shows the bot typing
in its conversation until the run's lease is released; a turn that ends wakes the outbox
worker (its reply was written to the outbox in the same transaction as the end). A channel
whose platform refuses its credentials stops (its supervisor says why, in ``/health``); the
gateway and the other channels go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from turngate.channels.base import Channel
from turngate.channels.inbound import ChannelInbox
from turngate.channels.outbox import OutboxCounts, OutboxSettings, OutboxWorker
from turngate.channels.routes import ChannelRoutes
from turngate.channels.supervisor import ConnectionSnapshot
from turngate.config_channels import ChannelConfig
from turngate.errors import ChannelError
from turngate.runtime.engine import Engine
from turngate.runtime.events import Event, EventKind
from turngate.runtime.singleton import SingletonLease

log = logging.getLogger("turngate.channels")

TYPING_EVERY_S = 4.0
"""Platforms show "typing" for about five seconds after each signal."""
TYPING_TIMEOUT_S = 10.0
TYPING_SESSIONS_MAX = 1_000
"""Conversations shown typing at once, at most (a flood must not become a flood of tasks)."""


@dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as ``/health``, ``turngate channels status`` and metrics show it."""

    channel_id: str
    kind: str
    agent: str
    connection: ConnectionSnapshot
    outbox: OutboxCounts
    held_here: bool = True
    """Whether this process runs the channel (among processes sharing a store, one does)."""


class ChannelRuntime:
    """See the module docstring."""

    def __init__(
        self,
        config: ChannelConfig,
        channel: Channel,
        engine: Engine,
        *,
        message_chars_max: int,
        outbox: OutboxSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.channel = channel
        self.engine = engine
        self.routes = ChannelRoutes([config])
        self.inbox = ChannelInbox(
            config, engine, message_chars_max=message_chars_max, notify=self._notify
        )
        self.worker = OutboxWorker(
            config.id, engine.store.outbox, channel.sender, engine.clock, settings=outbox, rng=rng
        )
        self._typing: dict[str, asyncio.Event] = {}
        self._notices = 0
        self._group: asyncio.TaskGroup | None = None
        self._lease: SingletonLease | None = None

    def view(self) -> ChannelView:
        """Where the channel stands now."""
        return ChannelView(
            self.config.id,
            self.channel.kind,
            self.config.agent,
            self.channel.connection(),
            self.worker.counts,
            self._lease is None or self._lease.held,
        )

    async def run(self) -> None:
        """Run the channel until cancelled. Among several gateway processes sharing a store,
        only the one holding the channel's lease runs it (one poller per bot token)."""
        engine = self.engine
        try:
            if not engine.store.shared:
                await self._work()
                return
            settings = engine.settings
            lease = self._lease = SingletonLease(
                engine.store,
                engine.clock,
                f"channel:{self.config.id}",
                settings.process_name,
                settings.claim_ttl_s,
                settings.claim_poll_s,
            )
            await lease.run(self._work)
        finally:
            await self.channel.aclose()

    async def _work(self) -> None:
        unsubscribe = self.engine.events.subscribe(self._on_event)
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._connection(), name=f"channel {self.config.id}")
                group.create_task(self.worker.run(), name=f"outbox {self.config.id}")
                self.worker.wake()  # what a previous life left pending
        finally:
            self._group = None
            unsubscribe()

    async def _connection(self) -> None:
        await self.channel.run(self.inbox)
        log.warning(
            "channel %s stopped: %s",
            self.config.id,
            self.channel.connection().last_error or "its connection ended",
        )

    async def _notify(self, conversation: str, text: str) -> None:
        # Each notice is a message of its own: a platform that deduplicates by key must not
        # take a later one for a repeat of an earlier one.
        self._notices += 1
        key = f"notice:{conversation}:{self.engine.clock.wall():.6f}:{self._notices}"
        await self.channel.sender.send(conversation, text, key)

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if not self.routes.serves(event.session_key):
            return
        if event.kind in (EventKind.ENDED, EventKind.RECOVERED):
            self.worker.wake()
        elif event.kind is EventKind.STARTED:
            self._start_typing(event.session_key)
        elif event.kind is EventKind.LEASE_RELEASED:
            stop = self._typing.pop(event.session_key, None)
            if stop is not None:
                stop.set()

    def _start_typing(self, session_key: str) -> None:
        group = self._group
        target = self.routes.conversation(session_key)
        if group is None or target is None or session_key in self._typing:
            return
        if len(self._typing) >= TYPING_SESSIONS_MAX:
            return
        stop = self._typing[session_key] = asyncio.Event()
        group.create_task(self._show_typing(session_key, target.conversation, stop))

    async def _show_typing(self, session_key: str, conversation: str, stop: asyncio.Event) -> None:
        """Signal "typing" every few seconds until the run ends (bounded by the run's
        longest life: its run timeout, and the abort grace after it)."""
        try:
            await self._typing_until(conversation, stop)
        finally:
            if self._typing.get(session_key) is stop:
                del self._typing[session_key]

    async def _typing_until(self, conversation: str, stop: asyncio.Event) -> None:
        settings = self.engine.settings
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.run_timeout_s + settings.abort_grace_s):
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(TYPING_TIMEOUT_S):
                            await self.channel.typing(conversation)
                    except (ChannelError, TimeoutError, OSError) as exc:
                        log.debug("channel %s: typing: %s", self.config.id, exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(TYPING_EVERY_S):
                            await stop.wait()
