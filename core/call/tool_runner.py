"""The model's tool calls during a call: run off the event handler, answered in order.

ToolCallFlow (core/tools/protocol.py) says which calls to start and when to ask for
the next response; the ToolRegistry runs each call with its timeout and approval;
this object ties them to the engine's `send` and tells observers what happened, so
a call and its result show in the conversation and the transcript. A tool that
raises or hangs yields an error output; it never breaks the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from core.call.events import ToolActivity
from core.call.protocol import ClientEvent, FunctionCall, ServerEvent, tools_update
from core.tools.protocol import ToolCallFlow
from core.tools.registry import Approver, ToolRegistry

log = logging.getLogger(__name__)


async def refuse_all(_tool: Any, _arguments: Any) -> bool:
    """The approver when nobody can be asked: side-effecting tools are refused."""
    return False


class ToolRunner:
    def __init__(self, registry: ToolRegistry, send: Callable[[ClientEvent], bool],
                 tell: Callable[[ToolActivity], None], approve: Approver = refuse_all) -> None:
        self.registry = registry
        self._send = send
        self._tell = tell
        self._approve = approve
        self._flow = ToolCallFlow()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        registry.on_change = self._tools_changed

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that runs the call, which the registry's own loop may not be."""
        self._loop = loop

    def _tools_changed(self) -> None:
        """An MCP server came or went: the session learns the tools on offer now, sent from
        the call's loop (MCP servers live on the window's)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if self._loop is not None and here is not self._loop:
            try:
                self._loop.call_soon_threadsafe(self._tools_changed)
            except RuntimeError:  # that loop has closed: the call is over, no session to tell
                pass
            return
        self._send(tools_update(self.registry.session_tools()))

    def on_server_event(self, event: ServerEvent) -> None:
        step = self._flow.on_event(event)
        for client_event in step.send:
            self._send(client_event)
        for call in step.start:
            self._tell(ToolActivity(call.call_id, call.name, call.arguments, None))
            task = asyncio.get_running_loop().create_task(self._run(call), name=f"tool {call.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, call: FunctionCall) -> None:
        output = await self.registry.run(call.name, call.arguments, self._approve)
        self._tell(ToolActivity(call.call_id, call.name, call.arguments, output, failed=_is_error(output)))
        for event in self._flow.on_output(call.call_id, output):
            self._send(event)

    def reset(self) -> None:
        """A new connection: calls of the old session cannot be answered any more."""
        for task in self._tasks:
            task.cancel()
        self._flow = ToolCallFlow()

    async def close(self) -> None:
        self.reset()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.registry.close()


def _is_error(output: str) -> bool:
    try:
        parsed = json.loads(output)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "error" in parsed
