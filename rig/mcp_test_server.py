"""A small MCP server for the tests of core/tools/mcp_bridge.py.

`python rig/mcp_test_server.py` speaks stdio; `... --http PORT TOKEN` serves streamable HTTP
on 127.0.0.1:PORT/mcp and answers 401 to any request without `X-Test-Token: TOKEN`.
Built with the `mcp` package's own server API, so the bridge meets the real protocol,
framing and process handling.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

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


def _serve_http(port: int, token: str) -> None:
    import uvicorn

    inner = app.streamable_http_app()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"x-test-token") != token.encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no token"})
            return
        await inner(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        _serve_http(int(sys.argv[2]), sys.argv[3])
    else:
        app.run()
