"""An agent's MCP server over Streamable HTTP: the test server under uvicorn on 127.0.0.1, in
the test's own loop, through the agent's :class:`Toolbox`."""

from __future__ import annotations

import logging

import pytest

from tests.secrets import MCP_HEADER_TOKEN
from tests.tools.servers import CONTEXT, connected, http_server, names, until
from turngate.config_mcp import McpServerConfig
from turngate.core.connection import ConnectionState
from turngate.gateway.server import listening_socket
from turngate.tools.base import Toolbox, ToolResult

CALL_S = 10.0
AUTH_ENV = "TEST_MCP_AUTH"


@pytest.mark.asyncio
async def test_the_header_from_the_environment_reaches_the_server_and_no_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_server() as served:
        config = McpServerConfig(
            name="web", url=served.url, headers_env={"Authorization": AUTH_ENV}
        )
        environ = {AUTH_ENV: f"Bearer {MCP_HEADER_TOKEN}"}
        async with connected(config, environ) as server:
            toolbox = Toolbox([server])
            assert "web__add" in names(toolbox)
            added = await toolbox.call(
                "web__add", '{"a": 40, "b": 2}', context=CONTEXT, timeout_s=CALL_S
            )
            assert added == ToolResult("42", is_error=False)
            assert (
                await toolbox.call("web__fail", "{}", context=CONTEXT, timeout_s=CALL_S)
            ).is_error
    assert served.authorizations
    assert set(served.authorizations) == {f"Bearer {MCP_HEADER_TOKEN}"}
    assert MCP_HEADER_TOKEN not in caplog.text


@pytest.mark.asyncio
async def test_a_hanging_tool_over_http_meets_its_deadline_and_the_server_sees_it() -> None:
    async with http_server() as served:
        config = McpServerConfig(name="web", url=served.url, tool_timeout=0.5)
        async with connected(config) as server:
            toolbox = Toolbox([server])
            result = await toolbox.call(
                "web__hang", '{"label": "http"}', context=CONTEXT, timeout_s=CALL_S
            )
            assert result.content == "tool web__hang did not finish within 0.5s and was cancelled"
            seen = '{"label": "http", "what": "cancelled"}'
            assert (
                await toolbox.call("web__seen", seen, context=CONTEXT, timeout_s=CALL_S)
            ).content == "true"


@pytest.mark.asyncio
async def test_a_new_tool_is_offered_once_the_http_server_says_its_tools_changed() -> None:
    async with (
        http_server() as served,
        connected(McpServerConfig(name="web", url=served.url)) as server,
    ):
        toolbox = Toolbox([server])
        assert (
            await toolbox.call("web__grow", "{}", context=CONTEXT, timeout_s=CALL_S)
        ).content == "grown"
        await until(server, lambda: "web__extra" in names(toolbox))
        assert (
            await toolbox.call("web__extra", '{"x": 4}', context=CONTEXT, timeout_s=CALL_S)
        ).content == "8"


@pytest.mark.asyncio
async def test_allow_and_deny_limit_what_is_offered_and_what_can_be_called() -> None:
    async with http_server() as served:
        config = McpServerConfig(
            name="web", url=served.url, allow=("web__a*", "web__f*", "web__h*"), deny=("web__h*",)
        )
        async with connected(config) as server:
            toolbox = Toolbox([server])
            assert names(toolbox) == ["web__add", "web__fail"]
            refused = await toolbox.call(
                "web__hang", '{"label": "x"}', context=CONTEXT, timeout_s=CALL_S
            )
            assert refused == ToolResult(
                "tool web__hang is not offered to this agent (MCP server web)", is_error=True
            )
            unknown = await toolbox.call("web__nothing", "{}", context=CONTEXT, timeout_s=CALL_S)
            assert unknown == ToolResult("tool web__nothing is unknown (MCP server web)", True)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("[1, 2]", "the arguments of tool web__add must be a JSON object, not an array"),
        ('"a=1"', "the arguments of tool web__add must be a JSON object, not a string"),
        ('{"a": 1,', "the arguments of tool web__add are not valid JSON: "),
    ],
)
@pytest.mark.asyncio
async def test_arguments_that_are_not_a_json_object_are_an_error_result(
    arguments: str, error: str
) -> None:
    async with (
        http_server() as served,
        connected(McpServerConfig(name="web", url=served.url)) as server,
    ):
        result = await Toolbox([server]).call(
            "web__add", arguments, context=CONTEXT, timeout_s=CALL_S
        )
        assert result.is_error
        assert result.content.startswith(error)


@pytest.mark.asyncio
async def test_arguments_the_tool_refuses_are_an_error_result_from_the_server() -> None:
    async with (
        http_server() as served,
        connected(McpServerConfig(name="web", url=served.url)) as server,
    ):
        result = await Toolbox([server]).call(
            "web__add", '{"a": "one"}', context=CONTEXT, timeout_s=CALL_S
        )
        assert result.is_error
        assert "add" in result.content


@pytest.mark.asyncio
async def test_a_server_that_cannot_be_reached_offers_nothing_and_its_calls_say_so() -> None:
    sock = listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    sock.close()  # nobody listens there now: every attempt is refused
    async with connected(McpServerConfig(name="web", url=url), ready=False) as server:
        await until(server, lambda: server.snapshot().generation >= 2)
        toolbox = Toolbox([server])
        assert toolbox.specs() == []
        result = await toolbox.call(
            "web__add", '{"a": 1, "b": 2}', context=CONTEXT, timeout_s=CALL_S
        )
        assert result.is_error
        assert result.content.startswith("tool web__add: MCP server web is unavailable (it is")
        assert "ConnectError" in result.content
        assert server.snapshot().state is not ConnectionState.READY
