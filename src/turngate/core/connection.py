"""A supervised connection's life, and the backoff between its attempts. Pure: no I/O, no clock.

A channel's connection (a platform socket, a long poll, an MCP server) is dialled again and
again for as long as the channel runs. Each attempt is one *generation*; the supervisor
(:mod:`turngate.channels.supervisor`) drives this machine with the events below. Rule: the
state moves only through :data:`CONNECTION_TRANSITIONS`; ``stopped`` is final. ::

    connecting --dialed--> identifying --identified--> ready
    connecting --identified--> ready        (no identify step: a long poll's first good answer)
    connecting | identifying | ready --lost--> backing_off    (closed, I/O error, deadline passed)
    identifying | ready --zombie--> backing_off       (the peer sent nothing within the ack window)
    backing_off --retry--> connecting
    connecting | identifying | ready --fatal--> stopped       (refused for good: a bad token)
    every state but stopped --stop--> stopped                 (the owner asked)

Backoff between attempts is exponential with *full jitter*: the delay before retry ``n``
(counting from 0 since the last reset) is drawn uniformly from ``[0, min(cap, base * 2**n)]``.
Full jitter spreads a crowd of clients that lost the same server across the whole window
instead of bunching them at its edge (AWS Architecture Blog, "Exponential Backoff And
Jitter").

When the schedule resets: when an attempt *ends* after it stayed ready for at least
``healthy_after_s``. Resetting as soon as a connection is ready would let a server that accepts
the identify and then drops us at once keep us reconnecting every ``base`` seconds forever; a
connection that proved itself for a while has earned a quick first retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from turngate.errors import IllegalTransitionError


class ConnectionState(enum.StrEnum):
    """Where a supervised connection is in its life."""

    CONNECTING = "connecting"
    IDENTIFYING = "identifying"
    READY = "ready"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class ConnectionEvent(enum.StrEnum):
    """What can happen to a supervised connection."""

    DIALED = "dialed"
    """The transport is open; the connector now identifies (or resumes)."""
    IDENTIFIED = "identified"
    """The platform accepted us: frames flow."""
    LOST = "lost"
    """The attempt ended: closed by the peer, an I/O error, or a deadline passed."""
    ZOMBIE = "zombie"
    """The transport looks open but the peer sent nothing within the heartbeat's ack window."""
    RETRY = "retry"
    """The backoff delay is over: dial again."""
    FATAL = "fatal"
    """The platform refused us for good (bad token, banned): retrying cannot help."""
    STOP = "stop"
    """The owner asked the connection to stop."""


_S = ConnectionState
_E = ConnectionEvent

CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, ConnectionEvent], ConnectionState] = {
    (_S.CONNECTING, _E.DIALED): _S.IDENTIFYING,
    (_S.CONNECTING, _E.IDENTIFIED): _S.READY,
    (_S.CONNECTING, _E.LOST): _S.BACKING_OFF,
    (_S.CONNECTING, _E.FATAL): _S.STOPPED,
    (_S.CONNECTING, _E.STOP): _S.STOPPED,
    (_S.IDENTIFYING, _E.IDENTIFIED): _S.READY,
    (_S.IDENTIFYING, _E.LOST): _S.BACKING_OFF,
    (_S.IDENTIFYING, _E.ZOMBIE): _S.BACKING_OFF,
    (_S.IDENTIFYING, _E.FATAL): _S.STOPPED,
    (_S.IDENTIFYING, _E.STOP): _S.STOPPED,
    (_S.READY, _E.LOST): _S.BACKING_OFF,
    (_S.READY, _E.ZOMBIE): _S.BACKING_OFF,
    (_S.READY, _E.FATAL): _S.STOPPED,
    (_S.READY, _E.STOP): _S.STOPPED,
    (_S.BACKING_OFF, _E.RETRY): _S.CONNECTING,
    (_S.BACKING_OFF, _E.STOP): _S.STOPPED,
}
"""The one table of legal connection transitions."""


def next_connection_state(state: ConnectionState, event: ConnectionEvent) -> ConnectionState:
    """The state after ``event`` in ``state``; raises if the table has no such transition."""
    try:
        return CONNECTION_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError("connection", state.value, event.value) from None


class RandomSource(Protocol):
    """Where jitter comes from: :class:`random.Random` fits. A protocol, so that the core
    needs no import of ``random`` and tests can pass a seeded generator."""

    def uniform(self, a: float, b: float) -> float:
        """A number drawn uniformly from ``[a, b]``."""
        ...


EXPONENT_MAX = 62
"""``2**n`` stops growing here: far past any cap, and never a float overflow."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait between connection attempts."""

    base_s: float = 1.0
    cap_s: float = 60.0
    healthy_after_s: float = 30.0
    """A connection ready at least this long resets the schedule when it ends."""

    def __post_init__(self) -> None:
        if not self.base_s > 0:
            raise ValueError(f"base_s: must be > 0, got {self.base_s}")
        if not self.cap_s >= self.base_s:
            raise ValueError(f"cap_s: must be >= base_s ({self.base_s}), got {self.cap_s}")
        if not self.healthy_after_s >= 0:
            raise ValueError(f"healthy_after_s: must be >= 0, got {self.healthy_after_s}")

    def ceiling_s(self, attempt: int) -> float:
        """The longest delay before retry number ``attempt`` (from 0): ``min(cap, base*2**n)``."""
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, EXPONENT_MAX))


class Backoff:
    """The retry schedule of one connection: full-jitter delays that grow to a cap."""

    def __init__(self, policy: BackoffPolicy, rng: RandomSource) -> None:
        self.policy = policy
        self._rng = rng
        self.attempt = 0
        """Retries drawn since the last reset; the next delay's exponent."""

    def next_delay_s(self) -> float:
        """Draw the delay before the next retry, and count that retry."""
        delay_s = self._rng.uniform(0.0, self.policy.ceiling_s(self.attempt))
        # Bounded: past EXPONENT_MAX the ceiling is the cap anyway.
        self.attempt = min(self.attempt + 1, EXPONENT_MAX)
        return delay_s

    def attempt_ended(self, ready_for_s: float | None) -> None:
        """An attempt ended after being ready for ``ready_for_s`` (None: it never was ready).
        A connection that proved healthy starts the schedule over."""
        if ready_for_s is not None and ready_for_s >= self.policy.healthy_after_s:
            self.attempt = 0
