"""Sending what the outbox holds: one worker per channel (one bot), in order per conversation.

The end of a turn wrote its reply's :class:`~turngate.store.base.Delivery` in the store, in the
same transaction (``store/sqlite_outbox.py``); this worker sends it and records every step:

- In order per conversation: only the oldest pending delivery of a conversation is sent; the
  next waits until it is sent or has failed for good. Conversations go out side by side.
- Split at the platform's limit (:func:`~turngate.channels.split.split_message`); after each
  part the store records how many went out, so a restart resumes after them. A part the
  platform took just before a crash, and not yet recorded, is sent again after the restart:
  each part carries a key (``<order key>#<index>``) for platforms that deduplicate.
- A failed attempt is tried again after a full-jitter backoff, or the platform's
  ``retry_after`` if it gave one (then the whole channel pauses until then: a bot's rate
  limit is the bot's, unless the platform said it is the conversation's alone); after
  ``attempts_max`` attempts, or at once when the platform refuses the message for good, the
  delivery is recorded ``failed`` and logged at WARNING: never lost silently, never sent
  twice on purpose.
- One rate limiter per bot (a token bucket on the injected clock).

Every wait has a deadline: each send has ``send_timeout_s``; the worker sleeps until the next
attempt is due, or :meth:`OutboxWorker.wake` (a turn of its channel ended), or ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from turngate.channels.split import Measure, split_message
from turngate.core.clock import Clock
from turngate.core.connection import BackoffPolicy
from turngate.errors import ChannelError, DeliveryRefusedError, StoreError
from turngate.store.base import Delivery, DeliveryState, Outbox
from turngate.types import MonotonicS

log = logging.getLogger("turngate.channels")


class Sender(Protocol):
    """How a channel puts one message into one of its platform's conversations."""

    @property
    def limit(self) -> int:
        """The platform's longest message, as :meth:`measure` counts."""
        ...

    def measure(self, text: str) -> int:
        """The length of ``text`` as the platform counts it."""
        ...

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        """Send one message. Raises :class:`~turngate.errors.ChannelError` to be tried again
        (with ``retry_after_s`` when the platform asked for a pause), or
        :class:`~turngate.errors.DeliveryRefusedError` when trying again cannot help."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """How a channel's outbox worker sends and retries."""

    attempts_max: int = 8
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base_s=1.0, cap_s=300.0))
    send_timeout_s: float = 30.0
    rate_per_s: float = 25.0
    """Messages per second the bot may send, sustained (bursts of as many)."""
    batch: int = 200
    poll_s: float = 30.0
    """Longest sleep with nothing due: a backstop for a wake-up that was missed."""


@dataclass(slots=True)
class OutboxCounts:
    """What a worker did since it started (for ``/health`` and metrics)."""

    sent: int = 0
    parts: int = 0
    retries: int = 0
    failed: int = 0


class TokenBucket:
    """``rate`` sends a second, in bursts of up to ``rate``. :meth:`reserve` takes the next
    free slot, now or later, and says how long until it comes: callers that reserve
    together are spread out in the order they asked."""

    def __init__(self, rate_per_s: float, now: MonotonicS) -> None:
        self.rate = rate_per_s
        self._tokens = rate_per_s
        self._at = now

    def reserve(self, now: MonotonicS) -> float:
        """Take one slot; the seconds to wait before using it (0: now)."""
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate) - 1.0
        self._at = now
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate


