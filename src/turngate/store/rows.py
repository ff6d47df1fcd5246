"""Rows and records: how a turn, a transcript entry, a delivery and a session's claim are read
from a row of their table (the same columns, in the same order, in every SQL store), how an
entry's typed fields are written as JSON, and the SQL of claims both stores run (each with its
driver's placeholder as ``{p}``), so that SQLite and PostgreSQL decide alike.

A transcript entry's ``data`` holds its typed fields: ``{"turn_id"}`` for a user message (the
turn whose message it is), ``{"tool_calls": [{"id", "name", "arguments"}, ...]}`` for tool
calls (``arguments`` the JSON text the model sent, kept as text), ``{"call_id", "tool_name",
"is_error"}`` for a tool result (the result itself is the entry's ``text``). A row without
``kind`` (written before entries were typed) reads as its ``role``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem
from turngate.core.turn import Outcome, TurnEvent, TurnState, Usage, stored_sources
from turngate.errors import ErrorCode, SessionTakenError, StaleEpochError, StoreError
from turngate.store.base import (
    Delivery,
    DeliveryOrder,
    DeliveryState,
    SessionClaim,
    TranscriptEntry,
    TurnRecord,
)
from turngate.types import Epoch, RunId, TurnId, WallS


def state_guard(event: TurnEvent) -> str:
    """``state IN (...)``: the stored states ``event`` may be written from, as the core's
    transition table says (:func:`~turngate.core.turn.stored_sources`); every SQL store's
    turn updates are guarded by it, so a write the table forbids changes nothing."""
    states = ", ".join(f"'{state.value}'" for state in stored_sources(event))
    return f"state IN ({states})"


TURN_COLUMNS = (
    "turn_id, session_key, message, queue_mode, state, accepted_wall, timeout_s, seq, attempts,"
    " run_id, epoch, started_wall, ended_wall, reply, error_code, error_message, lane,"
    " delivery, prompt_tokens, completion_tokens"
)
"""What a turn's SELECT reads, in :func:`turn_from_row`'s order."""
TRANSCRIPT_COLUMNS = "seq, session_key, role, text, run_id, epoch, at_wall, kind, data"
"""What a transcript entry's SELECT reads, in :func:`entry_from_row`'s order."""
DELIVERY_COLUMNS = (
    "delivery_id, key, session_key, run_id, channel_id, conversation, text, state, parts_sent,"
    " attempts, next_attempt_wall, created_wall, ended_wall, last_error"
)
"""What a delivery's SELECT reads, in :func:`delivery_from_row`'s order."""

OUTCOME_SET = (
    "state = {p}, run_id = {p}, reply = {p}, error_code = {p}, error_message = {p},"
    " ended_wall = {p}, prompt_tokens = {p}, completion_tokens = {p}"
)
"""The columns a turn's end sets, with the driver's placeholder as ``{p}``, in
:func:`outcome_values`' order (then the turn's id)."""


def outcome_values(outcome: Outcome, at: WallS) -> tuple[Any, ...]:
    """The values of :data:`OUTCOME_SET` for ``outcome`` ended at ``at``, and its turn id."""
    usage = outcome.usage
    return (
        outcome.state.value,
        outcome.run_id,
        outcome.reply,
        None if outcome.code is None else outcome.code.value,
        outcome.message or None,
        at,
        None if usage is None else usage.prompt_tokens,
        None if usage is None else usage.completion_tokens,
        outcome.turn_id,
    )


def transcript_values(
    session_key: str, item: TranscriptItem, run_id: RunId, epoch: Epoch, at: WallS
) -> tuple[Any, ...]:
    """A transcript row's values: session, role, text, run, epoch, time, kind, data."""
    return (
        session_key,
        ROLE_OF_KIND[item.kind],
        item.text,
        run_id,
        epoch,
        at,
        item.kind.value,
        data_of(item),
    )


OPEN = "state IN ('accepted', 'queued', 'running')"
"""A turn not yet ended."""

