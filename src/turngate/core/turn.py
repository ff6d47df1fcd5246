"""The turn state machine: one accepted message, from acceptance to its one terminal state.

Rule: a turn moves only through :data:`TRANSITIONS`. Every terminal state is final, and each
accepted turn reaches exactly one (invariant I1). ::

    accepted --enqueue--> queued --start--> running --reply--> replied
        |                   |  ^               |----fail---> failed
        |                   |  '--requeue------|  (crash recovery puts a running turn back)
        |                   |                  '---abort---> aborted
        |                   |--abort--> aborted (superseded while queued, user abort)
        |                   |--expire-> expired (its deadline passed before it started)
        |                   '--fail---> failed  (interrupted by too many restarts)
        '--reject--> rejected (busy / queue_full)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from turngate.errors import ErrorCode, IllegalTransitionError
from turngate.types import MonotonicS, RunId, TurnId


class TurnState(enum.StrEnum):
    """Where a turn is in its life."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    RUNNING = "running"
    REPLIED = "replied"
    FAILED = "failed"
    ABORTED = "aborted"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """True for the five states a turn never leaves."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TurnState.REPLIED, TurnState.FAILED, TurnState.ABORTED, TurnState.REJECTED, TurnState.EXPIRED}
)


class TurnEvent(enum.StrEnum):
    """What can happen to a turn."""

    ENQUEUE = "enqueue"
    START = "start"
    REQUEUE = "requeue"
    REPLY = "reply"
    FAIL = "fail"
    ABORT = "abort"
    REJECT = "reject"
    EXPIRE = "expire"


TRANSITIONS: dict[tuple[TurnState, TurnEvent], TurnState] = {
    (TurnState.ACCEPTED, TurnEvent.ENQUEUE): TurnState.QUEUED,
    (TurnState.ACCEPTED, TurnEvent.REJECT): TurnState.REJECTED,
    (TurnState.QUEUED, TurnEvent.START): TurnState.RUNNING,
    (TurnState.QUEUED, TurnEvent.ABORT): TurnState.ABORTED,
    (TurnState.QUEUED, TurnEvent.EXPIRE): TurnState.EXPIRED,
    (TurnState.QUEUED, TurnEvent.FAIL): TurnState.FAILED,
    (TurnState.RUNNING, TurnEvent.REPLY): TurnState.REPLIED,
    (TurnState.RUNNING, TurnEvent.FAIL): TurnState.FAILED,
    (TurnState.RUNNING, TurnEvent.ABORT): TurnState.ABORTED,
    (TurnState.RUNNING, TurnEvent.REQUEUE): TurnState.QUEUED,
}
"""The one table of legal turn transitions."""


def next_turn_state(state: TurnState, event: TurnEvent) -> TurnState:
    """The state after ``event`` in ``state``; raises if the table has no such transition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError("turn", state.value, event.value) from None


OUTCOME_EVENTS: dict[TurnState, TurnEvent] = {
    TurnState.REPLIED: TurnEvent.REPLY,
    TurnState.FAILED: TurnEvent.FAIL,
    TurnState.ABORTED: TurnEvent.ABORT,
    TurnState.REJECTED: TurnEvent.REJECT,
    TurnState.EXPIRED: TurnEvent.EXPIRE,
}
"""The event that ends a turn in each terminal state."""


def stored_sources(event: TurnEvent) -> tuple[TurnState, ...]:
    """The states a stored turn may be in when ``event`` is written for it: those the table
    takes ``event`` from, and ``accepted`` wherever ``queued`` is one (a store may not have
    written a turn's enqueue yet when what follows it is written). A store's guards are
    these, so that a write the table forbids changes nothing."""
    sources = {state for (state, on) in TRANSITIONS if on is event}
    if TurnState.QUEUED in sources:
        sources.add(TurnState.ACCEPTED)
    return tuple(state for state in TurnState if state in sources)


class AbortReason(enum.StrEnum):
    """Why a run was cancelled. Each reason is also the turn's error code."""

    SUPERSEDED = "superseded"
    STALLED = "stalled"
    RUN_TIMEOUT = "run_timeout"
    USER_ABORT = "user_abort"
    SHUTDOWN = "shutdown"

    @property
    def code(self) -> ErrorCode:
        """The error code a turn aborted for this reason carries."""
        return ErrorCode(self.value)


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens a run's model calls used, as the provider counted them.

    It lives in the core, not with the providers, because outcomes carry it and the core
    imports nothing outside itself; :mod:`turngate.providers.base` re-exports it.
    """

    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            # bool is an int to Python, never a count.
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: a count of tokens is an int >= 0, got {value!r}")

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The one terminal result of a turn, as recorded and delivered.

    ``run_id`` names the run that served the turn: the turn's own id, or, for a message merged
    into another turn (``collect``), the id of the turn that absorbed it. ``usage`` is that
    run's token usage, when its provider reported any: every turn a run served carries the
    whole run's usage (a merged turn shares it), since the tokens cannot be split by message.
    """

    turn_id: TurnId
    state: TurnState
    run_id: RunId
    reply: str | None = None
    code: ErrorCode | None = None
    message: str = ""
    usage: Usage | None = None

    def __post_init__(self) -> None:
        if not self.state.is_terminal:
            raise ValueError(f"state: an outcome needs a terminal state, got {self.state}")
        if (self.state is TurnState.REPLIED) != (self.reply is not None):
            raise ValueError("reply: present exactly when the state is replied")

    @property
    def merged(self) -> bool:
        """True when the turn was answered by a run it shares with earlier messages."""
        return self.run_id != self.turn_id


@dataclass(slots=True)
class Turn:
    """One accepted message as the core tracks it."""

    turn_id: TurnId
    session_key: str
    message: str
    accepted_at: MonotonicS
    deadline: MonotonicS
    state: TurnState = TurnState.ACCEPTED
    restarts: int = 0
    """Gateway restarts that interrupted this turn's runs so far."""

    def advance(self, event: TurnEvent) -> None:
        """Move to the next state by the table, or raise :class:`IllegalTransitionError`."""
        self.state = next_turn_state(self.state, event)
