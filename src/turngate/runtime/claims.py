"""This process's claims on sessions: which sessions it runs, when several gateway processes
share one store (on SQLite, the only process is ``local`` and holds every session it runs).

A session's turns run only in the process that holds its claim (:meth:`~turngate.store.base.
Store.claim_session`). The owner of a session takes the claim before anything else
(:meth:`SessionClaims.take`); once taken, the claim stays with this process while the session
is active and for :attr:`SessionClaims.linger_s` after, so that the next turn needs no claim
write, then it is released for any process to take. While held it is renewed every third of
its time to live; a claim found taken by another process (this one was paused, or cut off from
the store, past its expiry) makes the session's owner step down: its writes would be refused
anyway (the store fences them by holder and epoch).

A turn accepted here for a session another process holds is *handed off*: that process is
told (a notice) and runs it; this process watches the turn in the store and settles its
waiting client from there (:meth:`SessionClaims.watch`), woken by the holder's notice that it
ended or, at the latest, at the next poll. The poll (every ``poll_s``) is also the fallback for
a lost notice and how a dead process's sessions are taken over: it looks for sessions with
open turns that nobody holds (or whose claim expired) and takes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from turngate.core.clock import Clock
from turngate.core.turn import Outcome
from turngate.errors import StoreError
from turngate.store.base import Claimed, Notice, NoticeKind, Store
from turngate.types import Epoch, MonotonicS, TurnId

log = logging.getLogger("turngate.runtime")

SWEEP_TURNS_MAX = 1000
"""Open turns one poll looks at (the oldest first); the next poll sees the rest."""


class ClaimsHost(Protocol):
    """What the claims need of the engine."""

    def adopt(self, session_key: str, turn_ids: list[TurnId]) -> None:
        """Open turns of a session this process may run: have its owner take them."""
        ...

    def step_down(self, session_key: str) -> None:
        """Another process took the session: its owner here must stop."""
        ...

    def settle_remote(self, outcome: Outcome) -> None:
        """A turn another process ran ended: whoever waits here gets its outcome."""
        ...

    def waiting(self, turn_id: TurnId) -> bool:
        """Whether a client here still waits for ``turn_id``'s outcome."""
        ...


@dataclass(slots=True)
class _Held:
    idle_since: MonotonicS | None = None
    """None while the session's owner is active; then when it went idle."""
    epoch: Epoch | None = None
    """The session's epoch as its owner here left it idle, every write of it durable, on a
    store no other process shares (the next owner needs no read: nobody else starts a run);
    None when not known. With a shared store the epoch is read again: a process cut off past
    its claim does not know it lost it, and must learn from the store's fence which one."""