SESSION_SELECT = (
    "SELECT s.key, s.agent_id, s.epoch, s.lease_run_id, s.lease_granted_wall, s.created_wall,"
    " s.updated_wall,"
    " (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key),"
    f" (SELECT COUNT(*) FROM turns t WHERE t.session_key = s.key AND t.{OPEN})"
    " FROM sessions s"
)
"""A session with its turn counts, in :class:`~turngate.store.base.SessionRecord`'s order."""

ROLE_OF_KIND = {
    EntryKind.USER: "user",
    EntryKind.ASSISTANT: "assistant",
    EntryKind.TOOL_CALLS: "assistant",
    EntryKind.TOOL_RESULT: "tool",
}
"""The ``role`` column of each kind: who said it, in the words of the chat APIs."""


def turn_from_row(row: tuple[Any, ...]) -> TurnRecord:
    """A :class:`TurnRecord` from a row of :data:`TURN_COLUMNS`."""
    (
        turn_id,
        session_key,
        message,
        queue_mode,
        state,
        accepted_wall,
        timeout_s,
        seq,
        attempts,
        run_id,
        epoch,
        started_wall,
        ended_wall,
        reply,
        error_code,
        error_message,
        lane,
        delivery,
        prompt_tokens,
        completion_tokens,
    ) = row
    return TurnRecord(
        turn_id=str(turn_id),
        session_key=str(session_key),
        agent_id=str(session_key).split(":", 2)[1],
        message=str(message),
        queue_mode=str(queue_mode),
        state=TurnState(state),
        accepted_wall=float(accepted_wall),
        timeout_s=float(timeout_s),
        seq=int(seq),
        attempts=int(attempts),
        run_id=None if run_id is None else str(run_id),
        epoch=None if epoch is None else int(epoch),
        started_wall=None if started_wall is None else float(started_wall),
        ended_wall=None if ended_wall is None else float(ended_wall),
        reply=None if reply is None else str(reply),
        error_code=None if error_code is None else ErrorCode(error_code),
        error_message=None if error_message is None else str(error_message),
        lane=str(lane),
        delivery=None if delivery is None else str(delivery),
        usage=(
            None
            if prompt_tokens is None or completion_tokens is None
            else Usage(int(prompt_tokens), int(completion_tokens))
        ),
    )


def entry_from_row(row: tuple[Any, ...]) -> TranscriptEntry:
    """A :class:`TranscriptEntry` from a row of :data:`TRANSCRIPT_COLUMNS` (or of
    :data:`TRANSCRIPT_COLUMNS_OF_V3_FILE`); a row that makes no valid entry is a
    :class:`~turngate.errors.StoreError` naming it."""
    seq, session_key, role, text, run_id, epoch, at_wall, kind, data = row
    try:
        item = item_of(EntryKind(kind if kind is not None else role), str(text), data)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(
            f"session {session_key}: transcript entry #{seq} cannot be read ({exc})"
        ) from None
    return TranscriptEntry(
        int(seq), str(session_key), item, str(run_id), int(epoch), float(at_wall)
    )


def data_of(item: TranscriptItem) -> str | None:
    """The ``data`` column of ``item``: its typed fields as JSON, or null if it has none."""
    if item.turn_id is not None:
        return json.dumps({"turn_id": item.turn_id})
    if item.kind is EntryKind.TOOL_CALLS:
        calls = [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in item.tool_calls
        ]
        return json.dumps({"tool_calls": calls})
    if item.kind is EntryKind.TOOL_RESULT:
        return json.dumps(
            {"call_id": item.call_id, "tool_name": item.tool_name, "is_error": item.is_error}
        )
    return None


def item_of(kind: EntryKind, text: str, data: str | None) -> TranscriptItem:
    """The item a row's ``kind``, ``text`` and ``data`` describe."""
    fields = json.loads(data or "null")
    if kind is EntryKind.USER:
        return TranscriptItem.user(text, None if fields is None else str(fields["turn_id"]))
    if kind is EntryKind.ASSISTANT:
        return TranscriptItem.assistant(text)
    if kind is EntryKind.TOOL_CALLS:
        return TranscriptItem.calls(
            [
                ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"]))
                for c in fields["tool_calls"]
            ]
        )
    return TranscriptItem.tool_result(
        str(fields["call_id"]), str(fields["tool_name"]), text, is_error=bool(fields["is_error"])
    )


