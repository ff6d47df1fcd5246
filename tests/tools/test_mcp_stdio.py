"""An agent's MCP server over stdio: the test server (``mcp_test_server.py``) as a real child
process, through the agent's :class:`Toolbox`. Real processes and real time: every wait is for
a condition, under a deadline."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import pytest
from mcp import Client, types
from mcp.client.session import MessageHandlerFnT

from tests.secrets import MCP_ENV_SECRET
from tests.tools.mcp_test_server import FAILURE_TEXT, LONG_NAME, UNSET
from tests.tools.servers import CONTEXT, WAIT_S, connected, names, stdio_config, until
from turngate.core.connection import ConnectionState
from turngate.tools.base import Toolbox, ToolResult

CALL_S = 10.0
"""The caller's budget for a call in these tests (each test's deadline is shorter)."""


@pytest.mark.asyncio
async def test_a_stdio_server_s_tools_are_offered_namespaced_and_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "turngate.tools")
    async with connected(stdio_config()) as server:
        toolbox = Toolbox([server])
        assert names(toolbox) == [
            "srv__add",
            "srv__hang",
            "srv__seen",
            "srv__fail",
            "srv__die",
            "srv__grow",
            "srv__env",
        ]
        add = toolbox.specs()[0]
        assert add.description == "Add two numbers."
        assert add.input_schema["required"] == ["a", "b"]

        assert await toolbox.call(
            "srv__add", '{"a": 2, "b": 3}', context=CONTEXT, timeout_s=CALL_S
        ) == ToolResult("5", is_error=False)
        failed = await toolbox.call("srv__fail", "", context=CONTEXT, timeout_s=CALL_S)
        assert failed.is_error
        assert FAILURE_TEXT in failed.content
        assert server.snapshot().generation == 1
    skipped = [r.getMessage() for r in caplog.records if "not offered" in r.getMessage()]
    assert len(skipped) == 2
    assert "'dotted.name'" in skipped[0]
    assert f"'srv__{LONG_NAME}' does not fit" in skipped[1]


@pytest.mark.asyncio
async def test_a_hanging_tool_meets_its_deadline_and_the_server_sees_the_cancellation() -> None:
    async with connected(stdio_config(tool_timeout=0.5)) as server:
        toolbox = Toolbox([server])
        result = await toolbox.call(
            "srv__hang", '{"label": "deadline"}', context=CONTEXT, timeout_s=CALL_S
        )
        assert result == ToolResult(
            "tool srv__hang did not finish within 0.5s and was cancelled", is_error=True
        )
        seen = '{"label": "deadline", "what": "cancelled"}'
        assert await toolbox.call(
            "srv__seen", seen, context=CONTEXT, timeout_s=CALL_S
        ) == ToolResult("true", False)


@pytest.mark.asyncio
async def test_the_caller_s_shorter_budget_is_the_deadline() -> None:
    async with connected(stdio_config(tool_timeout=60)) as server:
        result = await Toolbox([server]).call(
            "srv__hang", '{"label": "budget"}', context=CONTEXT, timeout_s=0.3
        )
        assert result.content == "tool srv__hang did not finish within 0.3s and was cancelled"


@pytest.mark.parametrize("legacy", [False, True], ids=["2026", "2025"])
@pytest.mark.asyncio
async def test_cancelling_the_caller_cancels_the_call_on_the_server(legacy: bool) -> None:
    async with connected(stdio_config(legacy=legacy)) as server:
        toolbox = Toolbox([server])
        call = asyncio.create_task(
            toolbox.call("srv__hang", '{"label": "abort"}', context=CONTEXT, timeout_s=CALL_S)
        )
        started = '{"label": "abort", "what": "started"}'
        assert (
            await toolbox.call("srv__seen", started, context=CONTEXT, timeout_s=CALL_S)
        ).content == "true"
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        cancelled = '{"label": "abort", "what": "cancelled"}'
        assert (
            await toolbox.call("srv__seen", cancelled, context=CONTEXT, timeout_s=CALL_S)
        ).content == "true"


@pytest.mark.asyncio
async def test_a_server_that_dies_mid_call_ends_its_calls_and_is_restarted() -> None:
    async with connected(stdio_config()) as server:
        toolbox = Toolbox([server])
        hanging = asyncio.create_task(
            toolbox.call("srv__hang", '{"label": "in-flight"}', context=CONTEXT, timeout_s=CALL_S)
        )
        started = '{"label": "in-flight", "what": "started"}'
        assert (
            await toolbox.call("srv__seen", started, context=CONTEXT, timeout_s=CALL_S)
        ).content == "true"
        died = await toolbox.call("srv__die", "{}", context=CONTEXT, timeout_s=CALL_S)
        assert died.is_error
        assert "went away during the call" in died.content
        assert (await hanging).content == (
            "tool srv__hang: MCP server srv went away during the call, which may or may not"
            " have taken effect; it is being reconnected"
        )

        await until(server, lambda: server.snapshot().generation == 2 and bool(server.specs()))
        snapshot = server.snapshot()
        assert (snapshot.state, snapshot.reconnects) == (ConnectionState.READY, 1)
        again = await toolbox.call(
            "srv__add", '{"a": 1, "b": 1}', context=CONTEXT, timeout_s=CALL_S
        )
        assert again == ToolResult("2", is_error=False)


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-subscription", "2025-notification"])
@pytest.mark.asyncio
async def test_a_new_tool_is_offered_once_the_server_says_its_tools_changed(legacy: bool) -> None:
    async with connected(stdio_config(legacy=legacy)) as server:
        toolbox = Toolbox([server])
        assert "srv__extra" not in names(toolbox)
        assert (
            await toolbox.call("srv__grow", "{}", context=CONTEXT, timeout_s=CALL_S)
        ).content == "grown"
        await until(server, lambda: "srv__extra" in names(toolbox))
        doubled = await toolbox.call("srv__extra", '{"x": 21}', context=CONTEXT, timeout_s=CALL_S)
        assert doubled == ToolResult("42", is_error=False)
        assert server.snapshot().generation == 1


@pytest.mark.asyncio
async def test_the_server_gets_its_env_with_references_read_and_no_other_gateway_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TURNGATE_TEST_GATEWAY_ONLY", "not for tools")
    env = {"FROM_GATEWAY": "${SOURCE}", "WRITTEN": "as $written"}
    async with connected(stdio_config(env=env), {"SOURCE": MCP_ENV_SECRET}) as server:
        toolbox = Toolbox([server])

        async def env_of(name: str) -> str:
            result = await toolbox.call(
                "srv__env", f'{{"name": "{name}"}}', context=CONTEXT, timeout_s=CALL_S
            )
            return result.content

        assert await env_of("FROM_GATEWAY") == MCP_ENV_SECRET
        assert await env_of("WRITTEN") == "as $written"
        assert await env_of("TURNGATE_TEST_GATEWAY_ONLY") == UNSET
        assert await env_of("PATH") != UNSET


@pytest.mark.asyncio
async def test_a_server_whose_variable_is_not_set_is_refused_for_good_and_unavailable() -> None:
    config = stdio_config(env={"TOKEN": "${MISSING_TOKEN}"})
    async with connected(config, {}, ready=False) as server:
        await until(server, lambda: server.snapshot().state is ConnectionState.STOPPED)
        snapshot = server.snapshot()
        assert snapshot.fatal
        assert snapshot.generation == 1
        assert snapshot.last_error == (
            "ToolServerRefusedError: MCP server srv: env.TOKEN names $MISSING_TOKEN, which is"
            " not set in the gateway's environment"
        )
        toolbox = Toolbox([server])
        assert toolbox.specs() == []
        result = await toolbox.call(
            "srv__add", '{"a": 1, "b": 2}', context=CONTEXT, timeout_s=CALL_S
        )
        assert result.is_error
        assert result.content.startswith("tool srv__add: MCP server srv is unavailable (it is")
        assert "MISSING_TOKEN" in result.content


class RecordingClient(Client):
    """The SDK's client, keeping each generation's notification handler."""

    handlers: ClassVar[list[MessageHandlerFnT]] = []

    def __init__(self, *args: Any, message_handler: MessageHandlerFnT, **kwargs: Any) -> None:
        super().__init__(*args, message_handler=message_handler, **kwargs)
        self.handlers.append(message_handler)


@pytest.mark.asyncio
async def test_an_old_generation_s_notification_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("turngate.tools.mcp.Client", RecordingClient)
    RecordingClient.handlers.clear()
    async with connected(stdio_config()) as server:
        toolbox = Toolbox([server])
        assert (await toolbox.call("srv__die", "{}", context=CONTEXT, timeout_s=CALL_S)).is_error
        await until(server, lambda: server.snapshot().generation == 2 and bool(server.specs()))
        first, second = RecordingClient.handlers
        offered = toolbox.specs()

        await first(types.ToolListChangedNotification())
        assert server.snapshot().stale_callbacks_ignored == 1
        assert toolbox.specs() == offered
        await second(types.ToolListChangedNotification())  # the live one is heard: a listing
        async with asyncio.timeout(WAIT_S):
            await server.changed()
        assert toolbox.specs() == offered
        assert server.snapshot().stale_callbacks_ignored == 1


@pytest.mark.asyncio
async def test_something_unreadable_from_the_server_is_logged_and_the_connection_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("turngate.tools.mcp.Client", RecordingClient)
    RecordingClient.handlers.clear()
    async with connected(stdio_config()) as server:
        [handler] = RecordingClient.handlers
        # What the SDK hands over for a line on the server's stdout that is not JSON-RPC.
        await handler(ValueError("Invalid JSON: expected value at line 1 column 1"))
        result = await Toolbox([server]).call(
            "srv__add", '{"a": 1, "b": 2}', context=CONTEXT, timeout_s=CALL_S
        )
        assert result.content == "3"
        assert server.snapshot().generation == 1
    [warning] = [r for r in caplog.records if "sent something unreadable" in r.getMessage()]
    assert warning.getMessage() == (
        "MCP server main/srv sent something unreadable: ValueError: Invalid JSON: expected value at"
        " line 1 column 1"
    )
