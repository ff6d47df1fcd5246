"""The :class:`Store` protocol every backend implements, and the records it returns.

Rules every implementation keeps:

- A write that cannot be made durable (disk full, I/O error) raises
  :class:`~turngate.errors.StorageUnavailableError` and leaves nothing behind; the caller
  may try it again. A write returns only once it is durable.
- ``accept_turn`` is atomic and idempotent: a turn id is stored once; a second call returns
  the stored record instead of storing again. The gateway acknowledges a turn only after it
  returns (DESIGN: acknowledge only what is written down).
- A session's turns are run by one gateway process at a time: the holder of its **claim**
  (``claim_session``), which it keeps by renewing it before it expires. Several processes may
  share one store; each names itself with a ``holder`` string unique to it while it runs (and
  the same across its restarts, so that a restarted process takes its sessions back at once).
  Taking a session from a holder whose claim expired (or from an earlier life of oneself)
  ends what that holder left: its run's lease is freed, its running turns are queued again
  (one more attempt) and its tool calls left without a result get one. There is no "free
  every lease" recovery: a process recovers only the sessions it claims.
- ``start_run`` takes the session's lease at the given epoch only if the lease is free and the
  epoch is the next one (and, given a ``holder``, only while that holder holds the session's
  claim); otherwise it raises :class:`~turngate.errors.StaleEpochError`.
- ``end_run`` is fenced: it succeeds only while ``(run_id, epoch)`` holds the lease, and
  raises :class:`~turngate.errors.StaleEpochError` (writing nothing) otherwise. It releases
  the lease, records the outcomes, appends the run's exchange to the transcript, closes the
  tool calls the run left without a result, and queues the messages the end owes a chat
  platform (:class:`DeliveryOrder`, the outbox) in one transaction. A terminal turn never
  changes again.
- ``write_steps`` (a run that calls tools writes each step as it happens) is fenced the same
  way: a run that no longer holds the lease writes nothing.
- The transcript stays valid for a model call: every tool call gets exactly one result,
  from its run, from ``end_run`` (the run ended first), or from ``claim_session`` (the gateway
  stopped first).
- The outbox (:class:`Outbox`): an order is stored once (by its ``key``), whatever the retries;
  a delivery ends ``sent`` or ``failed`` exactly once and records, on the turns it answers,
  what became of their reply.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from turngate.core.transcript import EntryKind, TranscriptItem
from turngate.core.turn import Outcome, TurnState, Usage
from turngate.errors import ErrorCode
from turngate.types import Epoch, RunId, TurnId, WallS

INTERRUPTED_CALL_RESULT = (
    "this tool call did not return: the gateway stopped while it ran; its result is unknown"
)
"""The result ``claim_session`` gives a call that was running when its process stopped."""


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A turn as stored."""

    turn_id: TurnId
    session_key: str
    agent_id: str
    message: str
    queue_mode: str
    state: TurnState
    accepted_wall: WallS
    timeout_s: float
    seq: int = 0
    attempts: int = 0
    run_id: RunId | None = None
    """The run the turn is (or was last) part of: an open turn queued again after its run was
    interrupted keeps it until it runs again."""
    epoch: Epoch | None = None
    started_wall: WallS | None = None
    ended_wall: WallS | None = None
    reply: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    lane: str = "direct"
    """Who produced the turn: ``direct`` (a client), ``heartbeat``, ``cron``, ``recovery``."""
    delivery: str | None = None
    """For lane turns: what became of the reply (``stored``, ``suppressed``, ...)."""
    usage: Usage | None = None
    """The token usage of the run that replied, when its provider reported any."""

    def outcome(self) -> Outcome | None:
        """The turn's outcome if it has ended, else None."""
        if not self.state.is_terminal:
            return None
        return Outcome(
            self.turn_id,
            self.state,
            self.run_id or self.turn_id,
            reply=self.reply,
            code=self.error_code,
            message=self.error_message or "",
            usage=self.usage,
        )


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store takes writes, as of its last attempt."""

    writable: bool
    reason: str = ""
    """Why the last write failed (empty while writable)."""
    write_failures: int = 0
    """Writes that failed since the store was opened."""


@dataclass(frozen=True, slots=True)
class CronJobState:
    """Where a scheduled job stands; kept in the store so restarts neither skip nor repeat."""

    job_id: str
    agent_id: str
    schedule: str
    next_fire_wall: WallS
    last_fire_wall: WallS | None = None


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One entry of a session's transcript as stored: the typed ``item`` (see
    :mod:`turngate.core.transcript`), with where it sits and which run wrote it."""

    seq: int
    session_key: str
    item: TranscriptItem
    run_id: RunId
    epoch: Epoch
    at_wall: WallS

    @property
    def kind(self) -> EntryKind:
        """What the entry is: a user message, assistant text, tool calls, a tool result."""
        return self.item.kind

    @property
    def text(self) -> str:
        """The entry's text: the message, the reply, or the tool's result (empty for tool
        calls)."""
        return self.item.text


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored, with counts of its turns."""

    key: str
    agent_id: str
    epoch: Epoch
    lease_run_id: RunId | None
    lease_granted_wall: WallS | None
    created_wall: WallS
    updated_wall: WallS
    turns_total: int
    turns_open: int


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """Which gateway process holds a session: only that process runs the session's turns."""

    session_key: str
    holder: str | None
    """The holding process's name; None while nobody holds the session."""
    expires_wall: WallS | None
    """When the claim lapses unless renewed (wall-clock seconds)."""
    epoch: Epoch
    """The session's fencing epoch (its last run's)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """What ``claim_session`` found: the claim in force after it, and, when the caller took
    the session, every turn of it not yet ended."""

    claim: SessionClaim
    taken: bool
    """Whether the caller holds the session now."""
    open_turns: tuple[TurnRecord, ...] = ()
    """When taken: the session's turns not ended, in acceptance order. A turn that was
    running (under the previous holder, or an earlier life) is queued again and carries the
    id of the run it was part of (``run_id``), so that the turns of one run resume as one."""


class NoticeKind(enum.StrEnum):
    """What one gateway process tells the others sharing its store."""

    TURN = "turn"
    """A turn was accepted for a session this process does not hold."""
    ENDED = "ended"
    """Turns another process accepted ended (their waiting clients may read them)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice between processes sharing a store."""

    kind: NoticeKind
    session_key: str


class DeliveryState(enum.StrEnum):
    """Where a delivery to a chat platform stands."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeliveryOrder:
    """A message the end of a turn owes a chat platform's conversation; written with that end,
    in its transaction, so a reply is never sent from memory alone (DESIGN: the outbox)."""

    key: str
    """Unique per message owed: a retried end writes it once (``reply:<runId>``)."""
    session_key: str
    run_id: RunId
    """The run whose reply this is: every turn it served is answered by this message."""
    channel_id: str
    conversation: str
    """The platform's chat (a peer or a group), as the channel names it."""
    text: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A :class:`DeliveryOrder` as stored, with how far its sending got."""

    delivery_id: int
    """Increases with every order: a conversation's messages go out in this order."""
    order: DeliveryOrder
    state: DeliveryState
    parts_sent: int
    """Parts of the split text the platform has taken (a restart resumes after them)."""
    attempts: int
    """Failed attempts so far."""
    next_attempt_wall: WallS
    created_wall: WallS
    ended_wall: WallS | None = None
    last_error: str | None = None