def delivery_from_row(row: tuple[Any, ...]) -> Delivery:
    (
        delivery_id,
        key,
        session_key,
        run_id,
        channel_id,
        conversation,
        text,
        state,
        parts_sent,
        attempts,
        next_attempt_wall,
        created_wall,
        ended_wall,
        last_error,
    ) = row
    order = DeliveryOrder(
        str(key), str(session_key), str(run_id), str(channel_id), str(conversation), str(text)
    )
    return Delivery(
        delivery_id=int(delivery_id),
        order=order,
        state=DeliveryState(state),
        parts_sent=int(parts_sent),
        attempts=int(attempts),
        next_attempt_wall=float(next_attempt_wall),
        created_wall=float(created_wall),
        ended_wall=None if ended_wall is None else float(ended_wall),
        last_error=None if last_error is None else str(last_error),
    )


# -- claims ---------------------------------------------------------------------------------

_MAY_REQUEUE = state_guard(TurnEvent.REQUEUE)

CLAIM_COLUMNS = "key, claim_holder, claim_expires_wall, epoch"
"""What a session's claim SELECT reads, in :func:`claim_from_row`'s order."""
CLAIM_SELECT = f"SELECT {CLAIM_COLUMNS}, lease_run_id FROM sessions WHERE key = {{p}}"
"""A session's claim, then the run holding its lease (what taking the session ends)."""
TAKE_CLAIM = (
    "UPDATE sessions SET claim_holder = {p}, claim_expires_wall = {p}, lease_run_id = NULL,"
    " lease_granted_wall = NULL WHERE key = {p}"
)
"""Give a session to a holder until a time, freeing the lease its previous holder's run held;
the epoch stays, so that the next run takes the one after and the old run is fenced."""
INTERRUPTED_SELECT = (
    f"SELECT turn_id, run_id FROM turns WHERE session_key = {{p}} AND {_MAY_REQUEUE}"
)
"""A session's running turns, each with the run it was part of."""
REQUEUE = (
    "UPDATE turns SET state = 'queued', attempts = attempts + 1, epoch = NULL,"
    f" started_wall = NULL WHERE session_key = {{p}} AND {_MAY_REQUEUE}"
)
"""Queue a session's running turns again, one more attempt each. Each keeps the id of the
run it was part of until it runs again: if this holder stops too before they do, the next
one still resumes the turns of that run as one."""
OPEN_TURNS_SELECT = (
    f"SELECT {{columns}} FROM turns WHERE session_key = {{p}} AND {OPEN} ORDER BY seq"
)
"""A session's turns not yet ended, in acceptance order."""
TURNS_SELECT = "SELECT {columns} FROM turns WHERE turn_id IN ({ids})"
"""The turns among some ids (``{ids}``: one placeholder per id, see :func:`marks`)."""
RENEW_CLAIMS = (
    "UPDATE sessions SET claim_expires_wall = {p} WHERE claim_holder = {p}"
    " AND key IN ({keys}) RETURNING key"
)
"""Extend a holder's claims (expired or not: a claim nobody took is still its holder's)."""
RELEASE_CLAIMS = (
    "UPDATE sessions SET claim_holder = NULL, claim_expires_wall = NULL"
    " WHERE claim_holder = {p} AND key IN ({keys})"
)
"""Give up a holder's claims."""
CLAIMABLE_SELECT = (
    "SELECT t.session_key, t.turn_id FROM turns t JOIN sessions s ON s.key = t.session_key"
    f" WHERE t.{OPEN} AND (s.claim_holder IS NULL OR s.claim_holder = {{p}}"
    " OR s.claim_expires_wall <= {p}) ORDER BY t.seq LIMIT {p}"
)
"""The oldest turns not yet ended of the sessions a holder may take at a time."""
TAKE_LEASE = (
    "UPDATE sessions SET epoch = {p}, lease_run_id = {p}, lease_granted_wall = {p},"
    " updated_wall = {p} WHERE key = {p} AND epoch = {p} AND lease_run_id IS NULL"
)
"""Take a session's free lease at ``epoch`` (the one after the session's)."""
HOLDERS_OF_TURNS = (
    "SELECT key, claim_holder FROM sessions WHERE key IN"
    " (SELECT session_key FROM turns WHERE turn_id IN ({ids})) ORDER BY key"
)
"""Who holds each session the turns among some ids belong to."""


