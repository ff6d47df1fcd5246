"""An MCP server's tools as one agent sees them, and a tool's answer as the model reads it.

Naming: the server's tool ``read`` is offered as ``<server>__read``, so that two servers'
tools never collide and a call finds its server by the prefix. Model APIs accept tool names
matching ``^[a-zA-Z0-9_-]{1,64}$`` only; a tool whose namespaced name does not fit (an MCP name
with a dot or a slash, a name too long) is not offered, with a WARNING naming it. Renaming it
instead could make two tools one; the server's author can rename it.

Filtering: ``allow`` and ``deny`` are glob patterns on the namespaced name. A tool is offered
when ``allow`` is empty or one of its patterns matches, and no ``deny`` pattern does (deny
wins). A tool that is not offered cannot be called either.

Results: text blocks are joined by line breaks; images, audio and binary resources are
described in brackets (the model cannot see them through a text result); a result with only
structured content is given as its JSON.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mcp import types

from turngate.tools.base import ToolResult, ToolSpec

log = logging.getLogger("turngate.tools")

MODEL_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What the model APIs (OpenAI, Anthropic) accept as a tool name."""
SEPARATOR = "__"
TOOLS_PER_SERVER_MAX = 1000
"""Tools offered from one server at most; the rest are not offered, with a WARNING."""


@dataclass(frozen=True, slots=True)
class Offered:
    """A server's tools as one agent sees them."""

    specs: tuple[ToolSpec, ...]
    """The tools offered, in the server's order, under their namespaced names."""
    names: dict[str, str]
    """Namespaced name -> the server's own name, for the tools offered."""
    withheld: frozenset[str]
    """Namespaced names the server lists that ``allow`` / ``deny`` keep from this agent."""


def offered_tools(
    server: str,
    tools: Sequence[types.Tool],
    allow: Sequence[str],
    deny: Sequence[str],
    *,
    label: str | None = None,
) -> Offered:
    """The tools of ``server``'s listing this agent is offered; ``label`` names the server in
    the log (default: ``server``)."""
    label = label or server
    specs: list[ToolSpec] = []
    names: dict[str, str] = {}
    withheld: set[str] = set()
    for tool in tools:
        name = f"{server}{SEPARATOR}{tool.name}"
        if not tool.name or not MODEL_TOOL_NAME.match(name):
            log.warning(
                "MCP server %s: tool %r not offered: %r does not fit %s (what model APIs accept)",
                label,
                tool.name,
                name,
                MODEL_TOOL_NAME.pattern,
                extra={"event": "tool_skipped"},
            )
        elif name in names or name in withheld:
            log.warning("MCP server %s: tool %r listed twice; the first kept", label, tool.name)
        elif not _allowed(name, allow, deny):
            withheld.add(name)
        elif len(specs) >= TOOLS_PER_SERVER_MAX:
            log.warning(
                "MCP server %s: tool %r not offered: over %d tools",
                label,
                tool.name,
                TOOLS_PER_SERVER_MAX,
                extra={"event": "tool_skipped"},
            )
        else:
            names[name] = tool.name
            specs.append(ToolSpec(name, tool.description or tool.title or "", tool.input_schema))
    return Offered(tuple(specs), names, frozenset(withheld))


def _allowed(name: str, allow: Sequence[str], deny: Sequence[str]) -> bool:
    if any(fnmatchcase(name, pattern) for pattern in deny):
        return False
    return not allow or any(fnmatchcase(name, pattern) for pattern in allow)


def result_of(result: types.CallToolResult) -> ToolResult:
    """A tool's answer as the model reads it."""
    parts = [_text_of(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolResult("\n".join(parts), is_error=result.is_error)


def _text_of(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {len(block.data)} characters of base64]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}]"
    resource = block.resource
    if isinstance(resource, types.TextResourceContents):
        return resource.text
    return f"[binary resource: {resource.uri}, {resource.mime_type or 'unknown type'}]"