class OutboxWorker:
    """Sends one channel's pending deliveries (see the module docstring)."""

    def __init__(
        self,
        channel_id: str,
        outbox: Outbox,
        sender: Sender,
        clock: Clock,
        *,
        settings: OutboxSettings | None = None,
        rng: random.Random | None = None,
        on_failed: Callable[[Delivery, str], None] | None = None,
    ) -> None:
        self.channel_id = channel_id
        self.outbox = outbox
        self.sender = sender
        self.clock = clock
        self.settings = settings or OutboxSettings()
        self.counts = OutboxCounts()
        self._rng = rng or random.Random()
        self._on_failed = on_failed
        self._wake = asyncio.Event()
        self._bucket = TokenBucket(self.settings.rate_per_s, clock.now())
        self._paused_until = clock.wall()

    def wake(self) -> None:
        """Something may be due now (a turn of this channel ended)."""
        self._wake.set()

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            self._wake.clear()
            due_in_s = await self.send_due()
            if due_in_s == 0.0:
                continue
            timeout = self.settings.poll_s if due_in_s is None else due_in_s
            try:
                async with asyncio.timeout(min(timeout, self.settings.poll_s)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def send_due(self) -> float | None:
        """One pass: send the oldest pending delivery of each conversation that is due.
        Returns how long until the next is due (0: more may be due now; None: nothing
        pending)."""
        try:
            pending = await self.outbox.pending(self.channel_id, self.settings.batch)
        except StoreError as exc:
            log.warning("channel %s: cannot read its outbox: %s", self.channel_id, exc.message)
            return self.settings.poll_s
        heads: dict[str, Delivery] = {}
        for delivery in pending:
            heads.setdefault(delivery.order.conversation, delivery)
        if not heads:
            return None
        now = self.clock.wall()
        if self._paused_until > now:  # the platform asked the whole bot to wait
            return self._paused_until - now
        due = [d for d in heads.values() if d.next_attempt_wall <= now]
        if not due:
            return min(d.next_attempt_wall for d in heads.values()) - now
        async with asyncio.TaskGroup() as group:
            for delivery in due:
                group.create_task(self._deliver(delivery))
        return 0.0

    async def _deliver(self, delivery: Delivery) -> None:
        order = delivery.order
        parts = split_message(order.text, self.sender.limit, self.sender.measure)
        try:
            for index in range(delivery.parts_sent, len(parts)):
                await self._take_token()
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.sender.send(order.conversation, parts[index], f"{order.key}#{index}")
                self.counts.parts += 1
                await self.outbox.advance(delivery.delivery_id, index + 1, self.clock.wall())
            await self.outbox.finish(delivery.delivery_id, DeliveryState.SENT, self.clock.wall())
            self.counts.sent += 1
        except DeliveryRefusedError as exc:
            await self._fail(delivery, f"refused by the platform: {exc.message}")
        except (ChannelError, TimeoutError, OSError) as exc:
            await self._attempt_failed(delivery, exc)
        except StoreError as exc:
            # Sent or not, the record is behind: the next pass sends from what is recorded.
            log.warning(
                "channel %s: delivery %d of session %s (run %s): cannot record progress: %s",
                self.channel_id,
                delivery.delivery_id,
                order.session_key,
                order.run_id,
                exc.message,
                extra={"session_key": order.session_key, "run_id": order.run_id},
            )
        except Exception as exc:  # a sender's bug must not stop the channel's outbox
            log.exception(
                "channel %s: sending delivery %d failed unexpectedly",
                self.channel_id,
                delivery.delivery_id,
                extra={"session_key": order.session_key, "run_id": order.run_id},
            )
            await self._attempt_failed(delivery, exc)

    async def _take_token(self) -> None:
        wait_s = self._bucket.reserve(self.clock.now())
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _attempt_failed(self, delivery: Delivery, exc: Exception) -> None:
        order = delivery.order
        attempts = delivery.attempts + 1
        reason = _reason(exc, self.settings.send_timeout_s)
        if attempts >= self.settings.attempts_max:
            await self._fail(delivery, f"{attempts} attempts failed; the last: {reason}")
            return
        retry_after = exc.retry_after_s if isinstance(exc, ChannelError) else None
        backoff_s = self._rng.uniform(0.0, self.settings.backoff.ceiling_s(attempts - 1))
        delay_s = backoff_s if retry_after is None else max(retry_after, 0.0)
        now = self.clock.wall()
        whole_bot = not (isinstance(exc, ChannelError) and exc.conversation_only)
        if retry_after is not None and whole_bot:
            self._paused_until = max(self._paused_until, now + delay_s)
        self.counts.retries += 1
        log.warning(
            "channel %s: delivery %d of session %s (run %s), attempt %d failed: %s;"
            " next attempt in %.1fs",
            self.channel_id,
            delivery.delivery_id,
            order.session_key,
            order.run_id,
            attempts,
            reason,
            delay_s,
            extra={"session_key": order.session_key, "run_id": order.run_id},
        )
        # Not recorded, the attempt is not counted; the next pass tries again, as it would.
        with contextlib.suppress(StoreError):
            await self.outbox.retry_later(delivery.delivery_id, attempts, now + delay_s, reason)

    async def _fail(self, delivery: Delivery, reason: str) -> None:
        order = delivery.order
        log.warning(
            "channel %s: delivery %d of session %s (run %s) failed for good: %s",
            self.channel_id,
            delivery.delivery_id,
            order.session_key,
            order.run_id,
            reason,
            extra={"session_key": order.session_key, "run_id": order.run_id},
        )
        try:
            await self.outbox.finish(
                delivery.delivery_id, DeliveryState.FAILED, self.clock.wall(), reason
            )
        except StoreError:
            return  # still pending: the next pass meets the same end and records it then
        self.counts.failed += 1
        if self._on_failed is not None:
            self._on_failed(delivery, reason)


def _reason(exc: Exception, send_timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from the platform in {send_timeout_s:g}s"
    if isinstance(exc, ChannelError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


__all__ = ["Measure", "OutboxCounts", "OutboxSettings", "OutboxWorker", "Sender", "TokenBucket"]
