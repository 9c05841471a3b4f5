"""MCP servers the user configured, offered to the model as function tools.

Each server runs in a task of its own for the length of a call: started with the official
`mcp` package (stdio: a child process; streamable HTTP: a URL), listed, and its tools put in
the ToolRegistry as `server__tool`. Calls go to the server's ClientSession. The transport's
read stream is relayed through one of ours, so the moment a server process dies (its stdout
ends) we know, report it through `on_problem`, and withdraw its tools; the registry's
on_change then lets the engine re-send session.update. Nothing else is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import TextContent
from mcp_types import Tool as McpTool

from base import paths
from base.logs import register_secret
from core.config import McpServerSettings
from core.tools.registry import NAME_PATTERN, Tool, ToolFailure, ToolRegistry

log = logging.getLogger(__name__)

# Starting a server (a child process, an interpreter, a handshake) and listing its tools.
START_TIMEOUT_S = 20.0
# MCP tools do heavier work than the built-ins (files, network); still bounded.
CALL_TIMEOUT_S = 30.0
SEPARATOR = "__"
MAX_NAME = 64


def _sanitize(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text) or "_"


def tool_name(server: str, tool: str) -> str:
    """`server__tool` within OpenAI's name rules; a hash keeps cut-down names apart."""
    name = f"{_sanitize(server)}{SEPARATOR}{_sanitize(tool)}"
    if len(name) <= MAX_NAME and name == f"{server}{SEPARATOR}{tool}":
        return name
    digest = hashlib.sha1(f"{server}\0{tool}".encode()).hexdigest()[:8]
    name = f"{name[: MAX_NAME - 9]}_{digest}"
    assert NAME_PATTERN.match(name)
    return name


def result_output(result: Any) -> Any:
    """An MCP CallToolResult as the output for the model; ToolFailure if the tool said it failed."""
    texts = [block.text if isinstance(block, TextContent) else f"[{block.type} omitted]" for block in result.content]
    if result.is_error:
        raise ToolFailure("\n".join(texts) or "The MCP tool failed without saying why.")
    if result.structured_content is not None:
        return result.structured_content
    return "\n".join(texts)


@dataclass
class _ServerLink:
    settings: McpServerSettings
    header_value: str
    registry: ToolRegistry
    on_problem: Callable[[str], None]
    start_timeout_s: float
    call_timeout_s: float
    session: ClientSession | None = None
    tool_names: list[str] = field(default_factory=list)
    up: bool = False  # initialised and listed at least once
    started: asyncio.Event = field(default_factory=asyncio.Event)  # up, or failed
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # stop() asked
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # the transport ended
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    def _transport(self, errlog: IO[str]) -> contextlib.AbstractAsyncContextManager[Any]:
        s = self.settings
        if s.transport == "stdio":
            params = StdioServerParameters(command=s.command, args=list(s.args), env=dict(s.env) or None)
            return stdio_client(params, errlog=errlog)
        if s.transport == "http":
            headers = {s.header_name: self.header_value} if s.header_name and self.header_value else None
            return _http_transport(s.url, headers)
        raise ValueError(f"unknown transport {s.transport!r} (stdio or http)")

    async def serve(self) -> None:
        problem = "it exited"
        try:
            with open(paths.log_dir() / f"mcp-{_sanitize(self.name)}.log", "a", encoding="utf-8") as errlog:
                await self._serve(errlog)
        except Exception as exc:  # an ExceptionGroup from anyio's task groups too
            problem = _reason(exc)
            log.warning("MCP server %s: %s", self.name, problem)
        finally:
            self.session = None
            self.started.set()
            self.registry.remove(self.tool_names)
            self.tool_names = []
        if self.closing.is_set():
            return
        if not self.up:
            self.on_problem(f"The MCP server “{self.name}” could not start: {problem}. Check it in Settings → Tools.")
        else:
            self.on_problem(f"The MCP server “{self.name}” stopped; its tools are withdrawn. The call goes on.")

    async def _serve(self, errlog: IO[str]) -> None:
        async with self._transport(errlog) as (read, write):
            relay_send, relay_recv = anyio.create_memory_object_stream[Any](0)

            async def relay() -> None:
                async with relay_send:
                    async for message in read:
                        await relay_send.send(message)
                self.lost.set()

            async with anyio.create_task_group() as relays:
                relays.start_soon(relay)
                async with ClientSession(relay_recv, write) as session:
                    with anyio.fail_after(self.start_timeout_s):
                        await session.initialize()
                        tools = await _list_all(session)
                    self.session = session
                    self._offer(tools)
                    self.up = True
                    self.started.set()
                    log.info("MCP server %s up with %d tools", self.name, len(self.tool_names))
                    await _first_of(self.closing, self.lost)
                relays.cancel_scope.cancel()

    def _offer(self, tools: Sequence[McpTool]) -> None:
        offered = []
        for mcp_tool in tools:
            if mcp_tool.name in self.settings.disabled_tools:
                continue
            read_only = mcp_tool.annotations is not None and mcp_tool.annotations.read_only_hint is True
            offered.append(
                Tool(
                    name=tool_name(self.name, mcp_tool.name),
                    description=f"[{self.name}] {mcp_tool.description or mcp_tool.name}",
                    parameters=mcp_tool.input_schema,
                    handler=self._handler(mcp_tool.name),
                    # Hints from a server are all we have; anything not read-only asks first.
                    side_effect=not read_only,
                    timeout_s=self.call_timeout_s,
                )
            )
        self.tool_names = [tool.name for tool in offered]
        self.registry.add(offered)

    def _handler(self, mcp_name: str) -> Callable[..., Any]:
        async def call(**arguments: Any) -> Any:
            session = self.session
            if session is None:
                raise ToolFailure(f"The MCP server “{self.name}” is not running.")
            return result_output(await session.call_tool(mcp_name, arguments))

        return call


def _reason(exc: BaseException) -> str:
    """The innermost useful message of an exception (anyio wraps them in groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, FileNotFoundError):
        return f"command not found ({exc.filename or exc})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _list_all(session: ClientSession) -> list[McpTool]:
    from mcp_types import PaginatedRequestParams

    result = await session.list_tools()
    tools = list(result.tools)
    while result.next_cursor:
        result = await session.list_tools(params=PaginatedRequestParams(cursor=result.next_cursor))
        tools.extend(result.tools)
    return tools


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str] | None) -> AsyncIterator[Any]:
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            yield streams


class McpBridge:
    """The configured MCP servers for one call: start(), the registry fills, stop()."""

    def __init__(
        self,
        servers: Sequence[McpServerSettings],
        registry: ToolRegistry,
        on_problem: Callable[[str], None],
        *,
        header_values: Mapping[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        values = header_values or {}
        for value in values.values():
            register_secret(value)
        self._links = [
            _ServerLink(
                settings=server,
                header_value=values.get(server.name, ""),
                registry=registry,
                on_problem=on_problem,
                start_timeout_s=start_timeout_s,
                call_timeout_s=call_timeout_s,
            )
            for server in servers
            if server.enabled
        ]

    async def start(self) -> None:
        """Start every enabled server; returns once each is up or has failed (and been reported)."""
        for link in self._links:
            link.task = asyncio.create_task(link.serve(), name=f"mcp-{link.name}")
        await asyncio.gather(*(link.started.wait() for link in self._links))

    def running(self) -> list[str]:
        return [link.name for link in self._links if link.session is not None]

    async def stop(self) -> None:
        """Stop every server; their tools leave the registry."""
        for link in self._links:
            link.closing.set()
        tasks = [link.task for link in self._links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=START_TIMEOUT_S)
