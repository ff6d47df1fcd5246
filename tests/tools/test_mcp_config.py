"""``[[agents.mcp]]``: how an agent's MCP servers are configured, what is refused (naming the
key), and what each server reads from the gateway's environment."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.secrets import MCP_ENV_SECRET, MCP_HEADER_TOKEN
from tests.test_config import NO_STATE_DIR, problems_of
from turngate.cli.gateway_cmd import config_secrets
from turngate.config import GatewayConfig, load_config
from turngate.config_mcp import McpServerConfig
from turngate.errors import ChannelRefusedError, ErrorCode, ToolServerRefusedError
from turngate.gateway.agent_tools import build_agent_tools
from turngate.gateway.assembly import build_agents
from turngate.runtime.clock import LoopClock
from turngate.tools.mcp import mcp_servers
from turngate.tools.mcp_env import configured_secrets, resolve_environment

TWO_SERVERS = """\
[[agents]]
id = "main"

[[agents.mcp]]
name = "fs"
command = "npx"
args = ["-y", "some-server", "/srv/notes"]
env = { LOG_LEVEL = "info", GITHUB_TOKEN = "${GH_TOKEN}" }
tool_timeout = "2m"
deny = ["fs__write_*"]

[[agents.mcp]]
name = "search"
url = "https://mcp.example.com/mcp"
headers_env = { Authorization = "SEARCH_AUTH" }
allow = ["search__*"]
"""


def test_an_agent_s_mcp_servers_are_read_from_the_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(TWO_SERVERS)
    [agent] = load_config(file, env=NO_STATE_DIR).agents
    fs, search = agent.mcp
    assert (fs.name, fs.command, fs.args, fs.url) == (
        "fs",
        "npx",
        ("-y", "some-server", "/srv/notes"),
        None,
    )
    assert fs.env == {"LOG_LEVEL": "info", "GITHUB_TOKEN": "${GH_TOKEN}"}
    assert (fs.tool_timeout, fs.allow, fs.deny) == (120.0, (), ("fs__write_*",))
    assert (search.url, search.headers_env) == (
        "https://mcp.example.com/mcp",
        {"Authorization": "SEARCH_AUTH"},
    )
    assert (search.command, search.tool_timeout, search.allow) == (None, 60.0, ("search__*",))


@pytest.mark.parametrize(
    ("entry", "key", "words"),
    [
        ('name = "fs"\n', "url", "needs either a command (stdio) or a url (Streamable HTTP)"),
        ('name = "fs"\ncommand = "x"\nurl = "http://h/mcp"\n', "url", "not both"),
        ('name = "fs"\nurl = "ftp://h/mcp"\n', "url", "is not an http:// or https:// URL"),
        ('name = "Fs"\ncommand = "x"\n', "name", "an MCP server name is 1-32 characters"),
        ('name = "a__b"\ncommand = "x"\n', "name", "has no '__'"),
        ('name = "a_"\ncommand = "x"\n', "name", "does not end with '_'"),
        ('name = "fs"\ncommand = " "\n', "command", "must name an executable"),
        ('name = "fs"\nurl = "http://h/mcp"\nargs = ["x"]\n', "args", "only for a stdio"),
        ('name = "fs"\nurl = "http://h/mcp"\nenv = { A = "b" }\n', "env", "only for a stdio"),
        ('name = "fs"\ncommand = "x"\nenv = { "A-B" = "b" }\n', "env", "not an environment"),
        ('name = "fs"\ncommand = "x"\nenv = { A = "x${B}" }\n', "env", "a whole value"),
        ('name = "fs"\ncommand = "x"\nheaders_env = { A = "B" }\n', "headers_env", "a url"),
        ('name = "fs"\nurl = "http://h"\nheaders_env = { "A B" = "B" }\n', "headers_env", "header"),
        ('name = "fs"\nurl = "http://h"\nheaders_env = { A = "$B" }\n', "headers_env", "variable"),
        ('name = "fs"\ncommand = "x"\nallow = ["fs/*"]\n', "allow", "not a pattern"),
        ('name = "fs"\ncommand = "x"\ndeny = [""]\n', "deny", "not a pattern"),
        ('name = "fs"\ncommand = "x"\ntool_timeout = "soon"\n', "tool_timeout", "duration"),
        ('name = "fs"\ncommand = "x"\ncwd = "/"\n', "cwd", "is not a setting"),
    ],
)
def test_a_bad_mcp_server_entry_is_refused_naming_its_key_and_line(
    tmp_path: Path, entry: str, key: str, words: str
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(f'[[agents]]\nid = "main"\n\n[[agents.mcp]]\n{entry}')
    [problem] = problems_of(file)
    assert problem.key == f"agents[0].mcp[0].{key}"
    assert problem.source.line is not None
    assert words in problem.message


def test_two_mcp_servers_of_one_agent_cannot_share_a_name(tmp_path: Path) -> None:
    file = tmp_path / "turngate.toml"
    server = '[[agents.mcp]]\nname = "fs"\ncommand = "x"\n'
    file.write_text(f'[[agents]]\nid = "main"\n{server}{server}')
    [problem] = problems_of(file)
    assert (problem.key, problem.source.line) == ("agents[0].mcp[1].name", 7)
    assert "'fs' is the name of another MCP server of this agent" in problem.message


def test_a_server_s_environment_reads_references_and_headers_and_keeps_them_secret() -> None:
    stdio = McpServerConfig(name="fs", command="x", env={"TOKEN": "${SRC}", "MODE": "$HOME"})
    resolved = resolve_environment(stdio, {"SRC": MCP_ENV_SECRET})
    assert (resolved.env, resolved.secrets) == (
        {"TOKEN": MCP_ENV_SECRET, "MODE": "$HOME"},
        (MCP_ENV_SECRET,),
    )
    http = McpServerConfig(name="web", url="http://h/mcp", headers_env={"Authorization": "AUTH"})
    resolved = resolve_environment(http, {"AUTH": MCP_HEADER_TOKEN})
    assert (resolved.headers, resolved.secrets) == (
        {"Authorization": MCP_HEADER_TOKEN},
        (MCP_HEADER_TOKEN,),
    )


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        (
            McpServerConfig(name="fs", command="x", env={"T": "${GONE}"}),
            {},
            "MCP server fs: env.T names $GONE, which is not set in the gateway's environment",
        ),
        (
            McpServerConfig(name="web", url="http://h", headers_env={"X-Key": "KEY"}),
            {"KEY": f"{MCP_HEADER_TOKEN}\r\nInjected: yes"},
            "MCP server web: headers_env.X-Key: $KEY holds a line break, which no HTTP header"
            " can carry",
        ),
    ],
    ids=["missing", "line-break"],
)
def test_a_server_that_cannot_be_configured_is_refused_for_good_naming_never_a_value(
    config: McpServerConfig, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ToolServerRefusedError) as caught:
        resolve_environment(config, environ)
    assert caught.value.message == message
    assert isinstance(caught.value, ChannelRefusedError)  # what makes its supervisor stop
    assert caught.value.code is ErrorCode.CHANNEL_REFUSED


def test_the_gateway_blanks_every_mcp_value_read_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(TWO_SERVERS)
    monkeypatch.setenv("GH_TOKEN", MCP_ENV_SECRET)
    monkeypatch.setenv("SEARCH_AUTH", f"Bearer {MCP_HEADER_TOKEN}")
    config = load_config(file, env=NO_STATE_DIR)
    assert set(config_secrets(config)) == {MCP_ENV_SECRET, f"Bearer {MCP_HEADER_TOKEN}"}
    [agent] = config.agents
    assert configured_secrets(agent.mcp[0], {}) == []


def test_an_agent_s_servers_are_built_from_its_entries_offering_nothing_before_they_run(
    tmp_path: Path,
) -> None:
    file = tmp_path / "turngate.toml"
    file.write_text(TWO_SERVERS)
    [agent] = load_config(file, env=NO_STATE_DIR).agents
    servers = mcp_servers(agent, clock=LoopClock(), rng=random.Random(1), environ={})
    assert [(s.name, s.call_timeout_s) for s in servers] == [("fs", 120.0), ("search", 60.0)]
    assert [s.snapshot().name for s in servers] == ["mcp:main/fs", "mcp:main/search"]
    assert [s.specs() for s in servers] == [[], []]
    assert servers[0].owns("fs__read")
    assert not servers[0].owns("search__find")
    assert not servers[0].owns("fs_read")


def test_an_agent_with_tools_is_offered_its_servers_and_built_in_tools_and_others_none() -> None:
    config = GatewayConfig.model_validate(
        {
            "agents": [
                {
                    "id": "main",
                    "mcp": [{"name": "files", "command": "files-server"}],
                    "tools": ["sessions_history"],
                    "max_steps": 7,
                },
                {"id": "plain"},
            ]
        }
    )
    tools = build_agent_tools(config, LoopClock(), {})
    assert [server.label for server in tools.servers] == ["main/files"]
    agents = build_agents(config, toolboxes=tools.toolboxes)
    main, plain = agents.get("main"), agents.get("plain")
    assert main.toolbox is tools.toolboxes["main"]
    assert main.max_steps == 7
    # The server offers nothing until it runs; the built-in tool is there at once.
    assert [spec.name for spec in main.toolbox.specs()] == ["sessions_history"]
    assert plain.toolbox is None
