"""The toolbox's own rules, with tiny in-memory sources: routing by name, the model's arguments,
the deadline, cancellation, failures and oversized results. No server, no SDK."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.test_architecture import PACKAGE, imports_of
from tests.tools.servers import CONTEXT
from turngate.tools.base import (
    ARGUMENTS_CHARS_MAX,
    NAMES_LISTED_MAX,
    RESULT_CHARS_MAX,
    Toolbox,
    ToolContext,
    ToolResult,
    ToolSpec,
)

SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class Source:
    """Tools named ``<prefix>__<tool>``: ``echo`` answers its arguments, ``hang`` waits until
    cancelled (and records it), ``boom`` raises, ``huge`` answers ``size`` characters."""

    def __init__(self, prefix: str, *, call_timeout_s: float = 60.0, size: int = 0) -> None:
        self.prefix = prefix
        self.call_timeout_s = call_timeout_s
        self.size = size
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec(f"{self.prefix}__{t}", t, SCHEMA) for t in ("echo", "hang", "boom")]

    def owns(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}__")

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self.calls.append((name, arguments))
        tool = name.removeprefix(f"{self.prefix}__")
        if tool == "hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        if tool == "boom":
            raise KeyError("a bug")
        if tool == "huge":
            return ToolResult("x" * self.size, is_error=False)
        return ToolResult(f"{name} {arguments}", is_error=False)


@pytest.mark.asyncio
async def test_a_call_goes_to_the_source_that_owns_the_name() -> None:
    first, second = Source("a"), Source("b")
    toolbox = Toolbox([first, second])
    assert [spec.name for spec in toolbox.specs()][:4] == [
        "a__echo",
        "a__hang",
        "a__boom",
        "b__echo",
    ]
    result = await toolbox.call("b__echo", '{"q": [1, 2]}', context=CONTEXT, timeout_s=5)
    assert result == ToolResult("b__echo {'q': [1, 2]}", is_error=False)
    assert (first.calls, second.calls) == ([], [("b__echo", {"q": [1, 2]})])


@pytest.mark.asyncio
async def test_an_unknown_tool_is_an_error_result_naming_the_tools_offered() -> None:
    result = await Toolbox([Source("a")]).call("nope", "{}", context=CONTEXT, timeout_s=5)
    assert result == ToolResult(
        "unknown tool 'nope'; the tools offered are: a__echo, a__hang, a__boom", is_error=True
    )


@pytest.mark.asyncio
async def test_the_unknown_tool_s_list_of_offered_tools_is_bounded() -> None:
    toolbox = Toolbox([Source(f"s{i}") for i in range(20)])
    result = await toolbox.call("nope", "{}", context=CONTEXT, timeout_s=5)
    assert result.content.endswith(f", and {60 - NAMES_LISTED_MAX} more")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("[1]", "must be a JSON object, not an array"),
        ("3", "must be a JSON object, not a number"),
        ("null", "must be a JSON object, not null"),
        ("true", "must be a JSON object, not a boolean"),
        ("{'a': 1}", "are not valid JSON: Expecting property name enclosed in double quotes"),
        ("[" * 100_000, "are not valid JSON: maximum recursion depth exceeded"),
        (" " * (ARGUMENTS_CHARS_MAX + 1), f"are longer than {ARGUMENTS_CHARS_MAX} characters"),
    ],
    ids=["array", "number", "null", "boolean", "python", "deep", "huge"],
)
@pytest.mark.asyncio
async def test_arguments_that_are_not_a_json_object_are_an_error_result_and_no_call(
    arguments: str, error: str
) -> None:
    source = Source("a")
    result = await Toolbox([source]).call("a__echo", arguments, context=CONTEXT, timeout_s=5)
    assert result.is_error
    assert result.content.startswith(f"the arguments of tool a__echo {error}")
    assert source.calls == []


@pytest.mark.asyncio
async def test_empty_arguments_mean_no_arguments() -> None:
    source = Source("a")
    assert (
        await Toolbox([source]).call("a__echo", "  ", context=CONTEXT, timeout_s=5)
    ).content == "a__echo {}"


@pytest.mark.parametrize(
    ("caller_s", "tool_s", "limit"), [(0.05, 60.0, "0.05s"), (60.0, 0.05, "0.05s")]
)
@pytest.mark.asyncio
async def test_a_call_past_the_shorter_deadline_is_cancelled_and_an_error_result(
    caller_s: float, tool_s: float, limit: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source("a", call_timeout_s=tool_s)
    result = await Toolbox([source]).call("a__hang", "{}", context=CONTEXT, timeout_s=caller_s)
    assert result == ToolResult(
        f"tool a__hang did not finish within {limit} and was cancelled", is_error=True
    )
    assert source.cancelled.is_set()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"session agent:main:tools, run run-1: tool a__hang did not finish within {limit};"
        " cancelled"
    )
    assert (warning.session_key, warning.run_id) == ("agent:main:tools", "run-1")  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_cancelling_the_caller_cancels_the_call_and_is_no_result() -> None:
    source = Source("a")
    call = asyncio.create_task(
        Toolbox([source]).call("a__hang", "{}", context=CONTEXT, timeout_s=60)
    )
    async with asyncio.timeout(5):
        await source.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert source.cancelled.is_set()


@pytest.mark.asyncio
async def test_a_bug_in_a_source_is_an_error_result_and_an_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = await Toolbox([Source("a")]).call("a__boom", "{}", context=CONTEXT, timeout_s=5)
    assert result == ToolResult("tool a__boom failed: an internal error in the gateway", True)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], KeyError)


@pytest.mark.asyncio
async def test_a_huge_result_is_cut_with_a_note() -> None:
    source = Source("a", size=RESULT_CHARS_MAX + 10)
    result = await Toolbox([source]).call("a__huge", "{}", context=CONTEXT, timeout_s=5)
    assert result.content == "x" * RESULT_CHARS_MAX + "\n[10 more characters cut]"


def test_the_toolbox_imports_no_sdk_and_the_tools_no_outer_layer() -> None:
    # The runtime may depend on the toolbox without loading the MCP SDK (about a second), and
    # the tools are below the gateway and the runtime that will call them.
    tools = PACKAGE / "tools"
    assert {name.split(".")[0] for name in imports_of(tools / "base.py")} <= {
        "__future__",
        "asyncio",
        "collections",
        "dataclasses",
        "json",
        "logging",
        "math",
        "typing",
    }
    for path in tools.glob("*.py"):
        for name in imports_of(path):
            assert not name.startswith(
                ("turngate.gateway", "turngate.cli", "turngate.runtime", "turngate.store")
            ), f"tools/{path.name} imports {name}"