def marks(p: str, n: int) -> str:
    """``n`` placeholders ``p``, for an ``IN (...)`` list."""
    return ", ".join([p] * n)


def claim_from_row(row: Sequence[Any]) -> SessionClaim:
    """A :class:`SessionClaim` from a row of :data:`CLAIM_COLUMNS` (more columns may follow)."""
    key, holder, expires, epoch = row[:4]
    return SessionClaim(
        str(key),
        None if holder is None else str(holder),
        None if expires is None else float(expires),
        int(epoch),
    )


def may_take(claim: SessionClaim, holder: str, at: WallS) -> bool:
    """Whether ``holder`` may take the session at ``at``: nobody holds it, ``holder`` does (an
    earlier life of it), or its claim expired."""
    if claim.holder is None or claim.holder == holder:
        return True
    return claim.expires_wall is not None and claim.expires_wall <= at


def resumed(
    rows: Sequence[tuple[Any, ...]], interrupted: dict[TurnId, RunId]
) -> tuple[TurnRecord, ...]:
    """The open turns a holder took (rows of :data:`TURN_COLUMNS`), each turn that was running
    with the run it was part of (``interrupted``), as is each queued again by an earlier
    takeover and not run since (its row keeps that run's id)."""
    turns = (turn_from_row(row) for row in rows)
    return tuple(replace(turn, run_id=interrupted.get(turn.turn_id, turn.run_id)) for turn in turns)


def by_session(rows: Sequence[Sequence[Any]]) -> dict[str, list[TurnId]]:
    """Rows of ``(session_key, turn_id)`` in acceptance order, grouped by session; the
    sessions in the order of their oldest turn."""
    grouped: dict[str, list[TurnId]] = {}
    for session_key, turn_id in rows:
        grouped.setdefault(str(session_key), []).append(str(turn_id))
    return grouped


def take_lease(
    p: str, session_key: str, run_id: RunId, epoch: Epoch, at: WallS, holder: str | None
) -> tuple[str, tuple[Any, ...]]:
    """The statement taking a session's lease for ``start_run``, and its values; given a
    ``holder``, it takes the lease only while that holder holds the session's claim."""
    values: tuple[Any, ...] = (epoch, run_id, at, at, session_key, epoch - 1)
    if holder is None:
        return TAKE_LEASE.format(p=p), values
    return (TAKE_LEASE + " AND claim_holder = {p}").format(p=p), (*values, holder)


def lease_refused(
    session_key: str, run_id: RunId, epoch: Epoch, holder: str | None, claim: SessionClaim | None
) -> StaleEpochError:
    """Why ``start_run`` took no lease, given the session's claim (None for a session the
    store does not know): the claim is another's, or else the epoch or the lease."""
    if holder is not None and claim is not None and claim.holder != holder:
        return SessionTakenError(session_key, holder)
    return StaleEpochError(session_key, run_id, epoch)


def not_held(holders: Sequence[Sequence[Any]], holder: str) -> str | None:
    """The first session among ``holders`` (rows of :data:`HOLDERS_OF_TURNS`) that ``holder``
    does not hold, or None."""
    return next((str(key) for key, held_by in holders if held_by != holder), None)


HOLD_SINGLETON = (
    "INSERT INTO singletons (name, holder, expires_wall) VALUES ({p}, {p}, {p})"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
    " expires_wall = excluded.expires_wall"
    " WHERE singletons.holder = excluded.holder OR singletons.expires_wall <= {p}"
    " RETURNING holder"
)
"""Take or renew a singleton for a holder until a time: free, its own, or expired at ``at``."""
RELEASE_SINGLETON = "DELETE FROM singletons WHERE name = {p} AND holder = {p}"
"""Give up a holder's singleton."""
