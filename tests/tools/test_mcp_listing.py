"""Which of a server's tools an agent is offered, under which names, and how a tool's answer
reads: pure functions over the SDK's types."""

from __future__ import annotations

import logging

import pytest
from mcp import types

from turngate.tools.base import ToolResult
from turngate.tools.mcp_listing import TOOLS_PER_SERVER_MAX, offered_tools, result_of

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}


def tools(*names: str) -> list[types.Tool]:
    return [
        types.Tool(name=name, description=f"does {name}", input_schema=SCHEMA) for name in names
    ]


def test_tools_are_offered_under_their_server_s_namespace_with_their_schema() -> None:
    offered = offered_tools("fs", tools("read", "write"), (), ())
    assert [(s.name, s.description, s.input_schema) for s in offered.specs] == [
        ("fs__read", "does read", SCHEMA),
        ("fs__write", "does write", SCHEMA),
    ]
    assert offered.names == {"fs__read": "read", "fs__write": "write"}


def test_a_tool_without_a_description_is_described_by_its_title() -> None:
    tool = types.Tool(name="read", title="Read a file", input_schema=SCHEMA)
    assert offered_tools("fs", [tool], (), ()).specs[0].description == "Read a file"


@pytest.mark.parametrize("name", ["files.read", "a/b", "with space", "x" * 61, ""])
def test_a_tool_whose_namespaced_name_does_not_fit_is_skipped_with_a_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    offered = offered_tools("fs", tools(name, "ok"), (), ())
    assert [s.name for s in offered.specs] == ["fs__ok"]
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert f"tool {name!r} not offered: 'fs__{name}' does not fit" in warning.getMessage()


def test_the_longest_name_that_fits_is_offered() -> None:
    assert offered_tools("fs", tools("x" * 60), (), ()).specs[0].name == "fs__" + "x" * 60


@pytest.mark.parametrize(
    ("allow", "deny", "offered"),
    [
        ((), (), ["fs__read", "fs__read_dir", "fs__write", "fs__delete"]),
        (("fs__read*",), (), ["fs__read", "fs__read_dir"]),
        ((), ("fs__write", "fs__del*"), ["fs__read", "fs__read_dir"]),
        (("fs__read*", "fs__write"), ("fs__read_dir",), ["fs__read", "fs__write"]),
        (("fs__*",), ("*",), []),
        (("fs__[rw]*",), (), ["fs__read", "fs__read_dir", "fs__write"]),
        (("read",), (), []),
    ],
    ids=["all", "allow", "deny", "deny-wins", "deny-all", "class", "namespaced-only"],
)
def test_allow_and_deny_are_globs_on_the_namespaced_name_and_deny_wins(
    allow: tuple[str, ...], deny: tuple[str, ...], offered: list[str]
) -> None:
    result = offered_tools("fs", tools("read", "read_dir", "write", "delete"), allow, deny)
    assert [s.name for s in result.specs] == offered
    assert result.withheld == {"fs__read", "fs__read_dir", "fs__write", "fs__delete"} - set(offered)


def test_a_tool_listed_twice_is_offered_once(caplog: pytest.LogCaptureFixture) -> None:
    offered = offered_tools(
        "fs", [*tools("read"), types.Tool(name="read", input_schema={})], (), ()
    )
    assert [(s.name, s.input_schema) for s in offered.specs] == [("fs__read", SCHEMA)]
    assert "listed twice" in caplog.text


def test_a_server_s_tools_past_the_limit_are_not_offered(caplog: pytest.LogCaptureFixture) -> None:
    many = tools(*(f"t{i}" for i in range(TOOLS_PER_SERVER_MAX + 2)))
    assert len(offered_tools("fs", many, (), ()).specs) == TOOLS_PER_SERVER_MAX
    assert caplog.text.count(f"over {TOOLS_PER_SERVER_MAX} tools") == 2


def test_a_result_s_text_blocks_are_joined_and_other_blocks_described() -> None:
    result = types.CallToolResult(
        content=[
            types.TextContent(text="first"),
            types.ImageContent(data="aGk=", mime_type="image/png"),
            types.AudioContent(data="aGVsbG8=", mime_type="audio/wav"),
            types.ResourceLink(name="notes", uri="file:///notes.txt"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///a.txt", text="embedded text")
            ),
            types.EmbeddedResource(
                resource=types.BlobResourceContents(uri="file:///b.bin", blob="AA==")
            ),
        ],
        is_error=True,
    )
    assert result_of(result) == ToolResult(
        "first\n[image: image/png, 4 characters of base64]\n"
        "[audio: audio/wav, 8 characters of base64]\n[resource link: file:///notes.txt]\n"
        "embedded text\n[binary resource: file:///b.bin, unknown type]",
        is_error=True,
    )


def test_a_result_with_only_structured_content_is_given_as_json() -> None:
    result = types.CallToolResult(content=[], structured_content={"sum": 3, "note": "é"})
    assert result_of(result) == ToolResult('{"sum": 3, "note": "é"}', is_error=False)
