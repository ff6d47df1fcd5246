"""One session's coordination state: its queue, its running run and that run's lease.

Commands come in with the time they happen at (``now``); each returns the effects the
runtime must carry out, in order. Nothing here awaits, sleeps or reads a clock.

What each command guarantees:

- at most one run holds the session at any instant (I3): a run starts only when the previous
  one's lease has been released or fenced;
- turns start in acceptance order (I2), modulo what ``collect`` and ``interrupt`` define;
- every turn that enters ends in exactly one :class:`~turngate.core.turn.Outcome` (I1);
- nothing waits past a deadline (I4): :meth:`SessionCore.next_deadline` says when the runtime
  must call :meth:`SessionCore.tick` next;
- a report from a run that no longer holds the session changes nothing (I6).
"""

from __future__ import annotations

from dataclasses import dataclass

from turngate.core.effects import (
    CancelRun,
    Effect,
    EndRun,
    EndTurns,
    Enqueued,
    IgnoredStale,
    StartRun,
    Steered,
)
from turngate.core.lease import Lease, LeaseState, LeaseTerms
from turngate.core.queue import Batch, QueueMode, SessionQueue
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import AbortReason, Outcome, Turn, TurnEvent, TurnState, Usage
from turngate.errors import ErrorCode
from turngate.types import Epoch, MonotonicS, RunId


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Limits that apply to one session."""

    queue_turns_max: int
    lease_terms: LeaseTerms


@dataclass(frozen=True, slots=True)
class RunReplied:
    """The run produced its reply.

    ``exchange`` is what the run has still to add to the transcript, when it is more than its
    turns' messages followed by the reply: a run that called tools wrote its steps as it went,
    and ends with its last messages and its answer.
    ``usage`` is what its model calls used, summed; None when no provider reported any.
    """

    reply: str
    exchange: tuple[TranscriptItem, ...] = ()
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class RunFailed:
    """The run ended with an error (the provider's, usually)."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class RunCancelled:
    """The run's task ended by cancellation."""


RunResult = RunReplied | RunFailed | RunCancelled


@dataclass(slots=True)
class ActiveRun:
    """The run that holds the session now."""

    batch: Batch
    lease: Lease

    @property
    def run_id(self) -> RunId:
        return self.batch.run_id


class SessionCore:
    """The pure state of one session. See the module docstring for its guarantees."""

    def __init__(self, session_key: str, epoch: Epoch, policy: SessionPolicy) -> None:
        self.session_key = session_key
        self.epoch = epoch
        self.policy = policy
        self.queue = SessionQueue(policy.queue_turns_max)
        self.active: ActiveRun | None = None

    @property
    def is_idle(self) -> bool:
        """Nothing running and nothing queued: the session needs no owner."""
        return self.active is None and not self.queue

    @property
    def is_busy(self) -> bool:
        """A turn runs or waits."""
        return not self.is_idle

    def next_deadline(self) -> MonotonicS | None:
        """When :meth:`tick` must be called next, or None if nothing is pending."""
        deadlines = [self.queue.next_deadline()]
        if self.active is not None:
            deadlines.append(self.active.lease.deadline())
        return min((d for d in deadlines if d is not None), default=None)

    # -- commands -------------------------------------------------------------------------

    def submit(self, turn: Turn, mode: QueueMode, now: MonotonicS) -> list[Effect]:
        """A newly accepted turn arrives with its queue mode."""
        effects: list[Effect] = []
        if mode is QueueMode.REJECT and self.is_busy:
            return [self._end_unstarted(turn, TurnEvent.REJECT, ErrorCode.BUSY, self._busy_text())]
        if mode is QueueMode.INTERRUPT and self.is_busy:
            effects.extend(self._supersede_all(now))
        if self.queue.is_full:
            message = (
                f"session {self.session_key}: queue is full"
                f" ({self.policy.queue_turns_max} turns waiting); message refused"
            )
            effects.append(
                self._end_unstarted(turn, TurnEvent.REJECT, ErrorCode.QUEUE_FULL, message)
            )
            return effects
        turn.advance(TurnEvent.ENQUEUE)
        self.queue.append(turn, collect=mode is QueueMode.COLLECT, steer=mode is QueueMode.STEER)
        effects.append(Enqueued((turn.turn_id,)))
        effects.extend(self._start_next(now))
        return effects

    def resume(self, turns: list[Turn], now: MonotonicS) -> list[Effect]:
        """Turns that one run served when the gateway stopped resume as one batch again,
        so that the resumed run answers all of them (their messages are in its transcript
        together). They were accepted long ago: the queue's bound does not refuse them."""
        for turn in turns:
            turn.advance(TurnEvent.ENQUEUE)
        self.queue.append_batch(turns)
        return [Enqueued(tuple(turn.turn_id for turn in turns)), *self._start_next(now)]

    def take_steered(self, run_id: RunId, epoch: Epoch) -> list[Effect]:
        """The run is about to make its next model step: the ``steer`` turns at the head of
        the queue join it (one :class:`Steered` each). Nothing joins a run that no longer
        holds the session, or whose lease is being revoked."""
        if not self._holds(run_id, epoch):
            return [IgnoredStale(run_id, epoch, "a request for steered messages")]
        active = self.active
        assert active is not None
        if active.lease.state is not LeaseState.HELD:
            return []
        taken = self.queue.take_steered()
        for turn in taken:
            turn.advance(TurnEvent.START)
            active.batch.turns.append(turn)
        return [Steered(run_id, epoch, turn) for turn in taken]

    def run_started(self, run_id: RunId, epoch: Epoch, now: MonotonicS) -> None:
        """The run's start is durable and its task begins now: its lease clocks start here,
        not when the start was decided (the write may have waited for storage)."""
        if self._holds(run_id, epoch):
            assert self.active is not None
            self.active.lease.restart(now)

    def cancel_sent(self, run_id: RunId, epoch: Epoch, now: MonotonicS) -> None:
        """The run's cancellation was carried out at ``now``: its abort grace counts from
        then (an earlier effect of the same step may have waited for storage)."""
        if self._holds(run_id, epoch):
            assert self.active is not None
            self.active.lease.cancel_sent(now)

    def progress(self, run_id: RunId, epoch: Epoch, now: MonotonicS) -> list[Effect]:
        """The run made progress (a streamed delta): its stall deadline moves."""
        if not self._holds(run_id, epoch):
            return [IgnoredStale(run_id, epoch, "progress")]
        assert self.active is not None
        self.active.lease.renew(now)
        return []

    def run_ended(
        self, run_id: RunId, epoch: Epoch, result: RunResult, now: MonotonicS
    ) -> list[Effect]:
        """The run's task ended with ``result``."""
        if not self._holds(run_id, epoch):
            return [IgnoredStale(run_id, epoch, f"end ({type(result).__name__})")]
        assert self.active is not None
        active, self.active = self.active, None
        active.lease.release()
        outcomes = tuple(self._outcome(turn, active, result) for turn in active.batch.turns)
        exchange: tuple[TranscriptItem, ...] = ()
        if isinstance(result, RunReplied) and result.exchange:
            exchange = result.exchange
        elif isinstance(result, RunReplied):
            exchange = (
                *(TranscriptItem.user(turn.message, turn.turn_id) for turn in active.batch.turns),
                TranscriptItem.assistant(result.reply),
            )
        effects: list[Effect] = [EndRun(run_id, epoch, outcomes, exchange=exchange)]
        effects.extend(self._start_next(now))
        return effects

    def abort(self, run_id: RunId | None, now: MonotonicS) -> tuple[list[Effect], list[RunId]]:
        """A user aborts the running turn (``run_id`` None or its id) or one queued turn.

        Returns the effects and the ids of the turns that will end ``aborted``.
        """
        active = self.active
        if active is not None and run_id in (None, active.run_id):
            ids = [turn.turn_id for turn in active.batch.turns]
            if active.lease.state is LeaseState.HELD:
                active.lease.revoke(AbortReason.USER_ABORT, now)
                return [CancelRun(active.run_id, active.lease.epoch, AbortReason.USER_ABORT)], ids
            return [], ids
        turn = self.queue.take(run_id) if run_id is not None else None
        if turn is None:
            return [], []
        message = f"session {self.session_key}: turn {turn.turn_id} aborted by the user"
        return [self._end_unstarted(turn, TurnEvent.ABORT, ErrorCode.USER_ABORT, message)], [
            turn.turn_id
        ]

    def unstick(self, now: MonotonicS) -> tuple[list[Effect], list[RunId]]:
        """An operator forces the session free: the running run is cancelled and fenced at
        once (no grace), its turns end aborted, and the next turn starts.

        Returns the effects and the ids of the turns that ended.
        """
        active = self.active
        if active is None:
            return [], []
        lease = active.lease
        effects: list[Effect] = []
        if lease.state is LeaseState.HELD:
            lease.revoke(AbortReason.USER_ABORT, now)
            effects.append(CancelRun(active.run_id, lease.epoch, AbortReason.USER_ABORT))
        effects.append(self._fence(active))
        effects.extend(self._start_next(now))
        return effects, [turn.turn_id for turn in active.batch.turns]

    def tick(self, now: MonotonicS) -> list[Effect]:
        """Time has reached a deadline: expire, revoke or fence as due."""
        effects = self._expire_queued(now)
        active = self.active
        if active is not None:
            lease = active.lease
            deadline = lease.deadline()
            if lease.state is LeaseState.HELD and deadline is not None and deadline <= now:
                _, reason = lease.expiry()
                lease.revoke(reason, now)
                effects.append(CancelRun(active.run_id, lease.epoch, reason))
            elif lease.state is LeaseState.REVOKING and deadline is not None and deadline <= now:
                effects.append(self._fence(active))
        effects.extend(self._start_next(now))
        return effects

    # -- internals ------------------------------------------------------------------------

    def _fence(self, active: ActiveRun) -> EndRun:
        """End a revoked run that has not ended by itself: its epoch is dead from now on."""
        lease = active.lease
        lease.fence()
        self.active = None
        reason = lease.revoke_reason or AbortReason.STALLED
        outcomes = tuple(
            self._aborted(turn, active, reason, fenced=True) for turn in active.batch.turns
        )
        return EndRun(active.run_id, lease.epoch, outcomes, fenced=True)

    def _holds(self, run_id: RunId, epoch: Epoch) -> bool:
        active = self.active
        return active is not None and active.run_id == run_id and active.lease.epoch == epoch

    def _busy_text(self) -> str:
        running = f"turn {self.active.run_id} is running" if self.active else "a turn is running"
        return (
            f"session {self.session_key} is busy: {running}, {len(self.queue)} queued;"
            " queueMode 'reject' refuses messages while busy"
        )

    def _start_next(self, now: MonotonicS) -> list[Effect]:
        if self.active is not None:
            return []
        effects = self._expire_queued(now)
        batch = self.queue.pop()
        if batch is None:
            return effects
        self.epoch += 1
        deadline = min(turn.deadline for turn in batch.turns)
        lease = Lease.grant(batch.run_id, self.epoch, self.policy.lease_terms, now, deadline)
        for turn in batch.turns:
            turn.advance(TurnEvent.START)
        self.active = ActiveRun(batch, lease)
        effects.append(StartRun(batch.run_id, self.epoch, tuple(batch.turns)))
        return effects

    def _expire_queued(self, now: MonotonicS) -> list[Effect]:
        expired = self.queue.take_expired(now)
        if not expired:
            return []
        return [
            EndTurns(
                tuple(
                    self._ended(
                        turn,
                        TurnEvent.EXPIRE,
                        ErrorCode.TURN_EXPIRED,
                        f"session {self.session_key}: turn {turn.turn_id} waited past its"
                        " deadline without starting",
                    )
                    for turn in expired
                )
            )
        ]

    def _supersede_all(self, now: MonotonicS) -> list[Effect]:
        effects: list[Effect] = []
        queued = self.queue.take_all()
        if queued:
            effects.append(
                EndTurns(
                    tuple(
                        self._ended(
                            turn,
                            TurnEvent.ABORT,
                            ErrorCode.SUPERSEDED,
                            f"session {self.session_key}: superseded by a newer message"
                            " (queueMode 'interrupt') before it started",
                        )
                        for turn in queued
                    )
                )
            )
        active = self.active
        if active is not None and active.lease.state is LeaseState.HELD:
            active.lease.revoke(AbortReason.SUPERSEDED, now)
            effects.append(CancelRun(active.run_id, active.lease.epoch, AbortReason.SUPERSEDED))
        return effects

    def _end_unstarted(
        self, turn: Turn, event: TurnEvent, code: ErrorCode, message: str
    ) -> EndTurns:
        return EndTurns((self._ended(turn, event, code, message),))

    @staticmethod
    def _ended(turn: Turn, event: TurnEvent, code: ErrorCode, message: str) -> Outcome:
        turn.advance(event)
        return Outcome(turn.turn_id, turn.state, turn.turn_id, code=code, message=message)

    def _outcome(self, turn: Turn, active: ActiveRun, result: RunResult) -> Outcome:
        if isinstance(result, RunReplied):
            turn.advance(TurnEvent.REPLY)
            return Outcome(
                turn.turn_id,
                TurnState.REPLIED,
                active.run_id,
                reply=result.reply,
                usage=result.usage,
            )
        if isinstance(result, RunFailed):
            turn.advance(TurnEvent.FAIL)
            return Outcome(
                turn.turn_id,
                TurnState.FAILED,
                active.run_id,
                code=result.code,
                message=result.message,
            )
        reason = active.lease.revoke_reason or AbortReason.SHUTDOWN
        return self._aborted(turn, active, reason, fenced=False)

    def _aborted(
        self, turn: Turn, active: ActiveRun, reason: AbortReason, *, fenced: bool
    ) -> Outcome:
        turn.advance(TurnEvent.ABORT)
        what = {
            AbortReason.SUPERSEDED: "superseded by a newer message (queueMode 'interrupt')",
            AbortReason.STALLED: (
                f"no progress for {active.lease.terms.stall_timeout_s:g}s (stall_timeout)"
            ),
            AbortReason.RUN_TIMEOUT: "ran past its run_timeout or the turn's deadline",
            AbortReason.USER_ABORT: "aborted by the user",
            AbortReason.SHUTDOWN: "the run was cancelled",
        }[reason]
        tail = "; the run ignored cancellation and was fenced" if fenced else ""
        message = f"session {self.session_key}: run {active.run_id} {what}{tail}"
        return Outcome(
            turn.turn_id, TurnState.ABORTED, active.run_id, code=reason.code, message=message
        )
