"""The fallback chain's policy, on virtual time: who is retried, when, and what ends a turn.

The links are scripted in-memory providers, so each test asserts the exact virtual time of
every attempt: the backoff sleeps are ``asyncio.sleep`` and their jitter comes from the
injected ``random.Random`` only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import pytest

from tests.providers.fakes import REQUEST, read_answer
from turngate import errors
from turngate.errors import (
    ErrorCode,
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    ProviderTimeoutError,
)
from turngate.providers.base import (
    Finish,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from turngate.providers.fallback import (
    BACKOFF_MAX_S,
    ChainLink,
    Disposition,
    FallbackChain,
    disposition,
)
from turngate.sim.loop import run_virtual

HANG = "hang"
CANCEL_AFTER_S = 5.0
"""A step that waits until cancelled."""
NOTHING = "nothing"
"""A step that finishes without yielding any text."""
EMPTY_STRINGS = "empty strings"
"""A step that yields only empty text, then finishes."""
Step = str | BaseException | tuple[str | ToolCallDelta, BaseException]
"""A reply, a failure before any output, or some output and then a failure."""


class Scripted:
    """A provider whose successive calls follow a script, then reply ``ok``; each call that
    finishes reports ``usage``."""

    def __init__(self, name: str, steps: Sequence[Step] = (), usage: Usage | None = None) -> None:
        self.name = name
        self.steps = list(steps)
        self.usage = usage
        self.calls: list[float] = []
        """The virtual time of each call."""
        self.closed = 0
        """Calls whose generator was closed while it was suspended mid-reply."""

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        self.calls.append(asyncio.get_running_loop().time())
        step = self.steps.pop(0) if self.steps else "ok"
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, tuple):
            output, failure = step
            yield TextDelta(output) if isinstance(output, str) else output
            raise failure
        if step == HANG:
            await asyncio.Event().wait()
        if step == EMPTY_STRINGS:
            yield TextDelta("")
            yield TextDelta("")
        elif step != NOTHING:
            try:
                yield TextDelta(step)
                yield TextDelta("!")
            except GeneratorExit:
                self.closed += 1
                raise
        yield Finish("stop", self.usage)


def chain(
    *providers: Scripted, max_retries: int = 2, backoff_s: float = 0.5, seed: int = 7
) -> FallbackChain:
    """A chain over ``providers`` (refs ``p/<name>``), all with the same retry budget."""
    links = [ChainLink(f"p/{p.name}", p, max_retries, backoff_s) for p in providers]
    return FallbackChain(links, random.Random(seed))


async def collect(provider: FallbackChain, into: list[str] | None = None) -> list[str]:
    """The text of every delta of one call (also appended to ``into`` as they arrive), which
    ends with exactly one Finish."""
    return (await read_answer(provider.stream(REQUEST), into)).deltas


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found))


def test_disposition_covers_every_provider_error_class_and_never_catches_cancellation() -> None:
    expected = {
        ProviderError: Disposition.RETRY,
        ProviderTimeoutError: Disposition.RETRY,
        ProviderAuthError: Disposition.NEXT,
        ProviderRejectedError: Disposition.FAIL,
        errors.ProviderResponseError: Disposition.RETRY,
    }
    # A new subclass must be classified here before this passes.
    assert {ProviderError} | _subclasses(ProviderError) == set(expected)
    for cls, verdict in expected.items():
        assert disposition(cls("x")) is verdict, cls
    for code in (ErrorCode.CONTEXT_TOO_LONG, ErrorCode.CONTENT_REFUSED):
        assert disposition(ProviderRejectedError("x", code=code)) is Disposition.FAIL
    # A cut-off, empty or unreadable answer is retried like a 5xx.
    for name in ("incomplete_response", "empty_response", "bad_response"):
        broken = errors.ProviderResponseError("x", code=ErrorCode(name))
        assert disposition(broken) is Disposition.RETRY
    # A nested chain already retried its models.
    assert disposition(ProviderError("x", code=ErrorCode.ALL_MODELS_FAILED)) is Disposition.NEXT
    for other in (asyncio.CancelledError(), ValueError("bug"), KeyboardInterrupt()):
        assert disposition(other) is Disposition.PROPAGATE


def test_retries_back_off_with_full_jitter_drawn_from_the_injected_rng() -> None:
    primary = Scripted("a", [ProviderError("a: HTTP 500"), ProviderTimeoutError("a: slow")])

    async def main() -> None:
        assert await collect(chain(primary, backoff_s=0.5, seed=7)) == ["ok", "!"]

    run_virtual(main())
    same = random.Random(7)
    first, second = same.uniform(0, 0.5), same.uniform(0, 1.0)
    assert primary.calls == pytest.approx([0.0, first, first + second], abs=1e-9)


def test_the_provider_s_retry_after_replaces_the_jitter_and_is_capped() -> None:
    primary = Scripted(
        "a",
        [ProviderError("a: 429", retry_after_s=2.5), ProviderError("a: 429", retry_after_s=900)],
    )

    async def main() -> None:
        assert await collect(chain(primary)) == ["ok", "!"]

    run_virtual(main())
    assert primary.calls == pytest.approx([0.0, 2.5, 2.5 + BACKOFF_MAX_S], abs=1e-9)


def test_a_model_out_of_retries_hands_over_to_the_next_without_waiting() -> None:
    primary = Scripted("a", [ProviderError("a: HTTP 500", retry_after_s=1.0)] * 2)
    backup = Scripted("b")

    async def main() -> None:
        assert await collect(chain(primary, backup, max_retries=1)) == ["ok", "!"]

    run_virtual(main())
    assert primary.calls == [0.0, 1.0]
    assert backup.calls == [1.0]


def test_a_refused_key_moves_to_the_next_model_at_once() -> None:
    primary = Scripted("a", [ProviderAuthError("a: credentials refused (HTTP 401)")])
    backup = Scripted("b")

    async def main() -> None:
        assert await collect(chain(primary, backup, max_retries=3)) == ["ok", "!"]

    run_virtual(main())
    assert (primary.calls, backup.calls) == ([0.0], [0.0])


def test_a_rejected_request_fails_the_turn_with_the_provider_s_error_and_no_retry() -> None:
    refusal = ProviderRejectedError("a: context too long", code=ErrorCode.CONTEXT_TOO_LONG)
    primary = Scripted("a", [refusal])
    backup = Scripted("b")

    async def main() -> None:
        with pytest.raises(ProviderRejectedError) as caught:
            await collect(chain(primary, backup))
        assert caught.value is refusal

    run_virtual(main())
    assert (primary.calls, backup.calls) == ([0.0], [])


def test_a_failure_after_output_fails_the_turn_without_retry_or_fallback() -> None:
    dropped = ProviderError("a: connection failed")
    primary = Scripted("a", [("partial", dropped)])
    backup = Scripted("b")
    seen: list[str] = []

    async def main() -> None:
        with pytest.raises(ProviderError) as caught:
            await collect(chain(primary, backup), into=seen)
        assert caught.value is dropped

    run_virtual(main())
    assert seen == ["partial"]
    assert (primary.calls, backup.calls) == ([0.0], [])


def test_a_failure_after_output_is_logged_at_warning_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cut = ProviderError("p/a: connection lost mid-answer")
    primary = Scripted("a", [("partial", cut)])

    async def main() -> None:
        with pytest.raises(ProviderError) as caught:
            await collect(chain(primary, Scripted("b")))
        assert caught.value is cut

    with caplog.at_level(logging.WARNING, logger="turngate.providers"):
        run_virtual(main())
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage() == (
        "run run-1: p/a failed after part of its answer went out:"
        " connection lost mid-answer; not retried"
    )


def test_a_model_that_answers_no_text_is_retried_then_the_next_model_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary = Scripted("a", [NOTHING, EMPTY_STRINGS])
    backup = Scripted("b")

    async def main() -> None:
        # The empty strings pass through, but they are not an answer.
        assert await collect(chain(primary, backup, max_retries=1)) == ["", "", "ok", "!"]

    with caplog.at_level(logging.WARNING, logger="turngate.providers"):
        run_virtual(main())
    delay_s = random.Random(7).uniform(0, 0.5)
    assert primary.calls == pytest.approx([0.0, delay_s], abs=1e-9)
    assert backup.calls == pytest.approx([delay_s], abs=1e-9)
    why = "p/a failed: the model finished without any text"
    assert [r.getMessage() for r in caplog.records] == [
        f"run run-1: {why}; retry 1 of 1 in {delay_s:.3f}s",
        f"run run-1: {why}; falling back to p/b",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)


def test_when_no_model_gives_any_text_the_turn_fails_with_each_model_named() -> None:
    primary = Scripted("a", [NOTHING])
    backup = Scripted("b", [EMPTY_STRINGS])

    async def main() -> None:
        seen: list[str] = []
        with pytest.raises(ProviderError) as caught:
            await collect(chain(primary, backup, max_retries=0), into=seen)
        assert seen == ["", ""]  # passed on, but no answer
        assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
        assert caught.value.message == (
            "all models failed: p/a: the model finished without any text;"
            " p/b: the model finished without any text"
        )

    run_virtual(main())


def test_a_model_that_fails_after_only_empty_strings_is_still_retried() -> None:
    # An empty delta is no output: the client saw nothing, so nothing would be spliced.
    primary = Scripted("a", [("", ProviderError("p/a: HTTP 500"))])

    async def main() -> None:
        assert await collect(chain(primary, max_retries=1)) == ["", "ok", "!"]

    run_virtual(main())
    assert len(primary.calls) == 2


def test_cancelling_the_turn_is_never_caught_and_never_retried() -> None:
    primary = Scripted("a", [HANG])
    backup = Scripted("b")

    async def main() -> None:
        task = asyncio.create_task(collect(chain(primary, backup)))
        await asyncio.sleep(CANCEL_AFTER_S)  # virtual time: mid-backoff
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.get_running_loop().time() == 5.0

    run_virtual(main())
    assert (primary.calls, backup.calls) == ([0.0], [])


def test_a_cancellation_raised_by_a_provider_goes_through_untouched() -> None:
    primary = Scripted("a", [asyncio.CancelledError()])
    backup = Scripted("b")

    async def main() -> None:
        task = asyncio.create_task(collect(chain(primary, backup)))
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    assert (primary.calls, backup.calls) == ([0.0], [])


def test_a_bug_in_a_provider_propagates_unchanged() -> None:
    bug = ValueError("a provider bug")
    primary = Scripted("a", [bug])
    backup = Scripted("b")

    async def main() -> None:
        with pytest.raises(ValueError, match="a provider bug") as caught:
            await collect(chain(primary, backup))
        assert caught.value is bug

    run_virtual(main())
    assert (primary.calls, backup.calls) == ([0.0], [])


def test_when_every_model_fails_the_error_names_each_model_and_why() -> None:
    primary = Scripted(
        "a", [ProviderError("p/a: HTTP 502: bad gateway")] * 2 + [ProviderTimeoutError("p/a: slow")]
    )
    backup = Scripted("b", [ProviderAuthError("p/b: credentials refused (HTTP 401): no")])

    async def main() -> None:
        with pytest.raises(ProviderError) as caught:
            await collect(chain(primary, backup))
        assert caught.value.code is ErrorCode.ALL_MODELS_FAILED
        assert caught.value.retry_after_s is None
        assert caught.value.message == (
            "all models failed: p/a: HTTP 502: bad gateway x2; p/a: slow;"
            " p/b: credentials refused (HTTP 401): no"
        )

    run_virtual(main())


def test_every_retry_and_fallback_is_logged_at_warning_with_the_run_and_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary = Scripted("a", [ProviderError("p/a: HTTP 500: x", retry_after_s=0.25)] * 2)
    backup = Scripted("b")

    async def main() -> None:
        await collect(chain(primary, backup, max_retries=1))

    with caplog.at_level(logging.WARNING, logger="turngate.providers"):
        run_virtual(main())
    assert [r.getMessage() for r in caplog.records] == [
        "run run-1: p/a failed: HTTP 500: x; retry 1 of 1 in 0.250s",
        "run run-1: p/a failed: HTTP 500: x; falling back to p/b",
    ]
    for record in caplog.records:
        assert record.levelno == logging.WARNING
        assert record.name == "turngate.providers"
        assert record.run_id == REQUEST.run_id  # type: ignore[attr-defined]
        assert record.session_key == REQUEST.session_key  # type: ignore[attr-defined]


def test_closing_the_chain_mid_reply_closes_the_model_call_there_and_then() -> None:
    primary = Scripted("a")

    async def main() -> None:
        events = chain(primary).stream(REQUEST)
        assert isinstance(events, AsyncGenerator)
        assert await anext(events) == TextDelta("ok")
        await events.aclose()
        assert primary.closed == 1

    run_virtual(main())


def test_a_chain_needs_at_least_one_model() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        FallbackChain([])


async def events_of(provider: FallbackChain, into: list[ProviderEvent]) -> None:
    """Every event of one call, appended to ``into`` as they arrive."""
    async for event in provider.stream(REQUEST):
        into.append(event)


def test_only_the_finish_and_usage_of_the_attempt_that_answered_are_passed_on() -> None:
    # The first model finished with no text: billed, but no answer, so its Finish is held back;
    # the one passed on names the model that answered.
    primary = Scripted("a", [NOTHING], usage=Usage(100, 3))
    backup = Scripted("b", usage=Usage(10, 5))
    events: list[ProviderEvent] = []

    run_virtual(events_of(chain(primary, backup, max_retries=0), events))
    assert events == [TextDelta("ok"), TextDelta("!"), Finish("stop", Usage(10, 5), "p/b")]


def test_a_chain_whose_every_model_failed_yields_no_finish() -> None:
    primary = Scripted("a", [NOTHING], usage=Usage(100, 3))
    events: list[ProviderEvent] = []

    async def main() -> None:
        with pytest.raises(ProviderError):
            await events_of(chain(primary, max_retries=0), events)

    run_virtual(main())
    assert events == []


def test_a_tool_call_is_output_so_a_failure_after_it_is_not_retried() -> None:
    call = ToolCallDelta(0, "call_1", "lookup", '{"q": ')
    dropped = ProviderError("a: connection failed")
    primary = Scripted("a", [(call, dropped)])
    backup = Scripted("b")
    events: list[ProviderEvent] = []

    async def main() -> None:
        with pytest.raises(ProviderError) as caught:
            await events_of(chain(primary, backup), events)
        assert caught.value is dropped

    run_virtual(main())
    assert events == [call]
    assert (primary.calls, backup.calls) == ([0.0], [])
