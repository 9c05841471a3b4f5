"""The window's loop, Qt and asyncio on one thread: qasync's, with ready callbacks run in batches.

qasync turns every `call_soon` into a Qt timer of its own (started, fired, killed, and a
dict entry in Python each time). A call schedules hundreds of those a second (aiortc's
send and receive paths, the capture track's clock, the executor's futures), and the
profile put that bookkeeping at ~10 % of the app's CPU (BENCHMARKS.md). Here `call_soon`
appends to a queue and one Qt timer runs the queue: first in, first out, as asyncio
promises. Callbacks queued while a batch runs wait for the next batch, so Qt's own events
(input, painting) still come between, as they did with one timer per callback. The app's
call has since moved to a loop of its own (gui/engine_thread.py); an engine handed to the
window directly (some tests, the soak benchmark) still runs here.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import qasync
from PySide6.QtWidgets import QApplication


T = TypeVar("T")

# A slow keyring or device query beside others never waits long for a thread.
EXECUTOR_WORKERS = 4


class BatchingEventLoop(qasync.QEventLoop):  # type: ignore[misc, valid-type]
    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self._soon: deque[asyncio.Handle] = deque()
        self._batch_scheduled = False
        self._thread = threading.get_ident()
        # qasync's default executor is ten QThreads with a queue, a Condition and debug
        # logging per job: a plain pool is cheaper.
        self.set_default_executor(ThreadPoolExecutor(EXECUTOR_WORKERS, "sandra-worker"))

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if not callable(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError(f"call_soon needs a plain callable, not {callback!r}")
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, context)
        self._soon.append(handle)
        if not self._batch_scheduled:
            self._batch_scheduled = True
            super().call_soon(self._run_batch)
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any,
                             context: contextvars.Context | None = None) -> asyncio.Handle | None:
        # From the loop's own thread (a future finished in line) a Qt signal is a detour.
        if threading.get_ident() == self._thread:
            return self.call_soon(callback, *args, context=context)
        return super().call_soon_threadsafe(callback, *args, context=context)

    def _run_batch(self) -> None:
        self._batch_scheduled = False
        # qasync's run_until_complete pumps Qt's events once more after run_forever has
        # returned and unset the running loop; a task stepped then would fail with "bound to
        # a different event loop" (seen when the display goes away mid-call). The batch runs
        # on this loop, so say so for its duration.
        outside = asyncio.events._get_running_loop() is None
        if outside:
            asyncio.events._set_running_loop(self)
        try:
            for _ in range(len(self._soon)):  # only what was queued before this batch began
                handle = self._soon.popleft()
                if not handle._cancelled:
                    handle._run()  # asyncio's own: an exception goes to the loop's exception handler
        finally:
            if outside:
                asyncio.events._set_running_loop(None)


def new_loop(app: QApplication | None = None) -> BatchingEventLoop:
    return BatchingEventLoop(app or QApplication.instance())


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the batching Qt loop (the QApplication must exist)."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
