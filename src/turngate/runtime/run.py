"""One run: read the bounded transcript, call the provider, return the reply.

What the model is sent is built from the typed transcript by :mod:`~turngate.runtime.history`.

A run writes nothing. It reports progress to its session's owner, which holds the lease, and
the owner learns how it ended from its task. The owner records the outcome and appends the
exchange to the transcript in one fenced transaction with the release, so the transcript
holds an exchange exactly when its turns replied, and a run that lost its lease (aborted,
fenced while it ignored cancellation) leaves nothing behind. Aborting a run is cancelling
its task.

The run reads its model's events: each text delta is progress and part of the reply, and each
call's :class:`~turngate.providers.base.Finish` adds its token usage to the run's (a steered
run's usage is the sum of its calls', as each call is billed for its whole prompt). No tools
are offered yet, so a tool call is the provider's fault and fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from turngate.core.session import RunFailed, RunReplied, RunResult
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Turn
from turngate.errors import ErrorCode, ProviderError, ProviderResponseError
from turngate.providers.base import (
    Finish,
    Provider,
    ProviderRequest,
    TextDelta,
    Usage,
    closing,
)
from turngate.runtime.history import model_messages
from turngate.store.base import Store
from turngate.types import Epoch, RunId

log = logging.getLogger("turngate.runtime")

STEER_SEPARATOR = "\n\n"
"""Between the answers of a steered run's model calls, in its reply."""


@dataclass(frozen=True, slots=True)
class RunProgress:
    """The run produced output."""

    run_id: RunId
    epoch: Epoch
    text: str = ""


class RunInbox:
    """Messages steered into a running run, taken at its next model call.

    Offering and the run's last look happen on the event loop's thread with no await in
    between, so a message is either taken by the run or refused (and then queued as a
    followup): never accepted and then silently missed.
    """

    def __init__(self) -> None:
        self._turns: list[Turn] = []
        self.open = True

    def offer(self, turn: Turn) -> bool:
        """Hand ``turn`` to the run; False once the run takes no more messages."""
        if not self.open:
            return False
        self._turns.append(turn)
        return True

    def take_or_close(self) -> list[Turn]:
        """The messages offered since the last look; when there are none, close."""
        taken, self._turns = self._turns, []
        if not taken:
            self.open = False
        return taken


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything one run needs."""

    session_key: str
    run_id: RunId
    epoch: Epoch
    turns: tuple[Turn, ...]
    history_entries_max: int
    system_prompt: str | None = None
    inbox: RunInbox = field(default_factory=RunInbox)


async def execute_run(
    spec: RunSpec,
    store: Store,
    provider: Provider,
    on_progress: Callable[[RunProgress], None],
) -> RunResult:
    """Run one turn (or one merged batch) to its end and return its result.

    Cancellation propagates: the owner learns of it from the task's completion, which also
    covers a task cancelled before its first step.
    """
    try:
        return await _call_model(spec, store, provider, on_progress)
    except ProviderError as exc:
        return RunFailed(exc.code, f"session {spec.session_key}: {exc.message}")
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
    finally:
        spec.inbox.open = False  # however it ends, a finished run takes no more messages


async def _call_model(
    spec: RunSpec,
    store: Store,
    provider: Provider,
    on_progress: Callable[[RunProgress], None],
) -> RunResult:
    history = (
        await store.transcript(spec.session_key, spec.history_entries_max)
        if spec.history_entries_max
        else []
    )
    past = [entry.item for entry in history]
    exchange = [TranscriptItem.user(turn.message) for turn in spec.turns]
    replies: list[str] = []
    usage: Usage | None = None
    while True:
        messages = model_messages(spec.system_prompt, past, exchange)
        request = ProviderRequest(spec.session_key, spec.run_id, tuple(messages))
        reply, call_usage = await _model_call(spec, provider, request, on_progress)
        usage = _add_usage(usage, call_usage)
        replies.append(reply)
        exchange.append(TranscriptItem.assistant(reply))
        steered = spec.inbox.take_or_close()
        if not steered:
            break
        # A steered message goes into the next model call, after the answer so far.
        exchange.extend(TranscriptItem.user(turn.message) for turn in steered)
        on_progress(RunProgress(spec.run_id, spec.epoch, STEER_SEPARATOR))
    return RunReplied(STEER_SEPARATOR.join(replies), tuple(exchange), usage)


async def _model_call(
    spec: RunSpec,
    provider: Provider,
    request: ProviderRequest,
    on_progress: Callable[[RunProgress], None],
) -> tuple[str, Usage | None]:
    """One model call: its reply, each delta reported as progress, and its usage, if known."""
    chunks: list[str] = []
    usage: Usage | None = None
    # closing: the model call is closed here and now on every exit, not at collection.
    async with closing(provider.stream(request)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                chunks.append(event.text)
                on_progress(RunProgress(spec.run_id, spec.epoch, event.text))
            elif isinstance(event, Finish):
                usage = event.usage
            else:
                # No tools are offered, so a model that calls one answered something this
                # run cannot use. The agent loop (issue 14) runs the tool calls instead.
                raise ProviderResponseError(
                    f"{provider.name}: the model called a tool, but no tools are offered",
                    code=ErrorCode.BAD_RESPONSE,
                )
    return "".join(chunks), usage


def _add_usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    """``total`` plus ``usage``; None while no call reported any."""
    if usage is None:
        return total
    return usage if total is None else total + usage
