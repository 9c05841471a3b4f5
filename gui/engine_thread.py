"""The call engine on an asyncio loop of its own thread, so the window's loop carries none of it.

On the window's loop (qasync) every asyncio callback, timer and socket read of the call
became a Qt event with a Python call into it: the audio path's hundreds a second cost
about 3 points of a core more than the same call on a plain loop (bench/app_cpu.py,
BENCHMARKS.md). On its own thread the call also keeps time while the window is busy
(a long paint, a modal dialog).

`ThreadedEngine` is what the window holds (gui.call_session.Engine): its coroutines run on
the engine's loop and are awaited from the window's; press, release and typed turns are
handed over as they are; the engine's events reach the window's observers on the window's
loop, in order, and none after unsubscribing. Tools still run on the window's loop
(ToolRegistry.loop), where their dialogs and notifications live.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from core.call.events import EngineEvent
from core.call.state import CallState

if TYPE_CHECKING:
    from core.call.engine import CallEngine
    from core.history import BoundedHistory
    from core.telemetry import LatencyTracker

log = logging.getLogger(__name__)

T = TypeVar("T")

# Closing waits this long for the loop's thread to end (the engine has closed by then).
JOIN_TIMEOUT_S = 5.0


class EngineLoop:
    """A daemon thread running one asyncio loop until stop()."""

    def __init__(self, window_loop: asyncio.AbstractEventLoop) -> None:
        self.loop = asyncio.new_event_loop()
        # Nothing the call leaves uncaught is lost: the window's handler logs and shows it.
        self.loop.set_exception_handler(
            lambda _loop, context: _post(window_loop, window_loop.call_exception_handler, context))
        self._thread = threading.Thread(target=self._run, name="sandra-engine", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await, from another loop, a coroutine run on this one (cancelling it cancels both)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call back on this loop, from any thread."""
        _post(self.loop, callback, *args)

    async def stop(self) -> None:
        _post(self.loop, self.loop.stop)
        await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("the call's loop did not stop within %.0f s", JOIN_TIMEOUT_S)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # that loop has closed: the app is quitting, nobody is left to tell
        log.debug("dropped %r: its loop has closed", callback)


class ThreadedEngine:
    """A CallEngine on an EngineLoop, driven from the window's loop."""

    def __init__(self, engine: CallEngine, engine_loop: EngineLoop, window_loop: asyncio.AbstractEventLoop) -> None:
        self.call_engine = engine  # for reads that copy (history, telemetry) and for tests
        self._engine_loop = engine_loop
        self._window_loop = window_loop

    @classmethod
    async def create(cls, make: Callable[[], CallEngine]) -> ThreadedEngine:
        """The engine made on its own loop (its parts take that loop as theirs)."""
        window_loop = asyncio.get_running_loop()
        engine_loop = EngineLoop(window_loop)

        async def made() -> CallEngine:
            return make()

        try:
            engine = await engine_loop.run(made())
        except BaseException:
            await engine_loop.stop()
            raise
        return cls(engine, engine_loop, window_loop)

    @property
    def state(self) -> CallState:
        return self.call_engine.state

    @property
    def provider_label(self) -> str:
        return self.call_engine.provider_label

    @property
    def model(self) -> str:
        return self.call_engine.model

    @property
    def history(self) -> BoundedHistory:
        return self.call_engine.history

    @property
    def telemetry(self) -> LatencyTracker:
        return self.call_engine.telemetry

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """observer is called on the window's loop; never after the returned unsubscribe."""
        live = True

        def deliver(event: EngineEvent) -> None:
            if live:
                observer(event)

        unsubscribe = self.call_engine.subscribe(lambda event: _post(self._window_loop, deliver, event))

        def stop() -> None:
            nonlocal live
            live = False
            unsubscribe()

        return stop

    async def start(self) -> None:
        await self._engine_loop.run(self.call_engine.start())

    async def hang_up(self) -> None:
        await self._engine_loop.run(self.call_engine.hang_up())

    async def set_hands_free(self, on: bool) -> None:
        await self._engine_loop.run(self.call_engine.set_hands_free(on))

    async def set_devices(self, input_device: str | None, output_device: str | None) -> None:
        await self._engine_loop.run(self.call_engine.set_devices(input_device, output_device))

    async def close(self) -> None:
        try:
            await self._engine_loop.run(self.call_engine.close())
        finally:
            await self._engine_loop.stop()

    def press(self) -> None:
        self._engine_loop.call(self.call_engine.press)

    def release(self) -> None:
        self._engine_loop.call(self.call_engine.release)

    def send_text(self, text: str) -> None:
        self._engine_loop.call(self.call_engine.send_text, text)
