"""MCP servers as tools: a real stdio MCP server (rig/mcp_test_server.py) started, listed, called, killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from base import paths
from core.tools.builtin import Timers, builtin_tools
from core.tools.mcp_bridge import McpBridge, McpServerSettings, tool_name
from core.tools.registry import NAME_PATTERN, Tool, ToolRegistry

SERVER_SCRIPT = str(Path(__file__).resolve().parent.parent / "rig" / "mcp_test_server.py")


def _server(name: str, **overrides: Any) -> McpServerSettings:
    return McpServerSettings(name=name, command=sys.executable, args=[SERVER_SCRIPT], **overrides)


async def _yes(tool: Tool, arguments: Any) -> bool:
    return True


class Problems(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


async def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.add(builtin_tools(Timers(on_ring=lambda label: None)))
    yield registry
    registry.close()


async def test_the_bridge_lists_and_calls_a_server_s_tools(private_home: Path, registry: ToolRegistry) -> None:
    problems = Problems()
    changes: list[int] = []
    registry.on_change = lambda: changes.append(len(registry.names()))
    bridge = McpBridge([_server("test", disabled_tools=["nap"])], registry, problems)
    await bridge.start()
    try:
        assert bridge.running() == ["test"]
        mcp_names = sorted(name for name in registry.names() if name.startswith("test__"))
        assert mcp_names == ["test__add", "test__fail", "test__pid", "test__write_note"]  # nap switched off
        entry = next(e for e in registry.session_tools() if e["name"] == "test__add")
        assert entry["description"] == "[test] Add two integers."
        assert entry["parameters"]["required"] == ["a", "b"]
        assert entry["parameters"]["properties"]["a"]["type"] == "integer"

        assert json.loads(await registry.run("test__add", '{"a": 2, "b": 40}', _yes)) == {"result": 42}
        # The server's own argument validation comes back as an error output.
        output = json.loads(await registry.run("test__add", '{"a": "two", "b": 40}', _yes))
        assert set(output) == {"error"}
        output = json.loads(await registry.run("test__fail", "{}", _yes))
        assert set(output) == {"error"} and "fail" in output["error"]

        # Not read-only: asks first, and does nothing when refused.
        asked: list[str] = []

        async def refuse(tool: Tool, arguments: Any) -> bool:
            asked.append(tool.name)
            return False

        assert registry.get("test__write_note").side_effect and not registry.get("test__add").side_effect
        output = json.loads(await registry.run("test__write_note", '{"text": "hi"}', refuse))
        assert "did not allow" in output["error"] and asked == ["test__write_note"]
        assert await registry.run("test__write_note", '{"text": "hi"}', _yes) == '{"result": "noted: hi"}'
    finally:
        await bridge.stop()
    assert not any(name.startswith("test__") for name in registry.names())
    assert "get_time" in registry.names()
    assert changes == [8, 4]  # four MCP tools in, four out: one announcement each
    assert problems == []
    assert (paths.log_dir() / "mcp-test.log").is_file()  # the server's stderr, for diagnosis


async def test_a_slow_mcp_tool_times_out_and_the_server_stays_usable(private_home: Path, registry: ToolRegistry) -> None:
    problems = Problems()
    bridge = McpBridge([_server("slow")], registry, problems, call_timeout_s=0.5)
    await bridge.start()
    try:
        started = time.monotonic()
        output = json.loads(await registry.run("slow__nap", '{"seconds": 3}', _yes))
        assert "did not finish within 0.5 seconds" in output["error"]
        assert time.monotonic() - started < 1.5
        assert json.loads(await registry.run("slow__add", '{"a": 1, "b": 2}', _yes)) == {"result": 3}
    finally:
        await bridge.stop()
    assert problems == []


async def test_killing_a_server_withdraws_its_tools_and_reports_it(private_home: Path, registry: ToolRegistry) -> None:
    problems = Problems()
    changes: list[list[str]] = []
    registry.on_change = lambda: changes.append(registry.names())
    bridge = McpBridge([_server("doomed"), _server("steady")], registry, problems)
    await bridge.start()
    try:
        assert sorted(bridge.running()) == ["doomed", "steady"]
        pid = json.loads(await registry.run("doomed__pid", "{}", _yes))["result"]
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        await _wait_for(lambda: not any(n.startswith("doomed__") for n in registry.names()))
        await _wait_for(lambda: problems != [])
        assert problems == ["The MCP server “doomed” stopped; its tools are withdrawn. The call goes on."]
        assert changes[-1] == registry.names()  # the engine is told to re-send session.update
        assert bridge.running() == ["steady"]
        output = json.loads(await registry.run("doomed__add", '{"a": 1, "b": 1}', _yes))
        assert "no tool named" in output["error"]
        # Everything else goes on.
        assert json.loads(await registry.run("steady__add", '{"a": 1, "b": 1}', _yes)) == {"result": 2}
        assert json.loads(await registry.run("calculate", '{"expression": "6 * 7"}', _yes))["result"] == 42
    finally:
        await bridge.stop()
    assert len(problems) == 1  # stopping reports nothing more


async def test_servers_that_cannot_start_are_reported_and_the_rest_works(private_home: Path, registry: ToolRegistry) -> None:
    problems = Problems()
    servers = [
        McpServerSettings(name="ghost", command="/nonexistent/mcp-server"),
        McpServerSettings(name="quitter", command=sys.executable, args=["-c", "pass"]),
        _server("off", enabled=False),
        _server("good"),
    ]
    bridge = McpBridge(servers, registry, problems, start_timeout_s=10)
    started = time.monotonic()
    await bridge.start()
    try:
        assert time.monotonic() - started < 10
        assert bridge.running() == ["good"]
        assert sorted(problems) == [
            "The MCP server “ghost” could not start: command not found (/nonexistent/mcp-server). "
            "Check it in Settings → Tools.",
            "The MCP server “quitter” could not start: MCPError: Connection closed. Check it in Settings → Tools.",
        ]
        assert not any(name.startswith(("ghost__", "quitter__", "off__")) for name in registry.names())
        assert json.loads(await registry.run("good__add", '{"a": 3, "b": 4}', _yes)) == {"result": 7}
    finally:
        await bridge.stop()


NAME_TABLE = [
    ("files", "read", "files__read"),
    ("my files", "read.file", None),  # sanitised, with a hash
    ("a" * 40, "b" * 40, None),  # cut to 64, with a hash
]


@pytest.mark.parametrize(("server", "tool", "expected"), NAME_TABLE)
def test_tool_names_follow_openai_s_rules(server: str, tool: str, expected: str | None) -> None:
    name = tool_name(server, tool)
    assert NAME_PATTERN.match(name)
    if expected is not None:
        assert name == expected
    else:
        assert name.startswith(tool_name(server, tool)[:10]) and len(name) <= 64


def test_sanitised_names_stay_distinct() -> None:
    names = {tool_name("s", "a.b"), tool_name("s", "a_b"), tool_name("s", "a b"), tool_name("x" * 70, "t")}
    assert len(names) == 4


@pytest.fixture
def http_server() -> Any:
    """The test server over streamable HTTP on a free loopback port, guarded by a token header."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, SERVER_SCRIPT, "--http", str(port), "s3cret"])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "HTTP MCP server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def test_a_streamable_http_server_with_its_header(
    private_home: Path, registry: ToolRegistry, http_server: str
) -> None:
    problems = Problems()
    servers = [
        McpServerSettings(name="web", transport="http", url=http_server, header_name="X-Test-Token"),
        McpServerSettings(name="nokey", transport="http", url=http_server),
    ]
    bridge = McpBridge(servers, registry, problems, header_values={"web": "s3cret"})
    await bridge.start()
    try:
        assert bridge.running() == ["web"]
        assert json.loads(await registry.run("web__add", '{"a": 20, "b": 22}', _yes)) == {"result": 42}
        assert len(problems) == 1 and problems[0].startswith("The MCP server “nokey” could not start:")
        assert "s3cret" not in problems[0]
    finally:
        await bridge.stop()
    assert not any(name.startswith("web__") for name in registry.names())
