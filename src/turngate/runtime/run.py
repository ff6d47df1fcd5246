"""One run: the agent loop that serves one turn (or one merged batch) to its end.

A run reads the bounded transcript and calls its model. When the model answers, the run is
over. When it calls tools, the run is a loop: the calls run concurrently, each under its own
deadline; their results go back to the model in the next *step*; the steered messages that
wait at the head of the session's queue join the run before that step. The loop ends with
the model's answer, or fails with ``max_steps``.

What the model is sent is built from the typed transcript by :mod:`~turngate.runtime.history`.

Writes. A run that only talks writes nothing: its owner appends its messages and its answer
with the release of its lease, in one fenced transaction, so its transcript holds an exchange
exactly when its turns replied. A run that calls tools writes each step as it happens,
through its :class:`RunHost` and fenced by its epoch: the messages and calls of a step before
the calls run, then each result as it comes. So a 20-minute tool loop is not lost with its
process, a fenced run writes nothing more, and the owner, ending a run that did not answer
(aborted, fenced, failed), closes every call it left open with an error result: the
transcript is always valid for the next model call.

Progress. Each text delta and each tool result is progress and renews the lease. While tool
calls run, the run also reports progress every third of the stall timeout, but only until
the calls' own deadlines have passed: a tool that ignores its deadline stops renewing, and
the lease reaps the run. Aborting a run is cancelling its task: the model stream and every
running tool call are cancelled with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from turngate.core.session import RunFailed, RunReplied, RunResult
from turngate.core.transcript import EntryKind, ToolCall, TranscriptItem
from turngate.core.turn import Turn
from turngate.errors import ErrorCode, ProviderError, ProviderResponseError, StaleEpochError
from turngate.providers.base import (
    Finish,
    Provider,
    ProviderRequest,
    TextDelta,
    ToolDefinition,
    Usage,
    closing,
)
from turngate.providers.tool_calls import ToolCallAssembler
from turngate.runtime.activity import Activity, ToolFinished, ToolStarted
from turngate.runtime.history import model_messages
from turngate.store.base import Store
from turngate.tools.base import Toolbox, ToolContext
from turngate.types import Epoch, RunId

T = TypeVar("T")

log = logging.getLogger("turngate.runtime")

STEP_SEPARATOR = "\n\n"
"""Between the texts of a run's model steps, in its reply and in its stream of deltas."""
RESUMED_ENTRIES_MAX = 2_000
"""At most this many entries of a resumed run's earlier attempt are sent to its model."""
KEEPALIVE_GRACE_S = 5.0
"""How long past the calls' own deadlines a run still reports them as progress: the time a
cancelled call is given to end."""


@dataclass(frozen=True, slots=True)
class RunProgress:
    """The run produced output (``text``), a tool call began or returned (``activity``), or
    its tool calls are still running (neither). ``step`` is the model step it belongs to."""

    run_id: RunId
    epoch: Epoch
    text: str = ""
    activity: Activity | None = None
    step: int = 1