class Outbox(Protocol):
    """The outbound side of the store: what delivery workers read and record."""

    async def pending(self, channel_id: str, limit: int) -> list[Delivery]:
        """A channel's pending deliveries, oldest first."""
        ...

    async def advance(self, delivery_id: int, parts_sent: int, at: WallS) -> None:
        """The platform took parts up to ``parts_sent``."""
        ...

    async def retry_later(
        self, delivery_id: int, attempts: int, next_attempt_wall: WallS, error: str
    ) -> None:
        """An attempt failed; the next is due at ``next_attempt_wall``."""
        ...

    async def finish(
        self, delivery_id: int, state: DeliveryState, at: WallS, error: str | None = None
    ) -> None:
        """The delivery is ``sent`` or ``failed`` for good; its turns record it."""
        ...

    async def of_session(self, session_key: str, limit: int) -> list[Delivery]:
        """A session's last ``limit`` deliveries, oldest first."""
        ...

    async def counts(self) -> dict[DeliveryState, int]:
        """How many deliveries are in each state."""
        ...


class Store(Protocol):
    """Durable state behind the runtime. See the module docstring for the rules."""

    @property
    def outbox(self) -> Outbox:
        """Messages owed to chat platforms."""
        ...

    async def open(self) -> None:
        """Create or migrate the schema; ready the store for use."""
        ...

    async def close(self) -> None:
        """Flush and release every resource."""
        ...

    def health(self) -> StoreHealth:
        """Whether the last write committed, and why not."""
        ...

    async def probe(self) -> None:
        """Write something small, to learn whether storage takes writes again; raises
        :class:`~turngate.errors.StorageUnavailableError` if not."""
        ...

    async def accept_turn(self, record: TurnRecord) -> TurnRecord | None:
        """Store a new turn (state ``accepted``); return None, or the record already stored."""
        ...

    async def get_turn(self, turn_id: TurnId) -> TurnRecord | None:
        """One turn by id."""
        ...

    async def mark_queued(self, turn_ids: Sequence[TurnId]) -> None:
        """Turns entered their session's queue."""
        ...

    async def get_turns(self, turn_ids: Sequence[TurnId]) -> list[TurnRecord]:
        """The stored turns among ``turn_ids`` (in no particular order)."""
        ...

    async def open_turns(self, session_key: str) -> list[TurnRecord]:
        """The session's turns not yet ended, in acceptance order."""
        ...

    async def session_epoch(self, session_key: str) -> Epoch:
        """The session's current fencing epoch (0 for a session never run)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether several gateway processes may use this store at once."""
        ...

    async def claim_session(
        self, session_key: str, holder: str, at: WallS, ttl_s: float
    ) -> Claimed:
        """Take the session for ``holder`` until ``at + ttl_s`` if nobody holds it, if
        ``holder`` holds it already (an earlier life of it), or if its claim expired
        (``expires_wall <= at``); see the module docstring for what taking it ends. Returns
        the claim in force after the call. A session the store does not know is not taken
        (``holder`` None, epoch 0)."""
        ...

    async def renew_claims(
        self, holder: str, session_keys: Sequence[str], at: WallS, ttl_s: float
    ) -> set[str]:
        """Extend ``holder``'s claims on ``session_keys`` to ``at + ttl_s``; returns the keys
        it still holds (a key missing was taken by another process)."""
        ...

    async def release_claims(self, holder: str, session_keys: Sequence[str]) -> None:
        """Give up ``holder``'s claims on ``session_keys`` (any other process may take them)."""
        ...

    async def hold_singleton(self, name: str, holder: str, at: WallS, ttl_s: float) -> bool:
        """Take, or renew, ``name`` for ``holder`` until ``at + ttl_s``: something one process
        at a time may hold (a channel's account: a platform refuses two pollers of one bot).
        True if ``holder`` holds it now; False while another holds it unexpired."""
        ...

    async def release_singleton(self, name: str, holder: str) -> None:
        """Give ``name`` up, if ``holder`` holds it."""
        ...

    async def session_claim(self, session_key: str) -> SessionClaim | None:
        """Who holds a session now (None for a session the store does not know)."""
        ...

    async def claimable(self, holder: str, at: WallS, limit: int) -> dict[str, list[TurnId]]:
        """Sessions with turns not yet ended that ``holder`` could claim now (free, its own,
        or expired), each with those turns' ids in acceptance order; at most ``limit``
        turns in all, the oldest first."""
        ...

    async def notify(self, notice: Notice) -> None:
        """Tell every process sharing the store (none for a store that is not shared)."""
        ...

    def notices(self) -> AsyncIterator[Notice]:
        """The notices other processes send, for as long as the caller iterates (a store
        that is not shared yields none and waits). A lost connection is re-made by itself;
        notices sent meanwhile are lost, so the caller also polls."""
        ...

    async def start_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        turn_ids: Sequence[TurnId],
        at: WallS,
        holder: str | None = None,
    ) -> None:
        """Take the lease at ``epoch`` and mark the turns running; given a ``holder``, only
        while it holds the session's claim (else :class:`~turngate.errors.SessionTakenError`)."""
        ...

    async def join_run(
        self, session_key: str, turn_id: TurnId, run_id: RunId, epoch: Epoch, at: WallS
    ) -> None:
        """A steered turn joins the run holding the lease at ``epoch``; fenced."""
        ...

    async def write_steps(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        items: Sequence[TranscriptItem],
        at: WallS,
    ) -> None:
        """Append a step of the run holding the lease at ``epoch`` (its tool calls, a tool's
        result, the messages before them) to the transcript; fenced."""
        ...

    async def end_run(
        self,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[TranscriptItem],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        unanswered: str | None = None,
    ) -> None:
        """Release the lease held by ``(run_id, epoch)``, record the outcomes, append the
        ``exchange`` to the transcript and queue the ``orders``, in one transaction;
        fenced. With ``unanswered`` (the run wrote tool calls and did not reply), every call
        of the run left without a result gets an error result saying so."""
        ...

    async def since_messages(
        self, session_key: str, turn_ids: Sequence[TurnId], limit: int
    ) -> list[TranscriptEntry]:
        """The session's transcript from the first message of ``turn_ids`` on, at most
        ``limit`` entries (none when no message of them is written): what a run resumed
        after a restart wrote before it (its messages with its first step, then its
        steps)."""
        ...

    async def end_turns(
        self,
        outcomes: Sequence[Outcome],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        holder: str | None = None,
    ) -> None:
        """Record outcomes of turns that ended without running, and queue the ``orders``
        (notices owed for them), in one transaction; given a ``holder``, only while it holds
        the claim of every session the turns belong to (else
        :class:`~turngate.errors.SessionTakenError`, writing nothing)."""
        ...

    async def set_delivery(self, turn_id: TurnId, delivery: str) -> None:
        """Record what became of a lane turn's reply."""
        ...

    async def cron_jobs(self) -> list[CronJobState]:
        """Every scheduled job's state."""
        ...

    async def save_cron_job(self, state: CronJobState) -> None:
        """Create or replace one scheduled job's state."""
        ...

    async def transcript(self, session_key: str, limit: int) -> list[TranscriptEntry]:
        """The last ``limit`` transcript entries of a session, oldest first."""
        ...

    async def sessions(self, limit: int, offset: int = 0) -> list[SessionRecord]:
        """Sessions, most recently updated first."""
        ...

    async def session(self, session_key: str) -> SessionRecord | None:
        """One session by key."""
        ...

    async def session_turns(self, session_key: str, limit: int) -> list[TurnRecord]:
        """The last ``limit`` turns of a session, in acceptance order."""
        ...

    async def count_sessions(self) -> int:
        """How many sessions the store knows."""
        ...
