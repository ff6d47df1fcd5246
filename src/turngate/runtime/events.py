"""Structured events the runtime emits as it works.

Metrics, the simulator's invariant checkers and tests all subscribe to the same stream, so
what they check is what the runtime did, not what a test thinks it did. Abnormal events are
also logged at WARNING by the emitter (invariant I8); see :data:`ABNORMAL`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from turngate.core.turn import Usage
from turngate.errors import ErrorCode
from turngate.types import Epoch, MonotonicS, RunId

log = logging.getLogger("turngate.runtime")


class EventKind(enum.StrEnum):
    """What happened."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUEUED = "queued"
    LEASE_ACQUIRED = "lease_acquired"
    STARTED = "started"
    PROGRESS = "progress"
    """A run's streamed output that renewed its lease (the stall clock starts again)."""
    RUN_EXITED = "run_exited"
    CANCEL_REQUESTED = "cancel_requested"
    LEASE_RELEASED = "lease_released"
    FENCED = "fenced"
    ENDED = "ended"
    DELIVERED = "delivered"
    STALE_IGNORED = "stale_ignored"
    STALE_WRITE_REFUSED = "stale_write_refused"
    STEP_REFUSED = "step_refused"
    """The store refused a step of a run that no longer held its session (fenced): the
    fence at work, unlike ``stale_write_refused``, which is the owner's own write."""
    RECOVERED = "recovered"
    HANDED_OFF = "handed_off"
    """A turn accepted here for a session another gateway process holds: that one runs it."""
    SESSION_LOST = "session_lost"
    """Another gateway process took a session this one was running (this one was paused or
    cut off from the store past its claim): its owner here stopped."""
    OWNER_FAILED = "owner_failed"
    UNSTUCK = "unstuck"
    HEARTBEAT_SKIPPED = "heartbeat_skipped"
    CRON_FIRED = "cron_fired"
    LANE_FAILED = "lane_failed"
    STORAGE_FAILED = "storage_failed"
    STORAGE_RECOVERED = "storage_recovered"
    TOOL_CALLED = "tool_called"
    """A tool call of a run returned: ``detail`` the tool, ``state`` ok or error."""
    MODEL_ANSWERED = "model_answered"
    """A model step of a run ended: ``detail`` the model, ``usage`` its tokens."""


ABNORMAL = frozenset(
    {
        EventKind.CANCEL_REQUESTED,
        EventKind.FENCED,
        EventKind.STALE_IGNORED,
        EventKind.STALE_WRITE_REFUSED,
        EventKind.STEP_REFUSED,
        EventKind.RECOVERED,
        EventKind.SESSION_LOST,
        EventKind.OWNER_FAILED,
        EventKind.UNSTUCK,
        EventKind.HEARTBEAT_SKIPPED,
        EventKind.LANE_FAILED,
        EventKind.STORAGE_FAILED,
        EventKind.STORAGE_RECOVERED,
    }
)
"""Kinds that are always logged at WARNING. ``ended`` is too, when its state is not replied."""


@dataclass(slots=True)
class Event:
    """One thing the runtime did, at a time on its clock. Treat it as immutable.

    (Not ``frozen``: a frozen dataclass's ``__init__`` costs several times more, and the
    runtime builds several events per turn.)"""

    kind: EventKind
    at: MonotonicS
    session_key: str
    run_id: RunId | None = None
    turn_id: str | None = None
    epoch: Epoch | None = None
    state: str | None = None
    code: ErrorCode | None = None
    lane: str = "direct"
    detail: str = ""
    wait_s: float | None = None
    """On ``started``: seconds since the turn was accepted."""
    ready_wait_s: float | None = None
    """On ``started``: seconds the turn waited while it was next and its session was free."""
    duration_s: float | None = None
    """On ``tool_called``: how long the call took."""
    usage: Usage | None = None
    """On ``model_answered``: the tokens the model step used, when reported."""

    @property
    def abnormal(self) -> bool:
        """True for events a person running the gateway must be able to see."""
        return self.kind in ABNORMAL or (
            self.kind is EventKind.ENDED and self.state not in (None, "replied")
        )

    def line(self) -> str:
        """One readable line: ``kind session run=… epoch=… …``."""
        parts = [f"{self.kind.value:<19}", self.session_key]
        for name in ("turn_id", "run_id", "epoch", "state", "code"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name.removesuffix('_id')}={value}")
        if self.detail:
            parts.append(f"- {self.detail}")
        return " ".join(parts)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers, and logs the abnormal ones at WARNING."""

    def __init__(self) -> None:
        # Replaced, never changed in place: an emit goes on over the tuple it started with,
        # so a subscriber that (un)subscribes during an emit makes no other miss the event.
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; return a function that removes it."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            subscribers = list(self._subscribers)
            subscribers.remove(subscriber)
            self._subscribers = tuple(subscribers)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber, in subscription order."""
        if event.abnormal:
            log.warning(
                "%s",
                event.line(),
                extra={
                    "session_key": event.session_key,
                    "run_id": event.run_id,
                    "epoch": event.epoch,
                    "event": event.kind.value,
                },
            )
        for subscriber in self._subscribers:
            subscriber(event)
