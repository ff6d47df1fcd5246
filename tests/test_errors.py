"""One error vocabulary: every code maps to a status, every lower-level failure is translated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from tests.fake_models import Call, ScriptedModel
from turngate.core.session import RunFailed
from turngate.core.transcript import TranscriptItem
from turngate.core.turn import Outcome, Turn, TurnState, Usage
from turngate.errors import (
    ErrorCode,
    InvalidFieldError,
    ProviderError,
    ProviderTimeoutError,
    StaleEpochError,
    TurngateError,
)
from turngate.gateway.frames import ERROR_HTTP_STATUS, TERMINAL_HTTP_STATUS, WIRE_STATUS
from turngate.runtime.run import RunProgress, RunSpec, execute_run
from turngate.store.base import TurnRecord
from turngate.store.sqlite import SqliteStore


def test_every_error_code_has_an_http_status() -> None:
    assert set(ERROR_HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= status < 600 for status in ERROR_HTTP_STATUS.values())


def test_every_turn_state_has_a_wire_status_and_every_terminal_one_an_http_status() -> None:
    assert set(WIRE_STATUS) == set(TurnState)
    assert set(TERMINAL_HTTP_STATUS) == {s for s in TurnState if s.is_terminal}
    assert len(set(TERMINAL_HTTP_STATUS.values())) == len(TERMINAL_HTTP_STATUS)


def test_error_codes_are_stable_snake_case_strings() -> None:
    for code in ErrorCode:
        assert code.value == code.name.lower()


def test_field_errors_name_their_field() -> None:
    error = InvalidFieldError("timeoutMs", "must be >= 1")
    assert error.message == "timeoutMs: must be >= 1"
    assert error.code is ErrorCode.INVALID_FIELD
    assert isinstance(error, TurngateError)


T = TypeVar("T")


class QuietHost:
    """A run's host that takes its reports and has nothing to steer in."""

    def now(self) -> float:
        return 0.0

    def progress(self, progress: RunProgress) -> None:
        del progress

    def model_answered(self, model: str, usage: Usage | None) -> None:
        del model, usage

    async def write_steps(self, items: Sequence[TranscriptItem]) -> None:
        raise AssertionError(f"a run offered no tools writes no step: {items}")

    async def take_steered(self) -> list[Turn]:
        return []

    async def read(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        del what
        return await attempt()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ProviderError("upstream said 503"), ErrorCode.PROVIDER_ERROR),
        (ProviderTimeoutError("no first token in 30s"), ErrorCode.PROVIDER_TIMEOUT),
        (ValueError("a provider bug"), ErrorCode.INTERNAL),
    ],
)
def test_provider_failures_become_failed_turns_with_a_code(
    tmp_path: Path, error: Exception, code: ErrorCode
) -> None:
    async def main() -> RunFailed:
        store = SqliteStore(tmp_path / "db")
        await store.open()
        try:
            turn = Turn("r", "agent:main:main", "hi", 0.0, 10.0)
            spec = RunSpec("agent:main:main", "r", 1, (turn,), 10)
            result = await execute_run(
                spec, store, ScriptedModel(then=Call(raises=error)), QuietHost()
            )
        finally:
            await store.close()
        assert isinstance(result, RunFailed)
        return result

    result = asyncio.run(main())
    assert result.code is code
    assert "agent:main:main" in result.message


def test_the_store_refuses_to_end_a_run_whose_epoch_is_stale_and_writes_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "db")
        await store.open()
        try:
            record = TurnRecord(
                "t1", "agent:main:main", "main", "hi", "followup", TurnState.ACCEPTED, 0.0, 60.0
            )
            await store.accept_turn(record)
            await store.start_run("agent:main:main", "t1", 1, ["t1"], 1.0)
            done = Outcome("t1", TurnState.REPLIED, "t1", reply="late")
            with pytest.raises(StaleEpochError) as caught:
                await store.end_run(
                    "agent:main:main", "t1", 0, [done], [TranscriptItem.user("hi")], 2.0
                )
            assert caught.value.code is ErrorCode.STALE_EPOCH
            assert "agent:main:main" in caught.value.message
            assert await store.transcript("agent:main:main", 10) == []
            stored = await store.get_turn("t1")
            assert stored is not None
            assert stored.state is TurnState.RUNNING
        finally:
            await store.close()

    asyncio.run(main())
