"""Invariant checkers: they see every event of every gateway life, and the store at the end.

In a seed with several gateway processes on one store (``sim/cluster.py``), one checker sees
the events of every process (each event with the process that emitted it), and the cluster
tells it when a process takes a session (:meth:`Checker.session_taken`): the store then ends
what the session's previous holder left, so that holder's run is fenced from that moment.

Each check names the invariant (docs/architecture.md) it enforces:

- I1 one outcome: a turn ends at most once, every acknowledged turn ends, the client holds
  the outcome the store recorded, and a reply is real (it contains the turn's own message);
  no turn ends ``internal`` (that is a gateway bug's ending, not an outcome: a storage outage,
  a crash, a failing model each have their own).
  Over the gateway's edges, a client reads the outcome off the wire (HTTP, WebSocket,
  OpenAI) and it must be the stored one too, and a WebSocket connection carries exactly one
  terminal ``chat`` event per run id.
  A turn's ending is written whole: a replied turn has its message and its reply in the
  transcript (not missing after a crash), and the transcript holds no message or reply of a
  turn or run that did not reply (an ending its turn's stored state denies), except the
  steps of a run that called tools.
- I2 order: within one life of the gateway, a session's turns start in acceptance order
  (with several processes: the turns a process accepted itself, within one of its lives; a
  turn handed over by another process is found at a poll, after newer ones perhaps).
- I3 mutual exclusion: a lease is taken only when free, with a larger epoch; no earlier run
  of the session is still alive unless it was fenced after its full grace, or its process
  lost the session (taken over: the store fenced it); a replied turn's message and its run's
  reply are in the transcript once, not twice (two writers). With several processes, a run
  starts only in the process holding its session's claim, and a session passes to another
  process only once its holder's claim expired, and only when that holder could not renew
  it (it was down, cut off from the store, or storage failed).
- I4 bounded waiting: every turn ends by its deadline plus the abort grace; no client wait
  runs out. Lease terms: a run is cancelled when its lease expires, at the earliest of its
  last progress + ``stall_timeout_s``, its start + ``run_timeout_s`` and its turns' deadline,
  neither later (it lived past its lease) nor earlier (a ``stalled`` or ``run_timeout`` abort
  before it was due); a cancelled run is fenced once its abort grace is over, not later.
- I5 release before reply: when an outcome is delivered, its run no longer holds the lease,
  in the checker's view and in the store.
- I6 no stale actor: only the holder releases a lease; the store never has to refuse one of
  the runtime's own writes for a stale epoch (in one process, that means a stale report was
  acted upon; with several, only a process whose session another one took over since may be
  refused); every write of a zombie (a paused owner, a second process: ``sim/zombie.py``)
  is refused; every transcript entry carries a run and epoch that held the session when it
  was written.
- I7 durability: every acknowledged turn is in the store after every crash.
- I8 visibility: every abnormal event was logged at WARNING.
- I10 tool pairs: every tool call in a transcript has exactly one result
  (``sim/transcript_checks.py``, with the transcript's other checks).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode
from turngate.runtime.events import Event, EventKind
from turngate.sim.surfaces import Answer
from turngate.sim.transcript_checks import check_transcript
from turngate.sim.workload import ClientRecord
from turngate.sim.world import SIM_PREFIX
from turngate.store.base import SessionClaim, TranscriptEntry, TurnRecord

EPSILON_S = 1e-6
LEASE_SLACK_S = 1e-3
"""How late (or early) a lease may be enforced: on virtual time the owner's deadline wait
fires at the deadline itself, so this only absorbs float rounding."""
LOCAL = "local"
"""The process of a seed with one gateway process (the engine's default name)."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant."""

    invariant: str
    at: float
    message: str

    def line(self) -> str:
        return f"{self.invariant} at t={self.at:.6f}: {self.message}"


@dataclass(slots=True)
class RunInfo:
    """What the checker knows about one run of one life."""

    epoch: int
    granted_at: float = 0.0
    """When its lease clocks started: the ``lease_acquired`` event, after the start write."""
    last_progress_at: float = 0.0
    turn_ids: list[str] = field(default_factory=list)
    """The turns it started with (not those steered in): their deadlines bound its lease."""
    cancel_at: float | None = None
    fenced_at: float | None = None
    exited: bool = False
    released_at: float | None = None
    overdue: bool = False
    """Already reported as living past its lease (reported once)."""
    process: str = LOCAL
    """The gateway process it runs in."""
    deposed_at: float | None = None
    """When a process took its session since (the store freed its lease then): it can write
    nothing more, and what its own process does with it is no longer checked."""

    @property
    def over(self) -> bool:
        """Whether it can no longer hold its session: it exited, or its session was taken."""
        return self.exited or self.deposed_at is not None


@dataclass(slots=True)
class SessionView:
    """The checker's model of one session."""

    holder: tuple[str, int] | None = None
    last_epoch: int = 0
    runs: dict[tuple[str, int], RunInfo] = field(default_factory=dict)


class WarningCounter(logging.Handler):
    """Counts WARNING records of the runtime logger (for I8)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "event"):
            self.count += 1


class ProcessTrouble(Protocol):
    """When gateway processes were down or cut off from the store (``sim/cluster.py``)."""

    def blocked(self, process: str, at: float, slack_s: float) -> bool:
        """Whether ``process`` may have been unable to write at ``at``: down or cut off
        then, or catching up no more than ``slack_s`` after."""
        ...

    def delays(self, at: float, slack_s: float) -> bool:
        """Whether some process's trouble may delay a turn's end, or a client's outcome, at
        ``at``: the sessions it held wait for it, or for another process to take them."""
        ...


@dataclass(frozen=True, slots=True)
class ClusterCheck:
    """What the checker needs to know when several gateway processes share the store."""

    claim_ttl_s: float
    trouble: ProcessTrouble


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A write of a process refused for a stale epoch, judged at the end (see
    :meth:`Checker._judge_refusals`)."""

    event: Event
    process: str


@dataclass(frozen=True, slots=True)
class LeaseCheck:
    """What the checker needs to know of the lease terms (I4)."""

    stall_timeout_s: float
    run_timeout_s: float
    deadline_of: Callable[[list[str]], float | None]
    """The earliest deadline (virtual time) of these turns, from the store."""


class Checker:
    """Checks I1-I8 as events happen, and once more over the final state."""

    def __init__(
        self,
        abort_grace_s: float,
        lease_of: Callable[[str], tuple[str | None, int]],
        wall_at_zero: float,
        storage_excuses: Callable[[float, float], bool] | None = None,
        lease: LeaseCheck | None = None,
        cluster: ClusterCheck | None = None,
    ) -> None:
        self.abort_grace_s = abort_grace_s
        self.cluster = cluster
        """Set when several gateway processes share the store."""
        self.lease = lease
        """The lease terms, when known: without them the lease checks are off."""
        self.storage_excuses = storage_excuses
        self.wall_at_zero = wall_at_zero
        self.lease_of = lease_of
        self.violations: list[Violation] = []
        self.lives: dict[str, int] = {}
        """Each gateway process's current life."""
        self.sessions: dict[str, SessionView] = defaultdict(SessionView)
        self.ended: dict[str, list[Event]] = defaultdict(list)
        self.starts: dict[tuple[str, int, int, str], list[str]] = defaultdict(list)
        """The turns started by (process, life, tenure, session), in order: a process that
        lost a session and took it again (a new tenure) starts its open turns anew."""
        self.tenures: dict[tuple[str, str], int] = defaultdict(int)
        """How many times each (process, session) took the session."""
        self.accepted_by: dict[str, str] = {}
        """Which process accepted each turn (its client's first acknowledgement)."""
        self.takers: dict[str, list[tuple[float, str]]] = defaultdict(list)
        """When each session was taken, and by which process (several processes only)."""
        self.refusals: list[_Refusal] = []
        self._process = LOCAL
        """The process of the event being handled."""
        self.released: dict[tuple[str, int], float] = {}
        self.held: dict[tuple[str, int], list[float]] = {}
        """Every (run, epoch) that held a session: [acquired at, held until (inf while it
        may still hold)]."""
        self.commit_crashes: list[float] = []
        """When the gateway crashed right after a commit: a turn whose end that commit wrote
        was never delivered in that life (its client learns it from the store later)."""
        self.abnormal = 0
        self.zombie_refused = 0
        """Writes of zombies the store refused, as it must."""

    def fail(self, invariant: str, at: float, message: str) -> None:
        """Record a violation."""
        self.violations.append(Violation(invariant, at, message))

    def new_life(self, life: int, *, process: str = LOCAL) -> None:
        """The gateway ``process`` (re)started: in-memory runs of its previous life are gone."""
        self.lives[process] = life
        for view in self.sessions.values():
            if view.holder is not None and self._process_of(view, view.holder) == process:
                view.holder = None
            view.runs = {run: info for run, info in view.runs.items() if info.process != process}

    def crashed(self, at: float, *, after_commit: bool = False, process: str = LOCAL) -> None:
        """The gateway ``process`` died at ``at`` (``after_commit``: right after a commit,
        before its writers were woken): its runs were alive until then, and its leases could
        be written under only until then."""
        if after_commit:
            self.commit_crashes.append(at)
        for key, view in self.sessions.items():
            for (run_id, epoch), info in view.runs.items():
                if info.process != process:
                    continue
                self._check_alive(key, run_id, info, at, "the gateway crashed")
                held = self.held.get((run_id, epoch))
                if held is not None and held[1] > at:
                    held[1] = at

    def session_taken(
        self, at: float, session_key: str, process: str, before: SessionClaim | None
    ) -> None:
        """``process`` took ``session_key`` at ``at``, from the claim ``before`` (several
        processes only). The store freed the lease the session's run held and queued its
        turns again: every run of the session so far is fenced from now on (I3)."""
        self._check_taking(at, session_key, process, before)
        view = self.sessions[session_key]
        for run, info in view.runs.items():
            if info.deposed_at is None and info.released_at is None:
                info.deposed_at = at
            held = self.held.get(run)
            if held is not None and held[1] > at:
                held[1] = at
        view.holder = None
        self.takers[session_key].append((at, process))
        self.tenures[(process, session_key)] += 1

    def _check_taking(
        self, at: float, session_key: str, process: str, before: SessionClaim | None
    ) -> None:
        """I3: a session is taken from another process only once that one's claim expired,
        and only if it could not renew it (down, cut off, or storage failing)."""
        cluster = self.cluster
        if cluster is None or before is None or before.holder in (None, process):
            return
        holder = before.holder
        expired = (before.expires_wall or 0.0) - self.wall_at_zero
        if expired > at + EPSILON_S:
            self.fail(
                "I3",
                at,
                f"{session_key}: process {process} took the session from {holder}, whose claim"
                f" had not expired (it expires at t={expired:.6f})",
            )
        elif not cluster.trouble.blocked(
            holder, expired, cluster.claim_ttl_s
        ) and not self._storage_blocked(expired, cluster.claim_ttl_s):
            self.fail(
                "I3",
                at,
                f"{session_key}: process {process} took the session from {holder}, whose claim"
                f" expired at t={expired:.6f} though {holder} was up and connected to the"
                f" store for the {cluster.claim_ttl_s:.1f}s before: it stopped renewing it",
            )

    def zombie_write(self, at: float, session_key: str, what: str, *, refused: bool) -> None:
        """A zombie (a stale actor with the store's handle) tried a write: the store must
        have refused it (I6)."""
        if refused:
            self.zombie_refused += 1
            return
        self.fail(
            "I6",
            at,
            f"{session_key}: the store accepted a stale write of a zombie ({what}): the fencing"
            " epoch did not guard it",
        )

    # -- on every event ---------------------------------------------------------------------

    def on_event(self, event: Event, process: str = LOCAL) -> None:
        """Check ``event``, emitted by the gateway ``process``."""
        if event.abnormal:
            self.abnormal += 1
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            self._process = process
            handler(self, event)

    def _process_of(self, view: SessionView, run: tuple[str, int]) -> str | None:
        info = view.runs.get(run)
        return None if info is None else info.process

    def _accepted(self, e: Event) -> None:
        assert e.turn_id is not None
        self.accepted_by.setdefault(e.turn_id, self._process)

    def _acquired(self, e: Event) -> None:
        view = self.sessions[e.session_key]
        assert e.run_id is not None
        assert e.epoch is not None
        if view.holder is not None:
            self.fail(
                "I3", e.at, f"{e.session_key}: run {e.run_id} took the lease held by {view.holder}"
            )
        if e.epoch <= view.last_epoch:
            self.fail("I3", e.at, f"{e.session_key}: epoch {e.epoch} not above {view.last_epoch}")
        self._check_claimed(e)
        for (run_id, epoch), info in view.runs.items():
            if not info.over and info.fenced_at is None:
                self.fail(
                    "I3",
                    e.at,
                    f"{e.session_key}: run {e.run_id} started while run {run_id} (epoch {epoch})"
                    " is still alive and not fenced",
                )
        view.holder = (e.run_id, e.epoch)
        view.last_epoch = max(view.last_epoch, e.epoch)
        view.runs[(e.run_id, e.epoch)] = RunInfo(e.epoch, e.at, e.at, process=self._process)
        self.held[(e.run_id, e.epoch)] = [e.at, float("inf")]

    def _check_claimed(self, e: Event) -> None:
        """I3, several processes: a run starts only in the process that took its session
        last (that holds its claim)."""
        if self.cluster is None:
            return
        takers = self.takers[e.session_key]
        if not takers:
            self.fail(
                "I3",
                e.at,
                f"{e.session_key}: run {e.run_id} started in process {self._process}, but no"
                " process ever claimed the session",
            )
        elif takers[-1][1] != self._process:
            at, holder = takers[-1]
            self.fail(
                "I3",
                e.at,
                f"{e.session_key}: run {e.run_id} started in process {self._process}, which"
                f" does not hold the session ({holder} took it at t={at:.6f})",
            )

    def _released(self, e: Event) -> None:
        view = self.sessions[e.session_key]
        assert e.run_id is not None
        assert e.epoch is not None
        if view.holder != (e.run_id, e.epoch):
            self.fail(
                "I6",
                e.at,
                f"{e.session_key}: lease released for run {e.run_id} epoch {e.epoch},"
                f" which does not hold it (holder {view.holder})",
            )
        else:
            view.holder = None
        info = view.runs.get((e.run_id, e.epoch))
        if info is not None:
            info.released_at = e.at
        self.released[(e.run_id, e.epoch)] = e.at
        held = self.held.get((e.run_id, e.epoch))
        if held is not None:
            held[1] = min(held[1], e.at)

    def _progress(self, e: Event) -> None:
        info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
        if info is None or info.cancel_at is not None:
            return  # after a cancel, progress renews nothing
        self._check_alive(e.session_key, e.run_id or "", info, e.at, "it made progress")
        info.last_progress_at = max(info.last_progress_at, e.at)

    def _cancel(self, e: Event) -> None:
        info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
        if info is None or info.cancel_at is not None:
            return
        self._check_alive(e.session_key, e.run_id or "", info, e.at, "it was cancelled")
        self._check_not_early(e, info)
        info.cancel_at = e.at

    def _check_alive(
        self, session_key: str, run_id: str, info: RunInfo, at: float, what: str
    ) -> None:
        """I4: a run not yet cancelled must not be seen alive past its lease's expiry (the
        turn deadline, the third bound, is checked per turn at the end)."""
        terms = self.lease
        if terms is None or info.cancel_at is not None or info.over or info.overdue:
            return
        stall_at = info.last_progress_at + terms.stall_timeout_s
        run_at = info.granted_at + terms.run_timeout_s
        due = min(stall_at, run_at)
        if at <= due + LEASE_SLACK_S or self._run_blocked(info, due):
            return
        info.overdue = True
        reason = "stall_timeout" if stall_at <= run_at else "run_timeout"
        self.fail(
            "I4",
            at,
            f"{session_key}: run {run_id} (epoch {info.epoch}) outlived its lease: due at"
            f" t={due:.6f} ({reason}: started t={info.granted_at:.6f}, last progress"
            f" t={info.last_progress_at:.6f}), still not aborted when {what},"
            f" {at - due:.3f}s later",
        )

    def _check_not_early(self, e: Event, info: RunInfo) -> None:
        """I4: a lease revoked as stalled or timed out must have expired."""
        reason = e.code.value if e.code is not None else ""
        terms = self.lease
        if terms is None:
            return
        if reason == "stalled":
            due = info.last_progress_at + terms.stall_timeout_s
        elif reason == "run_timeout":
            due = info.granted_at + terms.run_timeout_s
            if e.at < due - LEASE_SLACK_S:
                # Its turns' own deadline also ends a run as run_timeout.
                turn_due = terms.deadline_of(info.turn_ids)
                if turn_due is not None:
                    due = min(due, turn_due)
        else:
            return
        if e.at < due - LEASE_SLACK_S:
            self.fail(
                "I4",
                e.at,
                f"{e.session_key}: run {e.run_id} (epoch {info.epoch}) aborted as {reason}"
                f" {due - e.at:.3f}s before its lease expired (t={due:.6f}; started"
                f" t={info.granted_at:.6f}, last progress t={info.last_progress_at:.6f})",
            )

    def _check_grace(self, e: Event, info: RunInfo, what: str) -> None:
        """I4: a cancelled run is fenced when its abort grace is over, not later."""
        if self.lease is None or info.cancel_at is None or info.fenced_at is not None:
            return
        if info.deposed_at is not None:
            return  # its process lost the session: the store fenced it
        due = info.cancel_at + self.abort_grace_s
        if e.at > due + LEASE_SLACK_S and not self._run_blocked(info, due):
            self.fail(
                "I4",
                e.at,
                f"{e.session_key}: run {e.run_id} (epoch {info.epoch}) {what}"
                f" {e.at - due:.3f}s after its abort grace ran out (cancelled"
                f" t={info.cancel_at:.6f}) without being fenced",
            )

    def _storage_blocked(self, due: float, slack_s: float | None = None) -> bool:
        """Whether a storage outage may have kept the owner from acting at ``due``."""
        slack = self.abort_grace_s if slack_s is None else slack_s
        return self.storage_excuses is not None and self.storage_excuses(due, slack)

    def _run_blocked(self, info: RunInfo, due: float) -> bool:
        """Whether storage, or its process's trouble, may have kept a run's owner from acting
        at ``due`` (its writes wait for storage to answer again)."""
        if self._storage_blocked(due):
            return True
        cluster = self.cluster
        return cluster is not None and cluster.trouble.blocked(
            info.process, due, self.abort_grace_s
        )

    def _fenced(self, e: Event) -> None:
        info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
        if info is None:
            return
        self._check_grace(e, info, "was fenced")
        info.fenced_at = e.at
        grace = self.abort_grace_s
        if info.cancel_at is None or e.at - info.cancel_at < grace - EPSILON_S:
            self.fail(
                "I3",
                e.at,
                f"{e.session_key}: run {e.run_id} fenced before its abort grace of {grace}s"
                " ran out: the session moved on without waiting for its release",
            )

    def _exited(self, e: Event) -> None:
        info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
        if info is not None:
            self._check_alive(e.session_key, e.run_id or "", info, e.at, "it exited")
            self._check_grace(e, info, "exited")
            info.exited = True

    def _started(self, e: Event) -> None:
        assert e.turn_id is not None
        process, key = self._process, e.session_key
        tenure = self.tenures[(process, key)]
        self.starts[(process, self.lives.get(process, 0), tenure, key)].append(e.turn_id)
        if not e.detail:  # a turn steered in later does not bound the lease
            info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
            if info is not None:
                info.turn_ids.append(e.turn_id)

    def _ended(self, e: Event) -> None:
        assert e.turn_id is not None
        previous = self.ended[e.turn_id]
        if previous:
            self.fail("I1", e.at, f"turn {e.turn_id} ended twice ({previous[0].state}, {e.state})")
        if e.code is ErrorCode.INTERNAL:
            self.fail("I1", e.at, f"turn {e.turn_id} ended internal (a bug): {e.detail}")
        previous.append(e)

    def _stale_write(self, e: Event) -> None:
        if self.cluster is not None:
            # Another process may have taken the session: judged at the end, since the taking
            # process hears that its claim committed after this one heard of the refusal.
            self.refusals.append(_Refusal(e, self._process))
            return
        # One process owns its sessions: a write the store refuses for a stale epoch means a
        # report from a run that no longer held the session was acted upon.
        self.fail(
            "I6",
            e.at,
            f"{e.session_key}: the store refused a write by run {e.run_id} (epoch {e.epoch}):"
            " a stale run's report changed the session's state",
        )

    def _step_refused(self, e: Event) -> None:
        # A run's step is refused when its lease is gone (fenced, ended): the fence at work.
        # Refusing a step of the run that holds the session would lose its work.
        view = self.sessions[e.session_key]
        if view.holder != (e.run_id, e.epoch):
            return
        if self.cluster is not None:
            self.refusals.append(_Refusal(e, self._process))  # as for _stale_write
            return
        self.fail(
            "I6",
            e.at,
            f"{e.session_key}: the store refused a step of run {e.run_id} (epoch {e.epoch}),"
            " which holds the session",
        )

    def _judge_refusals(self) -> None:
        """I6, several processes: each refused write was one of a process whose session
        another process took since (since its run started, or since it last took it)."""
        for refusal in self.refusals:
            e, process = refusal.event, refusal.process
            info = self.sessions[e.session_key].runs.get((e.run_id or "", e.epoch or 0))
            if info is not None and info.process == process:
                since = info.granted_at
            else:  # a run that never started: refused its start
                since = max(
                    (at for at, p in self.takers[e.session_key] if p == process and at <= e.at),
                    default=float("-inf"),
                )
            if not any(
                p != process and since - EPSILON_S <= at <= e.at + EPSILON_S
                for at, p in self.takers[e.session_key]
            ):
                what = "a step of" if e.kind is EventKind.STEP_REFUSED else "a write by"
                self.fail(
                    "I6",
                    e.at,
                    f"{e.session_key}: the store refused {what} run {e.run_id or '-'} (epoch"
                    f" {e.epoch}) of process {process}, though no other process took the"
                    " session since",
                )

    def _delivered(self, e: Event) -> None:
        view = self.sessions[e.session_key]
        if view.holder is not None and view.holder[0] == e.run_id:
            self.fail(
                "I5", e.at, f"turn {e.turn_id} delivered while its run {e.run_id} holds the lease"
            )
            return
        lease_run, _ = self.lease_of(e.session_key)
        if lease_run is not None and lease_run == e.run_id:
            self.fail(
                "I5",
                e.at,
                f"turn {e.turn_id} delivered while the store still shows run {e.run_id} holding"
                f" {e.session_key}",
            )

    # -- at the end -------------------------------------------------------------------------

    def finish(
        self,
        record: ClientRecord,
        turns: dict[str, TurnRecord],
        transcript: list[TranscriptEntry],
        warnings_logged: int,
        end_at: float,
    ) -> None:
        """Checks over the settled world: outcomes, order, deadlines, transcript, logs."""
        for key, view in self.sessions.items():
            for (run_id, _), info in view.runs.items():
                self._check_alive(key, run_id, info, end_at, "the simulation ended")
        self._judge_refusals()
        for turn_id, sent in record.acked.items():
            stored = turns.get(turn_id)
            if stored is None:
                self.fail("I7", end_at, f"acknowledged turn {turn_id} is not in the store")
                continue
            if not stored.state.is_terminal:
                deadline = stored.accepted_wall + stored.timeout_s - self.wall_at_zero
                invariant = "I4" if end_at > deadline + self.abort_grace_s else "I1"
                self.fail(
                    invariant,
                    end_at,
                    f"acknowledged turn {turn_id} never ended ({stored.state}); its deadline"
                    f" was t={deadline:.3f}",
                )
                continue
            if len(self.ended[turn_id]) != 1 and not self._ended_by_crash(stored):
                self.fail("I1", end_at, f"turn {turn_id} ended {len(self.ended[turn_id])} times")
            seen = record.outcomes.get(turn_id)
            stored_outcome = stored.outcome()
            if seen is None:
                self.fail("I1", end_at, f"client of turn {turn_id} never received its outcome")
            elif not _agrees(seen, stored_outcome):
                self.fail(
                    "I1", end_at, f"turn {turn_id}: client saw {seen}, store has {stored_outcome}"
                )
            if stored.state is TurnState.REPLIED and not _is_own_reply(stored.reply, sent.message):
                self.fail("I1", end_at, f"turn {turn_id}: reply {stored.reply!r} is not its own")
            limit = stored.accepted_wall + stored.timeout_s + self.abort_grace_s
            # A deadline that passed while the gateway was down is enforced at the restart.
            at_restart = any(e.lane == "recovery" for e in self.ended[turn_id])
            ended_wall = stored.ended_wall if stored.ended_wall is not None else limit
            if ended_wall > limit + EPSILON_S and not at_restart and not self._storage_late(limit):
                self.fail(
                    "I4",
                    end_at,
                    f"turn {turn_id} ended {ended_wall - limit:.3f}s past its deadline",
                )
        for turn in turns.values():
            if turn.turn_id not in record.acked and not turn.state.is_terminal:
                self.fail("I1", end_at, f"{turn.lane} turn {turn.turn_id} never ended")
        for turn_id, at in record.missed_deadlines:
            self.fail("I4", at, f"the client of turn {turn_id} waited past the turn's deadline")
        for turn_id in record.gave_up:
            self.fail("I4", end_at, f"the client of turn {turn_id} gave up after its retries")
        for run_id, at, what in record.extra_answers:
            self.fail("I1", at, f"run {run_id}: {what}")
        self._check_order(turns, end_at)
        check_transcript(
            self.fail, turns, transcript, lambda e: self._check_entry_holder(e, end_at), end_at
        )
        self.violations.sort(key=lambda violation: violation.at)
        if warnings_logged < self.abnormal:
            self.fail(
                "I8",
                end_at,
                f"{self.abnormal} abnormal events but only {warnings_logged} WARNING lines",
            )

    def _ended_by_crash(self, turn: TurnRecord) -> bool:
        """Whether ``turn`` ended, unseen, in the commit a crash came right after: its end
        was written, and the crash came before the owner could tell anyone."""
        if self.ended[turn.turn_id] or turn.ended_wall is None:
            return False
        at = turn.ended_wall - self.wall_at_zero
        return any(abs(at - crash) <= EPSILON_S for crash in self.commit_crashes)

    def _storage_late(self, limit_wall: float) -> bool:
        """Whether a storage outage excuses a turn for ending after ``limit_wall``: its end
        could not be written down until storage came back (and the run it ended was given
        its abort grace after that)."""
        limit = limit_wall - self.wall_at_zero
        if self.cluster is not None and self.cluster.trouble.delays(limit, self.abort_grace_s):
            return True
        if self.storage_excuses is None:
            return False
        return self.storage_excuses(limit, self.abort_grace_s)

    def _check_order(self, turns: dict[str, TurnRecord], end_at: float) -> None:
        for (process, life, _, session_key), started in self.starts.items():
            # Turns another process accepted come from the store, at a poll: maybe late.
            seqs = [
                turns[t].seq
                for t in started
                if t in turns and self.accepted_by.get(t, process) == process
            ]
            where = f"life {life}" if process == LOCAL else f"process {process}, life {life}"
            for before, after in itertools.pairwise(seqs):
                if after <= before:
                    self.fail(
                        "I2",
                        end_at,
                        f"{session_key}, {where}: turn #{after} started after turn #{before}",
                    )

    def _check_entry_holder(self, entry: TranscriptEntry, end_at: float) -> None:
        at = entry.at_wall - self.wall_at_zero
        released = self.released.get((entry.run_id, entry.epoch))
        held = self.held.get((entry.run_id, entry.epoch))
        if released is not None and at > released + EPSILON_S:
            self.fail(
                "I6",
                end_at,
                f"{entry.session_key}: run {entry.run_id} (epoch {entry.epoch}) wrote to the"
                " transcript after its lease was released",
            )
        elif held is None or not held[0] - EPSILON_S <= at <= held[1] + EPSILON_S:
            self.fail(
                "I6",
                end_at,
                f"{entry.session_key}: a transcript entry of t={at:.6f} carries run"
                f" {entry.run_id} epoch {entry.epoch}, which did not hold the session then",
            )


def _agrees(seen: Outcome | Answer, stored: Outcome | None) -> bool:
    """Whether a client's outcome (from the engine, or read off an edge) is the store's."""
    return seen.agrees(stored) if isinstance(seen, Answer) else seen == stored


def _is_own_reply(reply: str | None, message: str) -> bool:
    """A real reply of the sim model names the turn's own message on a line of its own (a
    merged or steered reply has one line per message it answers)."""
    if reply is None or not reply.startswith(SIM_PREFIX):
        return False
    return message in (line.removeprefix(SIM_PREFIX) for line in reply.split("\n"))


_HANDLERS: dict[EventKind, Callable[[Checker, Event], None]] = {
    EventKind.ACCEPTED: Checker._accepted,
    EventKind.LEASE_ACQUIRED: Checker._acquired,
    EventKind.LEASE_RELEASED: Checker._released,
    EventKind.CANCEL_REQUESTED: Checker._cancel,
    EventKind.PROGRESS: Checker._progress,
    EventKind.FENCED: Checker._fenced,
    EventKind.RUN_EXITED: Checker._exited,
    EventKind.STARTED: Checker._started,
    EventKind.ENDED: Checker._ended,
    EventKind.DELIVERED: Checker._delivered,
    EventKind.STALE_WRITE_REFUSED: Checker._stale_write,
    EventKind.STEP_REFUSED: Checker._step_refused,
}
