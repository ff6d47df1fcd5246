"""The checks over a seed's transcripts at the end: each turn's ending written whole and once,
each entry written by a run holding its session, and every tool call answered once (I10).

What a transcript may hold, run by run ``(run id, epoch)``:

- A run that replied wrote its turns' messages (once each, by turn id) and its texts, joined
  as the turns' reply (one per model step).
- A run that did not reply wrote nothing, unless it called tools: then its steps stay (its
  turns' messages, the texts said before each call, the calls and their results), and every
  call it left open was closed by its end or by the recovery after a crash.
- Nothing else: no message of a turn that never ran a step, no answer of a run that did not
  reply.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from turngate.core.transcript import EntryKind
from turngate.core.turn import TurnState
from turngate.runtime.run import STEP_SEPARATOR
from turngate.store.base import INTERRUPTED_CALL_RESULT, TranscriptEntry, TurnRecord

Fail = Callable[[str, float, str], None]
"""Records a violation: ``(invariant, at, message)``."""
RunKey = tuple[str, int]


@dataclass(slots=True)
class _Run:
    """What one run wrote."""

    texts: list[str] = field(default_factory=list)
    step_texts: int = 0
    """Texts followed by tool calls: said during a step, not an answer."""
    called: bool = False


def check_transcript(
    fail: Fail,
    turns: dict[str, TurnRecord],
    transcript: list[TranscriptEntry],
    check_holder: Callable[[TranscriptEntry], None],
    end_at: float,
) -> None:
    """Every check of the module docstring, over the store's ``transcript`` (all sessions,
    in order) and its ``turns``."""
    runs: dict[RunKey, _Run] = defaultdict(_Run)
    users: dict[str, list[RunKey]] = defaultdict(list)
    previous: TranscriptEntry | None = None
    for entry in transcript:
        run = runs[(entry.run_id, entry.epoch)]
        if entry.kind is EntryKind.USER:
            users[entry.item.turn_id or f"text:{entry.text}"].append((entry.run_id, entry.epoch))
        elif entry.kind is EntryKind.ASSISTANT:
            run.texts.append(entry.text)
        elif entry.kind is EntryKind.TOOL_CALLS:
            run.called = True
            if previous is not None and _same_run(previous, entry):
                run.step_texts += previous.kind is EntryKind.ASSISTANT
        if not _written_by_recovery(entry):
            check_holder(entry)
        previous = entry
    _check_messages(fail, turns, users, runs, end_at)
    _check_answers(fail, turns, runs, end_at)
    _check_tool_pairs(fail, transcript, end_at)


def _check_messages(
    fail: Fail,
    turns: dict[str, TurnRecord],
    users: dict[str, list[RunKey]],
    runs: dict[RunKey, _Run],
    end_at: float,
) -> None:
    for turn in turns.values():
        written = users.pop(turn.turn_id, [])
        if turn.lane == "heartbeat":
            continue  # one prompt, many turns: counted by the lane's own checks
        stepped = any(runs[key].called for key in written)
        allowed = {1} if turn.state is TurnState.REPLIED else ({0, 1} if stepped else {0})
        if len(written) not in allowed:
            fail(
                "I3" if len(written) > 1 else "I1",
                end_at,
                f"turn {turn.turn_id} ({turn.state}) has its message {len(written)} times in"
                f" the transcript of {turn.session_key}, expected {sorted(allowed)}",
            )
    for turn_id in users:
        if not turn_id.startswith("text:") or not _heartbeat_prompt(turns, turn_id[5:]):
            fail("I1", end_at, f"a user message of no turn is in a transcript: {turn_id}")


def _check_answers(
    fail: Fail, turns: dict[str, TurnRecord], runs: dict[RunKey, _Run], end_at: float
) -> None:
    replied: dict[RunKey, TurnRecord] = {}
    for turn in turns.values():
        if turn.state is TurnState.REPLIED and turn.run_id is not None and turn.epoch:
            replied.setdefault((turn.run_id, turn.epoch), turn)
    for key, run in runs.items():
        answered = replied.get(key)
        if answered is None:
            if len(run.texts) > run.step_texts:
                fail(
                    "I1",
                    end_at,
                    f"run {key[0]} (epoch {key[1]}) has an answer in the transcript but no turn"
                    " it replied to: an ending its turns' stored state denies",
                )
            continue
        if answered.lane == "heartbeat" or STEP_SEPARATOR.join(run.texts) == answered.reply:
            continue
        steps = 1 + (answered.reply or "").count(STEP_SEPARATOR)
        fail(
            "I3" if len(run.texts) > steps else "I1",
            end_at,
            f"turn {answered.turn_id} replied (run {key[0]}, epoch {key[1]}), but the transcript"
            f" of {answered.session_key} has {len(run.texts)} texts of that run, expected {steps}:"
            f" {run.texts!r}",
        )
    for key, turn in replied.items():
        if key not in runs and turn.lane != "heartbeat":
            fail(
                "I1",
                end_at,
                f"turn {turn.turn_id} replied (run {key[0]}, epoch {key[1]}), but its run wrote"
                f" nothing to the transcript of {turn.session_key}",
            )


def _check_tool_pairs(fail: Fail, transcript: list[TranscriptEntry], end_at: float) -> None:
    """I10: every call has exactly one result, after it, in its session."""
    calls: dict[tuple[str, str], int] = {}
    for entry in transcript:
        if entry.kind is EntryKind.TOOL_CALLS:
            for call in entry.item.tool_calls:
                calls[(entry.session_key, call.id)] = 0
        elif entry.kind is EntryKind.TOOL_RESULT:
            assert entry.item.call_id is not None
            key = (entry.session_key, entry.item.call_id)
            if key not in calls:
                fail(
                    "I10",
                    end_at,
                    f"{entry.session_key}: a result of tool call {key[1]} with no call before it",
                )
                continue
            calls[key] += 1
    for (session_key, call_id), results in calls.items():
        if results != 1:
            fail(
                "I10",
                end_at,
                f"{session_key}: tool call {call_id} has {results} results in the transcript,"
                " expected exactly 1",
            )


def _same_run(a: TranscriptEntry, b: TranscriptEntry) -> bool:
    return (a.session_key, a.run_id, a.epoch) == (b.session_key, b.run_id, b.epoch)


def _written_by_recovery(entry: TranscriptEntry) -> bool:
    """A result the recovery wrote after a crash, for the run the crash interrupted: stamped
    with that run, written after it held the session."""
    return entry.kind is EntryKind.TOOL_RESULT and entry.text == INTERRUPTED_CALL_RESULT


def _heartbeat_prompt(turns: dict[str, TurnRecord], text: str) -> bool:
    return any(turn.lane == "heartbeat" and turn.message == text for turn in turns.values())