class RunHost(Protocol):
    """What a run asks of its session's owner."""

    def now(self) -> float:
        """The time on the runtime's clock (monotonic seconds)."""
        ...

    def progress(self, progress: RunProgress) -> None:
        """Report progress (never blocks)."""
        ...

    def model_answered(self, model: str, usage: Usage | None) -> None:
        """Count a model step's answer (its model, its tokens); not progress."""
        ...

    async def write_steps(self, items: Sequence[TranscriptItem]) -> None:
        """Append the run's step to the transcript, fenced by its epoch; raises
        :class:`~turngate.errors.StaleEpochError` once the run no longer holds the session."""
        ...

    async def take_steered(self) -> list[Turn]:
        """The steered turns that join the run before its next model step."""
        ...

    async def read(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, a read of the store, tried again while storage is unavailable (a
        database restarting must not fail the run)."""
        ...


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything one run needs."""

    session_key: str
    run_id: RunId
    epoch: Epoch
    turns: tuple[Turn, ...]
    history_entries_max: int
    system_prompt: str | None = None
    toolbox: Toolbox | None = None
    """None: the model is offered no tools, and a tool call is a bad response."""
    max_steps: int = 1
    stall_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class _Answer:
    """One model step's answer: its text, its tool calls, its token usage."""

    text: str
    calls: list[ToolCall]
    usage: Usage | None


async def execute_run(spec: RunSpec, store: Store, provider: Provider, host: RunHost) -> RunResult:
    """Run the agent loop to its end and return its result.

    Cancellation propagates: the owner learns of it from the task's completion, which also
    covers a task cancelled before its first step.
    """
    try:
        return await _agent_loop(spec, store, provider, host)
    except ProviderError as exc:
        return RunFailed(exc.code, f"session {spec.session_key}: {exc.message}")
    except StaleEpochError as exc:
        # The run lost its session while it ran (fenced): its owner ignores this result.
        log.warning(
            "run %s of session %s no longer holds the session; it stops: %s",
            spec.run_id,
            spec.session_key,
            exc.message,
            extra={"session_key": spec.session_key, "run_id": spec.run_id},
        )
        return RunFailed(exc.code, exc.message)
    except Exception as exc:
        log.exception(
            "run %s of session %s failed unexpectedly",
            spec.run_id,
            spec.session_key,
            extra={"session_key": spec.session_key, "run_id": spec.run_id},
        )
        return RunFailed(
            ErrorCode.INTERNAL,
            f"session {spec.session_key}: run {spec.run_id} failed: {type(exc).__name__}",
        )


async def _agent_loop(spec: RunSpec, store: Store, provider: Provider, host: RunHost) -> RunResult:
    past, written = await host.read(
        "read the session's transcript", lambda: _conversation(spec, store)
    )
    already = {item.turn_id for item in written if item.kind is EntryKind.USER}
    unwritten = [
        TranscriptItem.user(turn.message, turn.turn_id)
        for turn in spec.turns
        if turn.turn_id not in already
    ]
    texts: list[str] = []
    usage: Usage | None = None
    for step in range(1, spec.max_steps + 1):
        messages = model_messages(spec.system_prompt, past, [*written, *unwritten])
        request = ProviderRequest(
            spec.session_key, spec.run_id, tuple(messages), _definitions(spec.toolbox)
        )
        lead = STEP_SEPARATOR if texts else ""
        answer = await _model_step(spec, provider, request, host, step, lead)
        usage = _add_usage(usage, answer.usage)
        if answer.text:
            texts.append(answer.text)
            unwritten.append(TranscriptItem.assistant(answer.text))
        if not answer.calls:
            return RunReplied(STEP_SEPARATOR.join(texts), tuple(unwritten), usage)
        # The step is written before its calls run: a call the transcript does not show
        # must never have run.
        unwritten.append(TranscriptItem.calls(answer.calls))
        await host.write_steps(unwritten)
        written.extend(unwritten)
        assert spec.toolbox is not None, "a model offered no tools cannot call one"
        written.extend(await _call_tools(spec, spec.toolbox, host, step, answer.calls))
        unwritten = []
        if step < spec.max_steps:  # after the last step, a steered message runs on its own
            unwritten = [
                TranscriptItem.user(turn.message, turn.turn_id)
                for turn in await host.take_steered()
            ]
    return RunFailed(
        ErrorCode.MAX_STEPS,
        f"session {spec.session_key}: run {spec.run_id} was still calling tools after"
        f" {spec.max_steps} model steps (max_steps); its steps are kept in the transcript",
    )


async def _conversation(
    spec: RunSpec, store: Store
) -> tuple[list[TranscriptItem], list[TranscriptItem]]:
    """The bounded history before the run, and what the run already wrote: nothing, except
    for a run resumed after a restart, whose earlier attempt wrote its messages with its
    first step, then its steps (the history bound must not cut those off)."""
    history = (
        await store.transcript(spec.session_key, spec.history_entries_max)
        if spec.history_entries_max
        else []
    )
    restarted = [turn.turn_id for turn in spec.turns if turn.restarts]
    earlier = (
        await store.since_messages(spec.session_key, restarted, RESUMED_ENTRIES_MAX)
        if restarted
        else []
    )
    if not earlier:
        return [entry.item for entry in history], []
    first = earlier[0].seq
    return [entry.item for entry in history if entry.seq < first], [e.item for e in earlier]


def _definitions(toolbox: Toolbox | None) -> tuple[ToolDefinition, ...]:
    """What the model is offered now (servers come and go between steps)."""
    if toolbox is None:
        return ()
    return tuple(
        ToolDefinition(spec.name, spec.description, spec.input_schema) for spec in toolbox.specs()
    )


async def _model_step(
    spec: RunSpec,
    provider: Provider,
    request: ProviderRequest,
    host: RunHost,
    step: int,
    lead: str,
) -> _Answer:
    """One model call: its text (each delta reported as progress, the first after ``lead``),
    its tool calls, and its usage, if known."""
    chunks: list[str] = []
    calls = ToolCallAssembler(provider.name)
    usage: Usage | None = None
    # closing: the model call is closed here and now on every exit, not at collection.
    async with closing(provider.stream(request)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text = event.text if chunks else lead + event.text
                chunks.append(event.text)
                host.progress(RunProgress(spec.run_id, spec.epoch, text, step=step))
            elif isinstance(event, Finish):
                usage = event.usage
                host.model_answered(event.model, event.usage)
            elif spec.toolbox is None:
                raise ProviderResponseError(
                    f"{provider.name}: the model called a tool, but no tools are offered",
                    code=ErrorCode.BAD_RESPONSE,
                )
            else:
                calls.add(event)
    return _Answer("".join(chunks), calls.calls(), usage)


async def _call_tools(
    spec: RunSpec, toolbox: Toolbox, host: RunHost, step: int, calls: list[ToolCall]
) -> list[TranscriptItem]:
    """Run the step's calls concurrently; each result is written and reported as it comes.
    Returns the results in the order they came."""
    results: list[TranscriptItem] = []
    deadline = host.now() + max(toolbox.timeout_for(call.name) for call in calls)

    async def call_one(call: ToolCall) -> None:
        host.progress(RunProgress(spec.run_id, spec.epoch, activity=ToolStarted(call), step=step))
        started = host.now()
        result = await toolbox.call(call.name, call.arguments, context=_context(spec))
        item = TranscriptItem.tool_result(
            call.id, call.name, result.content, is_error=result.is_error
        )
        await host.write_steps([item])
        results.append(item)
        finished = ToolFinished(call, result, host.now() - started)
        host.progress(RunProgress(spec.run_id, spec.epoch, activity=finished, step=step))

    try:
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(call_one(call)) for call in calls]
            group.create_task(_keepalive(spec, host, step, running, deadline))
    except ExceptionGroup as failed:
        # A call fails only when its result cannot be written (the run lost the session):
        # the run ends with that error, not with a group of it.
        raise failed.exceptions[0] from None
    return results


async def _keepalive(
    spec: RunSpec,
    host: RunHost,
    step: int,
    running: list[asyncio.Task[None]],
    deadline: float,
) -> None:
    """Progress while the ``running`` calls run, until ``deadline`` (theirs) and a grace have
    passed: a call that outlives both no longer renews the lease."""
    every_s = spec.stall_timeout_s / 3
    while host.now() + every_s < deadline + KEEPALIVE_GRACE_S:
        _, pending = await asyncio.wait(running, timeout=every_s)
        if not pending:
            return
        host.progress(RunProgress(spec.run_id, spec.epoch, step=step))


def _context(spec: RunSpec) -> ToolContext:
    return ToolContext(spec.session_key, spec.run_id, spec.epoch)


def _add_usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    """``total`` plus ``usage``; None while no call reported any."""
    if usage is None:
        return total
    return usage if total is None else total + usage
