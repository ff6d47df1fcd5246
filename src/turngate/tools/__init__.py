"""Tools: what an agent's model may call during a turn, and how those calls are made.

:mod:`turngate.tools.base` is what the agent loop uses (:class:`~turngate.tools.base.Toolbox`,
:class:`~turngate.tools.base.ToolSpec`, :class:`~turngate.tools.base.ToolResult`) and imports no
SDK. :mod:`turngate.tools.mcp` connects an agent's MCP servers (``[[agents.mcp]]``) under the
connection supervisor; import it only where servers are configured: the MCP SDK takes about a
second to import.
"""

from turngate.tools.base import Toolbox, ToolResult, ToolSource, ToolSpec

__all__ = ["ToolResult", "ToolSource", "ToolSpec", "Toolbox"]
