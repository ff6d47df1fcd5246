"""Proof that the simulator can fail: four bugs of the field reports, three of storage (two
of a full disk, and a run that fails its turn when the database cannot answer its transcript
read), four of issue 11 (a watchdog that stops aborting stalled runs, a run timeout measured from
the wrong instant, a store that no longer refuses stale epochs, a turn's outcome and its
transcript written in two transactions), three in the gateway's edges (a WebSocket that
relays a run twice, a final event built from the streamed text, an OpenAI stream that
repeats what it streamed) and five in the channels (a message acknowledged to its platform
before it is stored, an outbox that sends a conversation's replies side by side, a callback of
a finished connection that acts, a delivery recorded sent that the platform never took, a
Discord sequence number moved on when a message is received rather than stored), two of
tool calls (left open by a run's end, or by a crash), and two of several gateway processes on
one store (claims renewed too late, a run started without the session's claim), planted one
at a time.

Each fixture patches the real runtime the way a plausible mistake would, for this test only.
The simulator must find a violating seed within 1,000 seeds, and name the invariant the bug
breaks. The seed found is printed (``pytest -s``) so it can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from turngate.channels.base import InboundMessage
from turngate.channels.discord.gateway import GatewayLink
from turngate.channels.generation import Generation
from turngate.channels.inbound import Admitted, ChannelInbox
from turngate.channels.outbox import OutboxWorker
from turngate.core.effects import Effect, EndRun
from turngate.core.lease import Lease, LeaseState
from turngate.core.session import SessionCore
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import AbortReason, Outcome
from turngate.errors import ChannelError, StaleEpochError
from turngate.gateway import openai_api, openai_stream
from turngate.gateway.ws_methods import Methods, RunLedger
from turngate.runtime.claims import SessionClaims
from turngate.runtime.deltas import DeltaStream
from turngate.runtime.engine import Engine, Ticket
from turngate.runtime.owner import SessionOwner
from turngate.runtime.run_host import OwnerRunHost
from turngate.sim.channel_world import draw_channel
from turngate.sim.runner import SimResult, run_seed, seed_params
from turngate.sim.tools import draw_tools
from turngate.store.base import Delivery, DeliveryOrder, DeliveryState, SessionClaim
from turngate.store.rows import INTERRUPTED_SELECT, REQUEUE
from turngate.store.sqlite import SqliteStore
from turngate.store.sqlite_commit import GroupCommits, _GroupCommit
from turngate.store.sqlite_outbox import insert_orders
from turngate.store.sqlite_transcript import append_items, close_calls
from turngate.types import Epoch, MonotonicS, RunId, TurnId, WallS

T = TypeVar("T")

SEEDS_MAX = 1000


def first_failure(*, chat_platform: bool = False, tools: bool = False) -> SimResult:
    """The first of :data:`SEEDS_MAX` seeds that fails; with ``chat_platform``, of the seeds
    that have one (a channel's bug cannot show in the others); with ``tools``, of the seeds
    whose model calls tools."""
    seeds = (
        s
        for s in itertools.count()
        if (not chat_platform or draw_channel(s) is not None)
        and (not tools or draw_tools(s, 1.0) is not None)
    )
    for seed in itertools.islice(seeds, SEEDS_MAX):
        result = run_seed(seed)
        if not result.ok:
            print(f"found by seed {seed}: {result.violations[:1] or result.error[-300:]}")
            return result
    pytest.fail(f"none of {SEEDS_MAX} seeds found the planted bug")


def first_cluster_failure(invariant: str, text: str) -> SimResult:
    """The first of :data:`SEEDS_MAX` seeds with several gateway processes that breaks
    ``invariant`` with a violation saying ``text``. A seed failing otherwise is passed over
    (printed): a bug of the runtime's own that is still open must not hide the planted one."""
    seeds = (s for s in itertools.count() if seed_params(s).cluster is not None)
    for seed in itertools.islice(seeds, SEEDS_MAX):
        result = run_seed(seed)
        if any(v.invariant == invariant and text in v.message for v in result.violations):
            print(f"found by seed {seed}: {result.violations[:1]}")
            return result
        if not result.ok:
            print(f"seed {seed} fails otherwise: {result.violations[:1] or result.error[-300:]}")
    pytest.fail(f"none of {SEEDS_MAX} seeds with several processes found the planted bug")


@pytest.fixture
def reply_before_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeds 000/001: the outcome reaches the client before the session's hold is released."""
    original = SessionOwner._apply

    async def apply(self: SessionOwner, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, EndRun):
                for outcome in effect.outcomes:
                    self.engine.deliver(self.session_key, outcome, "direct")
        await original(self, effects)

    monkeypatch.setattr(SessionOwner, "_apply", apply)


@pytest.fixture
def wait_without_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 002: the owner waits for its next command with no deadline, so nothing expires."""

    async def wait(self: SessionOwner, deadline: MonotonicS) -> bool:
        del deadline
        self._wake.clear()
        await self._wake.wait()
        return True

    monkeypatch.setattr(SessionOwner, "_wait", wait)


@pytest.fixture
def recovery_without_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 003: recovery frees a stuck session at once, not waiting for the run to end."""
    original = Lease.deadline

    def deadline(self: Lease) -> MonotonicS | None:
        if self.state is LeaseState.REVOKING:
            return self.revoked_at
        return original(self)

    monkeypatch.setattr(Lease, "deadline", deadline)


@pytest.fixture
def callback_without_generation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004: a finished run's callback is acted upon without checking its generation."""

    def holds(self: SessionCore, run_id: RunId, epoch: Epoch) -> bool:
        del run_id, epoch
        return self.active is not None

    monkeypatch.setattr(SessionCore, "_holds", holds)


@pytest.fixture
def failed_commit_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the group commit acknowledges its writers even when COMMIT failed (the
    issue's "ROLLBACK inside the callback" class: waiters told the wrong thing)."""

    def commit(self: GroupCommits, group: _GroupCommit) -> None:
        if group.lost is not None:
            return
        if self._group is group:
            self._group = None
        with contextlib.suppress(sqlite3.Error):
            self.connection.execute("COMMIT")
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(None)

    monkeypatch.setattr(GroupCommits, "_commit", commit)


@pytest.fixture
def storage_failure_ends_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the session's owner gives up on a failed write instead of trying again
    (seed 002's silent session: its turns wait for a restart)."""

    async def durably(
        self: SessionOwner, what: str, run_id: RunId | None, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        del what, run_id
        return await attempt()

    async def no_poll(self: SessionClaims) -> None:
        # Nor does the poll take the session back (it would, within a second): only a
        # restart does, as before sessions were claimed.
        await asyncio.Event().wait()

    monkeypatch.setattr(SessionOwner, "durably", durably)
    monkeypatch.setattr(SessionClaims, "poll_forever", no_poll)


@pytest.fixture
def transcript_read_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that goes away: a run reads its session's transcript once, and fails its
    turn when storage cannot answer, instead of waiting for it as a write does."""

    async def read(self: OwnerRunHost, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        del what
        return await attempt()

    monkeypatch.setattr(OwnerRunHost, "read", read)


@pytest.fixture
def lease_renewed_on_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, class 1: the watchdog renews the running lease on every tick instead of only
    on progress, so no run is ever aborted as stalled (a run timeout, much later, ends it)."""
    original = SessionCore.tick

    def tick(self: SessionCore, now: MonotonicS) -> list[Effect]:
        if self.active is not None:
            self.active.lease.renew(now)
        return original(self, now)

    monkeypatch.setattr(SessionCore, "tick", tick)


@pytest.fixture
def run_timeout_from_last_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, class 2: the run timeout is measured from the last progress instead of the
    grant, so a run that keeps streaming is never timed out."""

    def expiry(self: Lease) -> tuple[MonotonicS, AbortReason]:
        stall_at = self.last_progress_at + self.terms.stall_timeout_s
        run_at = min(self.last_progress_at + self.terms.run_timeout_s, self.hard_deadline)
        if stall_at < run_at:
            return stall_at, AbortReason.STALLED
        return run_at, AbortReason.RUN_TIMEOUT

    monkeypatch.setattr(Lease, "expiry", expiry)


@pytest.fixture
def store_without_fencing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, class 3: the fencing epoch is gone from the SQL guards of ``start_run`` and
    ``end_run`` (the run id and the free lease are still checked). One process never notices;
    a paused owner or a second process on the same database does."""

    async def start_run(
        self: SqliteStore,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        turn_ids: Sequence[TurnId],
        at: WallS,
        holder: str | None = None,
    ) -> None:
        async with self._tx.write("start a run") as db:
            taken = db.execute(
                "UPDATE sessions SET epoch = ?, lease_run_id = ?, lease_granted_wall = ?,"
                " updated_wall = ? WHERE key = ? AND lease_run_id IS NULL"
                " AND (? IS NULL OR claim_holder = ?)",
                (epoch, run_id, at, at, session_key, holder, holder),
            ).rowcount
            if taken != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            db.executemany(
                "UPDATE turns SET state = 'running', run_id = ?, epoch = ?, started_wall = ?"
                " WHERE turn_id = ? AND state IN ('accepted', 'queued')",
                [(run_id, epoch, at, turn_id) for turn_id in turn_ids],
            )

    async def end_run(
        self: SqliteStore,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[TranscriptItem],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        unanswered: str | None = None,
    ) -> None:
        async with self._tx.write("end a run") as db:
            released = db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL,"
                " updated_wall = ? WHERE key = ? AND lease_run_id = ?",
                (at, session_key, run_id),
            ).rowcount
            if released != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            close_calls(db, session_key, run_id, epoch, unanswered, at)
            append_items(db, session_key, exchange, run_id, epoch, at)
            self._record_outcomes(db, outcomes, at)
            insert_orders(db, orders, at)

    monkeypatch.setattr(SqliteStore, "start_run", start_run)
    monkeypatch.setattr(SqliteStore, "end_run", end_run)


@pytest.fixture
def outcome_and_transcript_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, class 4: ``end_run`` commits the release and the outcomes, then appends the
    exchange in a second transaction. Only a crash between the two commits shows it: a turn
    ended ``replied`` whose message and reply are not in the transcript."""

    async def end_run(
        self: SqliteStore,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        outcomes: Sequence[Outcome],
        exchange: Sequence[TranscriptItem],
        at: WallS,
        orders: Sequence[DeliveryOrder] = (),
        unanswered: str | None = None,
    ) -> None:
        async with self._tx.write("end a run") as db:
            released = db.execute(
                "UPDATE sessions SET lease_run_id = NULL, lease_granted_wall = NULL,"
                " updated_wall = ? WHERE key = ? AND lease_run_id = ? AND epoch = ?",
                (at, session_key, run_id, epoch),
            ).rowcount
            if released != 1:
                raise StaleEpochError(session_key, run_id, epoch)
            self._record_outcomes(db, outcomes, at)
            insert_orders(db, orders, at)
        if exchange or unanswered:
            async with self._tx.write("append the exchange") as db:
                close_calls(db, session_key, run_id, epoch, unanswered, at)
                append_items(db, session_key, exchange, run_id, epoch, at)

    monkeypatch.setattr(SqliteStore, "end_run", end_run)


@pytest.fixture
def calls_left_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ends before its tool calls returned (aborted, fenced, failed) leaves them
    without a result: the next model call of the session would be refused."""
    monkeypatch.setattr(SessionOwner, "_unanswered", lambda self, effect: None)


@pytest.fixture
def recovery_that_leaves_calls_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a crash mid-tool, recovery (the restarted process's claim of the session) frees
    the lease but does not close the calls that were running."""

    def end_previous(
        db: sqlite3.Connection, claim: SessionClaim, lease_run_id: RunId | None, at: WallS
    ) -> dict[TurnId, RunId]:
        del lease_run_id, at  # the calls its run left open are not closed
        key = claim.session_key
        interrupted = dict(db.execute(INTERRUPTED_SELECT.format(p="?"), (key,)).fetchall())
        db.execute(REQUEUE.format(p="?"), (key,))
        return interrupted

    # Patched for the whole test (not around each claim: claims overlap, and patches nested
    # out of order would leave it patched for the tests after).
    monkeypatch.setattr("turngate.store.sqlite._end_previous", end_previous)


@pytest.fixture
def ledger_that_forgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WebSocket connection relays a run again when its client repeats the request."""

    def claim(self: RunLedger, run_id: str) -> bool:
        del self, run_id
        return True

    monkeypatch.setattr(RunLedger, "claim", claim)


@pytest.fixture
def final_event_from_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WebSocket's final ``chat`` event carries the text it streamed, not the reply."""
    original = Methods._stream_deltas

    async def stream_deltas(self: Methods, ticket: Ticket, deltas: DeltaStream, relay: Any) -> None:
        await original(self, ticket, deltas, relay)
        if relay.text and ticket.outcome.done() and not ticket.outcome.exception():
            outcome = ticket.outcome.result()
            if outcome.reply is not None:
                # The bug: the outcome is rebuilt from what this connection streamed.
                object.__setattr__(outcome, "reply", relay.text)

    monkeypatch.setattr(Methods, "_stream_deltas", stream_deltas)


@pytest.fixture
def stream_that_repeats_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI stream ends with the whole reply, though it streamed part of it already."""
    original = openai_stream._sse

    async def sse(
        engine: Engine, ticket: Ticket, model: str, created: int, **kwargs: Any
    ) -> AsyncIterator[str]:
        streamed = False
        async for event in original(engine, ticket, model, created, **kwargs):
            if '"finish_reason":"stop"' in event and streamed:
                outcome = ticket.outcome.result()
                choice = {"index": 0, "delta": {"content": outcome.reply}, "finish_reason": None}
                yield openai_stream._event({"choices": [choice]})
            streamed = streamed or '"content"' in event
            yield event

    monkeypatch.setattr(openai_api, "_sse", sse)


@pytest.fixture
def acked_before_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel's inbox answers before the message is a stored turn (it stores it in the
    background), so the platform forgets a message the store may never get."""
    original = ChannelInbox.accept

    async def accept(self: ChannelInbox, message: InboundMessage) -> Admitted:
        task = asyncio.get_running_loop().create_task(original(self, message))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return Admitted(True)

    monkeypatch.setattr(ChannelInbox, "accept", accept)


@pytest.fixture
def outbox_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox sends every pending delivery of a conversation at once, not the oldest."""

    async def send_due(self: OutboxWorker) -> float | None:
        pending = await self.outbox.pending(self.channel_id, self.settings.batch)
        now = self.clock.wall()
        due = [d for d in pending if d.next_attempt_wall <= now]
        if not due:
            return (
                None if not pending else max(0.0, min(d.next_attempt_wall for d in pending) - now)
            )
        async with asyncio.TaskGroup() as group:
            for delivery in due:
                group.create_task(self._deliver(delivery))
        return 0.0

    monkeypatch.setattr(OutboxWorker, "send_due", send_due)


@pytest.fixture
def callbacks_without_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 004's bug on a channel: a connection's callbacks are not tied to it."""

    def guard(self: Generation[Any], callback: Callable[..., T]) -> Callable[..., T]:
        del self
        return callback

    monkeypatch.setattr(Generation, "guard", guard)


@pytest.fixture
def delivery_recorded_unsent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed send is recorded as sent (the error is swallowed)."""
    original = OutboxWorker._attempt_failed

    async def attempt_failed(self: OutboxWorker, delivery: Delivery, exc: Exception) -> None:
        if isinstance(exc, ChannelError):
            await self.outbox.finish(delivery.delivery_id, DeliveryState.SENT, self.clock.wall())
            return
        await original(self, delivery, exc)

    monkeypatch.setattr(OutboxWorker, "_attempt_failed", attempt_failed)


@pytest.fixture
def sequence_moved_on_receipt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discord: the sequence the channel reports in heartbeats and resumes from moves past a
    dispatch when it is received, not once its message is stored. A connection that drops
    with messages received but not yet stored resumes after them: Discord never sends them
    again."""
    original = GatewayLink._on_dispatch

    def on_dispatch(self: GatewayLink, frame: dict[str, Any]) -> None:
        original(self, frame)
        seq = frame.get("s")
        if isinstance(seq, int) and self.session_id is not None:
            self._stored(seq)

    monkeypatch.setattr(GatewayLink, "_on_dispatch", on_dispatch)


@pytest.fixture
def claims_renewed_too_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes: a process renews its claims once their whole time to live has
    passed since the last renewal, not a third of it. They lapse before it renews them, and
    another process with a turn for one of those sessions takes it over from a process that
    is up: its runs are cut off, their turns run again."""

    async def poll(self: SessionClaims) -> None:
        now = self.clock.now()
        if now - self._renewed_at >= self.ttl_s:
            await self._renew()
            self._renewed_at = now
        await self._release_idle(now)
        self._forget_unwatched()
        await self.settle_watched()
        await self.sweep()

    monkeypatch.setattr(SessionClaims, "_poll", poll)


@pytest.fixture
def run_started_without_the_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several processes: a run starts without the store checking that its process still
    holds the session's claim (no ``holder``; the epoch is still checked). A process back
    from a pause, before its next renewal tells it that another took its session, starts a
    run there."""
    original = SqliteStore.start_run

    async def start_run(
        self: SqliteStore,
        session_key: str,
        run_id: RunId,
        epoch: Epoch,
        turn_ids: Sequence[TurnId],
        at: WallS,
        holder: str | None = None,
    ) -> None:
        del holder
        await original(self, session_key, run_id, epoch, turn_ids, at)

    monkeypatch.setattr(SqliteStore, "start_run", start_run)


@pytest.mark.usefixtures("claims_renewed_too_late")
def test_the_simulator_finds_claims_that_lapse_while_their_process_is_up() -> None:
    first_cluster_failure("I3", "it stopped renewing it")


@pytest.mark.usefixtures("run_started_without_the_claim")
def test_the_simulator_finds_a_run_started_by_a_process_that_lost_its_session() -> None:
    first_cluster_failure("I3", "which does not hold the session")


@pytest.mark.usefixtures("sequence_moved_on_receipt")
def test_the_simulator_finds_a_discord_sequence_moved_on_before_the_message_was_stored() -> None:
    first = first_failure(chat_platform=True).violations[0]
    assert first.invariant == "I7"
    assert "is no turn" in first.message


@pytest.mark.usefixtures("acked_before_stored")
def test_the_simulator_finds_a_message_acked_to_its_platform_before_it_was_stored() -> None:
    first = first_failure(chat_platform=True).violations[0]
    assert first.invariant in {"I7", "I4"}
    assert "is no turn" in first.message


@pytest.mark.usefixtures("outbox_side_by_side")
def test_the_simulator_finds_an_outbox_that_breaks_a_conversations_order() -> None:
    first = first_failure(chat_platform=True).violations[0]
    assert first.invariant == "I9"
    assert "out of order" in first.message


@pytest.mark.usefixtures("callbacks_without_generation")
def test_the_simulator_finds_a_finished_connections_callback_acting() -> None:
    first = first_failure(chat_platform=True).violations[0]
    assert first.invariant == "I6"
    assert "after its connection was over" in first.message


@pytest.mark.usefixtures("delivery_recorded_unsent")
def test_the_simulator_finds_a_delivery_recorded_sent_that_never_went_out() -> None:
    first = first_failure(chat_platform=True).violations[0]
    assert first.invariant == "I9"
    assert "recorded sent" in first.message


@pytest.mark.usefixtures("ledger_that_forgets")
def test_the_simulator_finds_a_run_relayed_twice_on_one_websocket() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I1"
    assert "terminal chat events on one WebSocket" in first.message


@pytest.mark.usefixtures("final_event_from_the_stream")
def test_the_simulator_finds_a_final_event_built_from_the_streamed_text() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I1"
    assert "client saw" in first.message


@pytest.mark.usefixtures("stream_that_repeats_itself")
def test_the_simulator_finds_an_openai_stream_that_repeats_what_it_streamed() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I1"
    assert "client saw" in first.message


@pytest.mark.usefixtures("outcome_and_transcript_apart")
def test_the_simulator_finds_an_outcome_written_apart_from_its_transcript() -> None:
    # The turn's ending was not written whole: a replied turn without its exchange (I1), or
    # the exchange written after the release, refused because the run held nothing by then
    # (I6: the store had to refuse one of the runtime's own writes).
    first = first_failure().violations[0]
    assert (first.invariant, "in the transcript" in first.message) == ("I1", True) or (
        first.invariant == "I6" and "the store refused a write" in first.message
    )


@pytest.mark.usefixtures("lease_renewed_on_every_tick")
def test_the_simulator_finds_a_watchdog_that_no_longer_aborts_stalled_runs() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I4"
    assert "outlived its lease" in first.message


@pytest.mark.usefixtures("run_timeout_from_last_progress")
def test_the_simulator_finds_a_run_timeout_measured_from_the_last_progress() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I4"
    assert "outlived its lease" in first.message


@pytest.mark.usefixtures("store_without_fencing")
def test_the_simulator_finds_a_store_that_accepts_stale_epochs() -> None:
    # A zombie's write is accepted (I6); or, first, its consequence: the zombie took the
    # free session with its stale epoch, so the store refuses the real owner's next write.
    first = first_failure().violations[0]
    assert first.invariant == "I6"
    assert "zombie" in first.message or "the store refused a write" in first.message


@pytest.mark.usefixtures("failed_commit_acknowledged")
def test_the_simulator_finds_writes_acknowledged_that_a_full_disk_lost() -> None:
    # Its state and the store's part ways: a lease the store still shows (I5), a turn
    # acknowledged but not stored (I7), an outcome the store does not have (I1), or a run
    # whose lease the store lost, so that its end is refused as stale (I6).
    assert first_failure().violations[0].invariant in {"I1", "I5", "I6", "I7"}


@pytest.mark.usefixtures("storage_failure_ends_the_owner")
def test_the_simulator_finds_a_session_silenced_by_a_full_disk() -> None:
    invariants = {violation.invariant for violation in first_failure().violations}
    assert invariants & {"I1", "I4"}


@pytest.mark.usefixtures("transcript_read_not_retried")
def test_the_simulator_finds_a_turn_failed_by_a_database_gone_for_a_moment() -> None:
    first = first_failure().violations[0]
    assert first.invariant == "I1"
    assert "ended internal" in first.message


@pytest.mark.usefixtures("reply_before_release")
def test_the_simulator_finds_a_reply_delivered_before_release() -> None:
    assert first_failure().violations[0].invariant == "I5"


@pytest.mark.usefixtures("wait_without_deadline")
def test_the_simulator_finds_a_wait_with_no_deadline() -> None:
    assert first_failure().violations[0].invariant == "I4"


@pytest.mark.usefixtures("recovery_without_release")
def test_the_simulator_finds_recovery_that_does_not_wait_for_release() -> None:
    assert first_failure().violations[0].invariant == "I3"


@pytest.mark.usefixtures("callback_without_generation_check")
def test_the_simulator_finds_a_stale_callback_acted_upon() -> None:
    assert first_failure().violations[0].invariant == "I6"


@pytest.mark.usefixtures("calls_left_open")
def test_the_simulator_finds_tool_calls_an_ended_run_left_without_a_result() -> None:
    first = first_failure(tools=True).violations[0]
    assert first.invariant == "I10"
    assert "has 0 results" in first.message


@pytest.mark.usefixtures("recovery_that_leaves_calls_open")
def test_the_simulator_finds_tool_calls_a_crash_left_without_a_result() -> None:
    # Besides the open call (I10), the resumed run's model may be refused or answer a
    # conversation with a call and no result; the first violation is the open call.
    first = first_failure(tools=True).violations[0]
    assert first.invariant == "I10"
    assert "has 0 results" in first.message


def test_without_planted_bugs_the_same_seeds_pass() -> None:
    for seed in range(50):
        result = run_seed(seed)
        assert result.ok, (seed, result.violations[:3], result.error[-500:])
