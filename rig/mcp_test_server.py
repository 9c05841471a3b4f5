"""A small MCP server (stdio) for the tests of core/tools/mcp_bridge.py.

Run as `python -m rig.mcp_test_server`; built with the `mcp` package's own server API,
so the bridge meets the real protocol, framing and process handling.
"""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

app = MCPServer("sandra-test")


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    """The server's process id (the tests kill it by this)."""
    return os.getpid()


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def nap(seconds: float) -> str:
    """Sleep, then answer: a tool slower than the caller's timeout."""
    time.sleep(seconds)
    return "awake"


@app.tool()
def write_note(text: str) -> str:
    """A tool that is not read-only: the bridge must ask before calling it."""
    return f"noted: {text}"


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def fail() -> str:
    """Always fails."""
    raise ValueError("the test tool failed on purpose")


if __name__ == "__main__":
    app.run()
