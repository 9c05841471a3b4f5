"""The tools a call offers the model, and running one of them safely.

A Tool is a name, a description, a JSON schema for its arguments and a callable (sync or
async) called with those arguments as keywords. ToolRegistry lists them in the shape of
OpenAI Realtime's `session.tools` and runs a call: whatever goes wrong (unknown tool, bad
JSON, a tool that raises or hangs, the user refusing) becomes an error output the model can
read, never an exception into the call engine. Sync tools run on a small thread pool of
their own so a slow one never blocks the event loop nor starves the loop's default executor.

A registry may have a home `loop`: the window's, whose dialogs and notifications its
tools and approvals use. A call engine running on a loop of its own then has each tool
call run on the home loop, and the set of tools may change from there while the engine reads it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Long enough for a web request or an MCP server's work, short enough that the model
# (and the user listening) is not left waiting in silence for long.
DEFAULT_TIMEOUT_S = 10.0
# A prompt nobody answers counts as a refusal, so the model is not left waiting forever.
APPROVAL_TIMEOUT_S = 60.0
# OpenAI's rule for function names.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Hung sync tools keep their thread (Python cannot kill one); a few workers bound the damage.
SYNC_WORKERS = 4

ToolHandler = Callable[..., Any]


class ApprovalPolicy(enum.Enum):
    """When a side-effecting tool needs the user's yes."""

    ASK = "ask"  # every call
    SESSION = "session"  # the first call; a yes then holds until end_session()
    ALWAYS = "always"  # never: the user trusts this tool


# approve(tool, arguments) -> the user's yes or no (a window prompt, or talk's --allow-tools).
Approver = Callable[["Tool", Mapping[str, Any]], Awaitable[bool]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object
    handler: ToolHandler  # called with the arguments as keywords; its result is the output
    side_effect: bool = False  # changes something on the user's machine: ask first
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"tool name {self.name!r} does not match {NAME_PATTERN.pattern}")

    def session_entry(self) -> dict[str, Any]:
        """This tool as one entry of `session.tools` (OpenAI's RealtimeFunctionTool)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


class ToolFailure(Exception):
    """Raised by a tool for an error whose message is meant for the model, as is."""


def error_output(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def encode_output(value: Any) -> str:
    """A tool's result as function_call_output text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class ToolRegistry:
    """The tools of a session; `on_change` fires when the set changes (re-send session.update)."""

    on_change: Callable[[], None] | None = None
    loop: asyncio.AbstractEventLoop | None = None  # where tools and approvals run; None: the caller's
    _tools: dict[str, Tool] = field(default_factory=dict)
    _policies: dict[str, ApprovalPolicy] = field(default_factory=dict)
    _session_grants: set[str] = field(default_factory=set)
    _executor: ThreadPoolExecutor | None = None

    # -- the set of tools -------------------------------------------------
    def add(self, tools: Iterable[Tool]) -> None:
        changed = False
        for tool in tools:
            if tool.name in self._tools:
                log.warning("tool %s declared twice; the later one wins", tool.name)
            self._tools[tool.name] = tool
            changed = True
        if changed:
            self._changed()

    def remove(self, names: Iterable[str]) -> None:
        removed = [name for name in names if self._tools.pop(name, None) is not None]
        if removed:
            self._changed()

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def session_tools(self) -> list[dict[str, Any]]:
        """The `tools` array of session.update (from any thread: list() copies the dict at once)."""
        return [tool.session_entry() for tool in list(self._tools.values())]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- approval ----------------------------------------------------------
    def set_policy(self, name: str, policy: ApprovalPolicy) -> None:
        self._policies[name] = policy

    def policy(self, name: str) -> ApprovalPolicy:
        return self._policies.get(name, ApprovalPolicy.ASK)

    def end_session(self) -> None:
        """Forget the yeses given under ApprovalPolicy.SESSION."""
        self._session_grants.clear()

    async def _approved(self, tool: Tool, arguments: Mapping[str, Any], approve: Approver) -> bool:
        if not tool.side_effect:
            return True
        policy = self.policy(tool.name)
        if policy is ApprovalPolicy.ALWAYS:
            return True
        if policy is ApprovalPolicy.SESSION and tool.name in self._session_grants:
            return True
        try:
            granted = await asyncio.wait_for(approve(tool, arguments), APPROVAL_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.info("no answer to the approval of %s: refused", tool.name)
            return False
        except Exception:
            log.exception("the approval prompt for %s failed: refused", tool.name)
            return False
        if granted and policy is ApprovalPolicy.SESSION:
            self._session_grants.add(tool.name)
        return bool(granted)

    # -- running a call ----------------------------------------------------
    async def run(self, name: str, arguments_json: str, approve: Approver) -> str:
        """Run one function call; the function_call_output text, an `{"error": ...}` on failure."""
        home = self.loop
        here = self._run_here(name, arguments_json, approve)
        if home is None or home is asyncio.get_running_loop():
            return await here
        try:
            handed_over = asyncio.run_coroutine_threadsafe(here, home)
        except RuntimeError:  # the window's loop has closed: the app is quitting
            here.close()
            return error_output(f"{name} cannot run any more: Sandra is closing.")
        return await asyncio.wrap_future(handed_over)

    async def _run_here(self, name: str, arguments_json: str, approve: Approver) -> str:
        tool = self._tools.get(name)
        if tool is None:
            return error_output(f"There is no tool named {name!r}.")
        try:
            arguments = json.loads(arguments_json) if arguments_json.strip() else {}
        except json.JSONDecodeError as exc:
            return error_output(f"The arguments are not valid JSON ({exc.msg}).")
        if not isinstance(arguments, dict):
            return error_output("The arguments must be a JSON object.")
        try:
            inspect.signature(tool.handler).bind(**arguments)
        except TypeError as exc:
            return error_output(f"{name} cannot take these arguments ({exc}).")
        if not await self._approved(tool, arguments, approve):
            return error_output(f"The user did not allow {name} to run.")
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(self._invoke(tool, arguments), tool.timeout_s)
        except asyncio.TimeoutError:
            log.warning("tool %s timed out after %.1f s", name, tool.timeout_s)
            return error_output(f"{name} did not finish within {tool.timeout_s:g} seconds.")
        except ToolFailure as exc:
            return error_output(str(exc))
        except Exception as exc:
            log.exception("tool %s raised", name)
            return error_output(f"{name} failed: {type(exc).__name__}: {exc}")
        log.debug("tool %s done in %.3f s", name, time.monotonic() - started)
        try:
            return encode_output(result)
        except ValueError as exc:  # a circular structure
            return error_output(f"{name} returned something that is not JSON ({exc}).")

    async def _invoke(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(tool.handler):
            return await tool.handler(**arguments)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(SYNC_WORKERS, thread_name_prefix="tool")
        call = functools.partial(tool.handler, **arguments)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Let go of the worker threads (a hung tool's thread ends when its tool does)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
