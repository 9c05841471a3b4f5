"""The window's handle on the call engine.

Creates the engine lazily (core.call.engine pulls in aiortc and av, ~0.5 s, so it is
imported in a worker thread after the window has painted), runs the engine's
coroutines as tracked tasks so none is left pending at exit, and turns any
unexpected exception into a readable Problem instead of a traceback. With tools
(CallTools: one registry shared by every engine of the window and its MCP bridge),
the MCP servers in Settings start when a call starts and stop when it ends; their
problems reach the banner like the engine's.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import QObject, Signal

import dataclasses

from base.errors import ConfigError
from core.call.events import EngineEvent, Problem
from core.call.state import CallState, Phase
from core.config import Secrets, Settings, SettingsChange, mcp_header_values, persist, read_secrets
from core.tools.registry import ApprovalPolicy, Approver, ToolRegistry
from core.provider_catalog import kind as provider_kind
from gui.engine_bridge import EngineBridge
from gui.engine_thread import ThreadedEngine

log = logging.getLogger(__name__)

# How long closing waits for the engine's coroutines before cancelling them.
_CLOSE_WAIT_S = 5.0


class Engine(Protocol):
    """What the window uses of core.call.engine.CallEngine."""

    @property
    def state(self) -> CallState: ...
    @property
    def provider_label(self) -> str: ...
    @property
    def model(self) -> str: ...
    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]: ...
    async def start(self) -> None: ...
    async def hang_up(self) -> None: ...
    def press(self) -> None: ...
    def release(self) -> None: ...
    def send_text(self, text: str) -> None: ...
    async def set_hands_free(self, on: bool) -> None: ...
    async def set_devices(self, input_device: str | None, output_device: str | None) -> None: ...
    async def close(self) -> None: ...


if TYPE_CHECKING:
    from core.tools.mcp_bridge import McpBridge

SeedHistory = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class CallTools:
    """What the model may call: the registry (built-in tools, then MCP servers') and who approves."""

    registry: ToolRegistry
    approve: Approver

    def apply_approvals(self, settings: Settings) -> None:
        """The policies the user saved ("always allow") onto the registry."""
        for name, policy in settings.tool_approvals:
            self.registry.set_policy(name, ApprovalPolicy(policy))


async def default_engine_factory(settings: Settings, secrets: Secrets, seed_history: SeedHistory = (),
                                 tools: CallTools | None = None) -> Engine:
    """The engine, on a loop of its own (gui/engine_thread.py); `seed_history` (a past
    conversation) is what it re-seeds the server with."""
    loop = asyncio.get_running_loop()
    module = await loop.run_in_executor(None, importlib.import_module, "core.call.engine")
    extra: dict[str, Any] = {"tools": tools.registry, "approve": tools.approve} if tools is not None else {}
    return await ThreadedEngine.create(
        lambda: module.CallEngine(settings, secrets=secrets, history=seed_history, **extra))


class KeyMissing(Exception):
    """The provider needs an API key and none is stored: the window asks for one."""


class CallSession(QObject):
    engine_ready = Signal(object)  # the engine, once created
    key_needed = Signal(str)  # provider id: no key stored, ask the user (first run)

    def __init__(
        self,
        settings: Settings,
        bridge: EngineBridge,
        *,
        engine: Engine | None = None,
        factory: Callable[..., Awaitable[Engine]] = default_engine_factory,
        read: Callable[[str], Secrets] = read_secrets,
        write: Callable[[SettingsChange], None] = persist,
        tools: CallTools | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.bridge = bridge
        self._factory = factory
        self._read_secrets = read
        self._persist = write
        # A key the user chose to keep for this session only (no keyring): never written.
        self._session_keys: dict[str, str] = {}
        self._seed: SeedHistory = ()  # a past conversation the next engine continues
        self._engine: Engine | None = None
        self._creating: asyncio.Future[Engine] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tools = tools  # None: the factory is called without tools (no tool is offered)
        self._mcp: McpBridge | None = None  # the MCP servers of the current call
        bridge.state_changed.connect(self._on_state)
        if engine is not None:
            self._adopt(engine)

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def in_call(self) -> bool:
        return self._engine is not None and self._engine.state.active

    def _adopt(self, engine: Engine) -> None:
        self._engine = engine
        self.bridge.attach(engine.subscribe)
        self.engine_ready.emit(engine)

    async def ensure_engine(self) -> Engine:
        if self._engine is None:
            if self._creating is None:
                self._creating = asyncio.ensure_future(self._create())
            creating = self._creating
            try:
                # Shielded: a cancelled caller must not cancel a creation others wait for.
                engine = await asyncio.shield(creating)
            finally:
                if self._creating is creating and creating.done():
                    self._creating = None
            if self._engine is None:
                self._adopt(engine)
        assert self._engine is not None
        return self._engine

    async def _create(self) -> Engine:
        settings = self.settings
        loop = asyncio.get_running_loop()
        secrets = await loop.run_in_executor(None, self._read_secrets, settings.provider)
        if settings.provider in self._session_keys:
            secrets = dataclasses.replace(secrets, api_key=self._session_keys[settings.provider])
        if provider_kind(settings.provider).needs_key and not secrets.api_key:
            raise KeyMissing(settings.provider)
        seed, self._seed = self._seed, ()
        if self.tools is None:
            return await self._factory(settings, secrets, seed)
        self.tools.apply_approvals(settings)
        self.tools.registry.loop = loop  # their dialogs and notifications are the window's, wherever the call runs
        return await self._factory(settings, secrets, seed, self.tools)

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        """Run a coroutine on the loop, tracked so close() can wait for it."""
        task = asyncio.ensure_future(self._guard(coro, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Awaitable[Any], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except KeyMissing as exc:
            self.key_needed.emit(str(exc))
        except ConfigError as exc:
            self.bridge.feed(Problem(str(exc), fatal=False))
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged with detail
            log.exception("could not %s", what)
            self.bridge.feed(Problem(f"Could not {what}: {exc}", fatal=False))

    # Actions the window triggers; each is safe to call at any time.
    def connect_call(self) -> None:
        self.spawn(self._connect(), "start the call")

    async def _connect(self) -> None:
        engine = await self.ensure_engine()
        await engine.start()
        # After the start: the call does not wait for slow servers; their tools join by session.update.
        await self._start_mcp()

    async def _start_mcp(self) -> None:
        servers = tuple(server for server in self.settings.mcp_servers if server.enabled)
        if self.tools is None or not servers or self._mcp is not None:
            return
        # On the loop's thread, though it takes ~1.3 s once: importing the `mcp` package on a worker
        # thread while Qt runs crashed the process (measured in tests/test_mcp_call.py after a window test).
        module = importlib.import_module("core.tools.mcp_bridge")
        headers = await asyncio.get_running_loop().run_in_executor(None, mcp_header_values, servers)
        if self._mcp is not None:  # another connect got here first
            return
        self._mcp = module.McpBridge(servers, self.tools.registry, self._mcp_problem, header_values=headers)
        await self._mcp.start()

    def _on_state(self, state: CallState) -> None:
        if state.phase is Phase.ENDED and self._mcp is not None:  # a call that ended by itself too
            self.spawn(self._stop_mcp(), "stop the MCP servers")

    def _mcp_problem(self, message: str) -> None:
        self.bridge.feed(Problem(message, fatal=False))

    async def _stop_mcp(self) -> None:
        mcp, self._mcp = self._mcp, None
        if mcp is not None:
            await mcp.stop()

    def hang_up(self) -> None:
        if self._engine is not None:  # the call's end (ENDED) stops the MCP servers
            self.spawn(self._engine.hang_up(), "hang up")

    def send_text(self, text: str) -> bool:
        """A typed turn; False (nothing sent) when no call is connected to take it."""
        if self._engine is None or self._engine.state.phase is not Phase.CONNECTED or not text.strip():
            return False
        self._engine.send_text(text)
        return True

    def remember_approval(self, tool: str, policy: str) -> None:
        """The user's "always allow" (or a policy chosen in Settings): kept for this run and saved."""
        approvals = dict(self.settings.tool_approvals)
        approvals[tool] = policy
        self._keep(dataclasses.replace(self.settings, tool_approvals=tuple(sorted(approvals.items()))))
        if self.tools is not None:
            self.tools.registry.set_policy(tool, ApprovalPolicy(policy))

    def press(self) -> None:
        if self._engine is not None:
            self._engine.press()

    def release(self) -> None:
        if self._engine is not None:
            self._engine.release()

    def set_hands_free(self, on: bool) -> None:
        self._keep(dataclasses.replace(self.settings, hands_free=on))
        if self._engine is not None:
            self.spawn(self._engine.set_hands_free(on), "switch hands-free")

    def set_devices(self, input_device: str | None, output_device: str | None) -> None:
        self._keep(dataclasses.replace(self.settings, input_device=input_device, output_device=output_device))
        if self._engine is not None:
            self.spawn(self._engine.set_devices(input_device, output_device), "switch sound devices")

    def _keep(self, settings: Settings) -> None:
        """A choice made in the window itself: remembered at once, saved off the window's thread."""
        self.settings = settings
        self.spawn(self._save(SettingsChange(settings)), "save the settings")

    async def _save(self, change: SettingsChange) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._persist, change)

    async def apply(self, change: SettingsChange) -> None:
        """New settings from the dialog: saved (keyring first), then the engine is rebuilt from
        them and a live call redialled. Raises ConfigError (nothing changed) if they cannot be saved."""
        await self._save(change)
        reconnect = self.in_call()
        self.settings = change.settings
        old, self._engine = self._engine, None
        await self._swap(old, reconnect)

    def continue_conversation(self, messages: SeedHistory) -> None:
        """A new call re-seeded from a past conversation (the current one is hung up)."""
        self.spawn(self._continue(list(messages)), "continue the conversation")

    async def _continue(self, messages: SeedHistory) -> None:
        self._seed = messages
        old, self._engine = self._engine, None
        await self._swap(old, reconnect=True)

    def use_key_for_session(self, provider: str, key: str) -> None:
        """No keyring: keep the key in memory for this run only, then connect."""
        self._session_keys[provider] = key
        self.connect_call()

    async def _swap(self, old: Engine | None, reconnect: bool) -> None:
        await self._stop_mcp()  # restarted with the call, from the settings as they are now
        if old is not None:
            self.bridge.detach()
            await old.close()
        if reconnect:
            await self._connect()

    async def close(self) -> None:
        """Hang up, stop the engine (and its local server), leave no task pending."""
        if self._creating is not None:
            await self.ensure_engine()
        await self._stop_mcp()
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                await engine.close()
            except Exception:  # noqa: BLE001 - exiting anyway; the log keeps the detail
                log.exception("closing the engine failed")
        self.bridge.detach()
        if self._tasks:
            # Closing the engine ends its coroutines; give them a moment, then cancel the rest.
            _, pending = await asyncio.wait(list(self._tasks), timeout=_CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