@dataclass(slots=True)
class SessionClaims:
    """See the module docstring."""

    store: Store
    clock: Clock
    holder: str
    """This process's name (unique among the processes sharing the store)."""
    ttl_s: float
    poll_s: float
    _held: dict[str, _Held] = field(default_factory=dict)
    _foreign: dict[str, MonotonicS] = field(default_factory=dict)
    """Sessions another process was seen to hold, and until when (its claim's expiry)."""
    _watched: dict[TurnId, str] = field(default_factory=dict)
    """Turns accepted here that another process runs -> their session."""
    accepting: dict[TurnId, asyncio.Task[Any]] = field(default_factory=dict)
    """Turns being accepted here (their store write and hand-over to their owner, in one
    task): a turn is not taken from the store before its acceptance is over (the owner gets
    a new one from the acceptance; a retry of a stored one, from the store)."""
    host: ClaimsHost | None = None
    """The engine (set once it is built)."""
    _releasing: asyncio.Future[None] | None = None
    _renewed_at: MonotonicS = 0.0
    _failing: bool = False

    @property
    def linger_s(self) -> float:
        """How long an idle session's claim is kept before it is released."""
        return self.ttl_s

    @property
    def held(self) -> int:
        """How many sessions this process holds."""
        return len(self._held)

    def holds(self, session_key: str) -> bool:
        """Whether this process holds ``session_key``."""
        return session_key in self._held

    # -- taking, keeping, giving up -------------------------------------------------------

    async def take(self, session_key: str) -> Claimed | None:
        """Claim ``session_key`` for this process's owner of it. None when this process
        holds it already (nothing to adopt); else what the store answered: taken with the
        session's open turns, or held by another process."""
        held = self._held.get(session_key)
        if held is not None:
            held.idle_since = None
            return None
        if self._releasing is not None:
            # A release of this very session may be in flight: claiming first would have the
            # release undo the claim.
            await asyncio.shield(self._releasing)
            return await self.take(session_key)
        claimed = await self.store.claim_session(
            session_key, self.holder, self.clock.wall(), self.ttl_s
        )
        if claimed.taken:
            self._held[session_key] = _Held()
            self._foreign.pop(session_key, None)
        elif claimed.claim.expires_wall is not None:
            remaining = claimed.claim.expires_wall - self.clock.wall()
            self._foreign[session_key] = self.clock.now() + remaining
        return claimed

    def held_elsewhere(self, session_key: str) -> bool:
        """Whether another process was seen to hold ``session_key`` and its claim has not
        expired since (a new turn for it is handed off without trying to claim it)."""
        until = self._foreign.get(session_key)
        if until is None:
            return False
        if until <= self.clock.now():
            del self._foreign[session_key]
            return False
        return True

    def idle(self, session_key: str, epoch: Epoch | None = None) -> None:
        """The session's owner here ended (nothing to run): keep the claim a while, and the
        session's ``epoch`` if the owner left every write of it durable."""
        held = self._held.get(session_key)
        if held is not None:
            held.idle_since = self.clock.now()
            held.epoch = None if self.store.shared else epoch

    def idle_epoch(self, session_key: str) -> Epoch | None:
        """The epoch the session's last owner here left it at (see :meth:`idle`), once: the
        owner asking for it changes it."""
        held = self._held.get(session_key)
        if held is None:
            return None
        epoch, held.epoch = held.epoch, None
        return epoch

    def lost(self, session_key: str) -> None:
        """The store refused a write of this process for ``session_key``: another holds it."""
        self._held.pop(session_key, None)

    async def release_all(self) -> None:
        """Give up every claim (shutting down: other processes take the sessions at once)."""
        keys, self._held = list(self._held), {}
        if keys:
            await self.store.release_claims(self.holder, keys)

    # -- handing off ----------------------------------------------------------------------

    def watch(self, session_key: str, turn_ids: Iterable[TurnId]) -> None:
        """Settle these turns' waiting clients from the store: another process runs them."""
        for turn_id in turn_ids:
            self._watched[turn_id] = session_key

    async def hand_off(self, session_key: str, turn_ids: Iterable[TurnId]) -> None:
        """Turns accepted here for a session another process holds: tell it, and watch them."""
        self.watch(session_key, turn_ids)
        try:
            await self.store.notify(Notice(NoticeKind.TURN, session_key))
        except StoreError as exc:
            log.warning(
                "session %s: could not tell the process holding it about a new turn (%s);"
                " it finds the turn at its next poll",
                session_key,
                exc.message,
                extra={"session_key": session_key},
            )

    async def announce_ended(self, session_key: str) -> None:
        """Turns this process ran ended; a process whose clients wait for them reads them."""
        if not self.store.shared:
            return
        with suppress(StoreError):  # the waiting process polls
            await self.store.notify(Notice(NoticeKind.ENDED, session_key))

    async def settle_watched(self, session_keys: set[str] | None = None) -> None:
        """Read the watched turns (of ``session_keys``, or all) and settle the ended ones."""
        ids = [
            turn_id
            for turn_id, key in self._watched.items()
            if session_keys is None or key in session_keys
        ]
        if not ids:
            return
        for record in await self.store.get_turns(ids):
            outcome = record.outcome()
            if outcome is not None:
                self._watched.pop(record.turn_id, None)
                self._host.settle_remote(outcome)

    # -- the poll and the notices ---------------------------------------------------------

    async def sweep(self) -> dict[str, list[TurnId]]:
        """Have owners take the open turns of the sessions this process may run now; returns
        them by session."""
        found = await self.store.claimable(self.holder, self.clock.wall(), SWEEP_TURNS_MAX)
        adopted: dict[str, list[TurnId]] = {}
        for session_key, turn_ids in found.items():
            fresh = [turn_id for turn_id in turn_ids if turn_id not in self.accepting]
            if fresh:
                adopted[session_key] = fresh
                self._host.adopt(session_key, fresh)
        return adopted

    async def poll_forever(self) -> None:
        """Every ``poll_s``: sweep, settle watched turns, renew and release claims."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._poll()
            except StoreError as exc:
                if not self._failing:
                    log.warning(
                        "cannot look for sessions to run or renew claims: %s; trying again"
                        " every %gs",
                        exc.message,
                        self.poll_s,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("the store answers again: looking for sessions to run")
                self._failing = False

    async def _poll(self) -> None:
        now = self.clock.now()
        if now - self._renewed_at >= self.ttl_s / 3:
            await self._renew()
            self._renewed_at = now
        await self._release_idle(now)
        self._forget_unwatched()
        await self.settle_watched()
        await self.sweep()

    async def _renew(self) -> None:
        keys = list(self._held)
        if not keys:
            return
        kept = await self.store.renew_claims(self.holder, keys, self.clock.wall(), self.ttl_s)
        for key in keys:
            if key not in kept and self._held.pop(key, None) is not None:
                self._host.step_down(key)

    async def _release_idle(self, now: MonotonicS) -> None:
        idle = [
            key
            for key, held in self._held.items()
            if held.idle_since is not None and now - held.idle_since >= self.linger_s
        ]
        if not idle:
            return
        for key in idle:
            del self._held[key]
        self._releasing = asyncio.ensure_future(self.store.release_claims(self.holder, idle))
        try:
            await self._releasing
        finally:
            self._releasing = None

    def _forget_unwatched(self) -> None:
        """Stop watching turns nobody here waits for any more (the client went away)."""
        for turn_id in [t for t in self._watched if not self._host.waiting(t)]:
            del self._watched[turn_id]

    async def listen_forever(self) -> None:
        """Act on other processes' notices: a turn for a session held here, turns ended
        that clients here wait for."""
        async for notice in self.store.notices():
            with suppress(StoreError):  # the poll catches up
                await self._on_notice(notice)

    async def _on_notice(self, notice: Notice) -> None:
        if notice.kind is NoticeKind.TURN:
            if notice.session_key in self._held:
                self._host.adopt(notice.session_key, [])
        elif any(key == notice.session_key for key in self._watched.values()):
            await self.settle_watched({notice.session_key})

    @property
    def _host(self) -> ClaimsHost:
        assert self.host is not None, "SessionClaims.host is set by the engine"
        return self.host
