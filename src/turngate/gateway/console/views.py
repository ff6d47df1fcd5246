"""What the console's API shows of a session, a run, a turn and a transcript entry.

Pure functions from the engine's and the store's records to JSON objects (the HTTP API's
field names: camelCase, times as Unix seconds, durations in seconds with an ``S`` suffix).
Texts are cut at :data:`TEXT_CHARS_MAX` (``<field>Truncated`` and ``<field>Chars`` then say so
and how long the whole was): a tool's result can be large, and the console shows it, it does
not archive it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from turngate.core.transcript import EntryKind
from turngate.core.turn import TurnState
from turngate.gateway.frames import WIRE_STATUS
from turngate.runtime.engine_api import LeaseView
from turngate.store.base import SessionRecord, TranscriptEntry, TurnRecord

TEXT_CHARS_MAX = 20_000
"""Longest text the console's API sends in one field."""
PREVIEW_CHARS_MAX = 2_000
"""Longest message or reply a turn's row carries (the transcript has them whole)."""


class SessionState(enum.StrEnum):
    """A session's state as the console shows it."""

    RUNNING = "running"
    """A run holds the session's lease."""
    QUEUED = "queued"
    """No run, but turns wait (the session is about to start one, or waits for storage)."""
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class OpenTurns:
    """A session's turns not yet ended, by where they are."""

    waiting: int = 0
    """Accepted or queued: not yet running."""
    running: tuple[TurnRecord, ...] = ()
    """The turns the session's run serves (more than one when messages were merged)."""


def open_turns(turns: Sequence[TurnRecord]) -> OpenTurns:
    """The turns of ``turns`` that have not ended."""
    running = tuple(turn for turn in turns if turn.state is TurnState.RUNNING)
    waiting = sum(1 for turn in turns if turn.state in (TurnState.ACCEPTED, TurnState.QUEUED))
    return OpenTurns(waiting, running)


def run_body(lease: LeaseView, turns: Sequence[TurnRecord]) -> dict[str, Any]:
    """The run holding a session's lease: the turns it serves (their age is since they were
    accepted), its lease (epoch, age), its progress, what it does.

    ``stalled`` and ``slow`` are :class:`LeaseView`'s (the ones ``/health`` uses); the
    timeouts come along, so a page can tell as time passes without asking again."""
    return {
        "runId": lease.run_id,
        "turns": [
            {
                "runId": turn.turn_id,
                "lane": turn.lane,
                "acceptedAt": turn.accepted_wall,
                "startedAt": turn.started_wall,
                "attempts": turn.attempts,
            }
            for turn in turns
        ],
        "acceptedAt": min((turn.accepted_wall for turn in turns), default=None),
        "epoch": lease.epoch,
        "leaseState": lease.state,
        "ageS": round(lease.age_s, 3),
        "sinceProgressS": round(lease.since_progress_s, 3),
        "step": lease.step,
        "tools": [{"name": name, "forS": round(for_s, 3)} for name, for_s in lease.tools],
        "stalled": lease.stalled,
        "slow": lease.slow,
        "stallTimeoutS": lease.stall_timeout_s,
        "runTimeoutS": lease.run_timeout_s,
    }


def session_body(
    key: str,
    record: SessionRecord | None,
    lease: LeaseView | None,
    opened: OpenTurns,
    *,
    waiting_for_storage: bool,
) -> dict[str, Any]:
    """One session: its state, queue, running run and history figures.

    ``record`` is None for a session the store does not know yet (a console about to send
    its first message)."""
    state = (
        SessionState.RUNNING
        if lease is not None
        else SessionState.QUEUED
        if opened.waiting
        else SessionState.IDLE
    )
    return {
        "key": key,
        "agentId": key.split(":", 2)[1],
        "stored": record is not None,
        "state": state,
        "queued": opened.waiting,
        "run": None if lease is None else run_body(lease, opened.running),
        "stalled": lease is not None and lease.stalled,
        "slow": lease is not None and lease.slow,
        "waitingForStorage": waiting_for_storage,
        "epoch": record.epoch if record else 0,
        "turnsTotal": record.turns_total if record else 0,
        "turnsOpen": record.turns_open if record else 0,
        "createdAt": record.created_wall if record else None,
        "lastActivityAt": record.updated_wall if record else None,
    }


def turn_body(turn: TurnRecord) -> dict[str, Any]:
    """One turn: where it is or how it ended, when, after how many attempts, on which lane,
    with what usage."""
    wait_s = None if turn.started_wall is None else turn.started_wall - turn.accepted_wall
    run_s = (
        None
        if turn.started_wall is None or turn.ended_wall is None
        else turn.ended_wall - turn.started_wall
    )
    body: dict[str, Any] = {
        "runId": turn.turn_id,
        "servedBy": turn.run_id,
        "seq": turn.seq,
        "state": turn.state.value,
        "status": WIRE_STATUS[turn.state],
        "lane": turn.lane,
        "queueMode": turn.queue_mode,
        "attempts": turn.attempts,
        "epoch": turn.epoch,
        "acceptedAt": turn.accepted_wall,
        "startedAt": turn.started_wall,
        "endedAt": turn.ended_wall,
        "waitS": None if wait_s is None else round(max(0.0, wait_s), 3),
        "runS": None if run_s is None else round(max(0.0, run_s), 3),
        "timeoutS": turn.timeout_s,
        **_text("message", turn.message, PREVIEW_CHARS_MAX),
        "delivery": turn.delivery,
        "usage": None
        if turn.usage is None
        else {
            "promptTokens": turn.usage.prompt_tokens,
            "completionTokens": turn.usage.completion_tokens,
        },
        "error": None
        if turn.error_code is None
        else {"code": turn.error_code.value, "message": turn.error_message or ""},
    }
    if turn.reply is not None:
        body.update(_text("reply", turn.reply, PREVIEW_CHARS_MAX))
    return body


def entry_body(entry: TranscriptEntry) -> dict[str, Any]:
    """One transcript entry, typed (see :mod:`turngate.core.transcript`)."""
    item = entry.item
    body: dict[str, Any] = {
        "seq": entry.seq,
        "kind": item.kind.value,
        "runId": entry.run_id,
        "epoch": entry.epoch,
        "at": entry.at_wall,
    }
    match item.kind:
        case EntryKind.USER:
            body.update(_text("text", item.text, TEXT_CHARS_MAX), turnId=item.turn_id)
        case EntryKind.ASSISTANT:
            body.update(_text("text", item.text, TEXT_CHARS_MAX))
        case EntryKind.TOOL_CALLS:
            body["toolCalls"] = [
                {"id": call.id, "name": call.name, **_text("arguments", call.arguments)}
                for call in item.tool_calls
            ]
        case EntryKind.TOOL_RESULT:
            body.update(
                _text("text", item.text, TEXT_CHARS_MAX),
                callId=item.call_id,
                toolName=item.tool_name,
                isError=item.is_error,
            )
    return body


def _text(name: str, text: str, chars_max: int = TEXT_CHARS_MAX) -> dict[str, Any]:
    """``{name: text}``, cut at ``chars_max`` with ``{name}Truncated`` saying how long it was."""
    if len(text) <= chars_max:
        return {name: text}
    return {name: text[:chars_max], f"{name}Chars": len(text), f"{name}Truncated": True}
