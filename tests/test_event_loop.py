"""gui/event_loop.py: asyncio's ready callbacks batched on one Qt timer keep asyncio's order
and error handling, and Qt's own events still run between batches."""

from __future__ import annotations

import asyncio
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402

from gui import event_loop  # noqa: E402
from gui.app import application  # noqa: E402


def test_call_soon_runs_in_order_skips_cancelled_and_reports_errors_without_stopping() -> None:
    application()
    seen: list[object] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, event_loop.BatchingEventLoop)
        errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        for i in range(5):
            loop.call_soon(seen.append, i)
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(seen.append, "skipped").cancel()
        loop.call_soon(seen.append, 5)
        # A callback that queues another: it runs, after everything queued before it.
        loop.call_soon(lambda: loop.call_soon(seen.append, "later"))
        loop.call_soon(seen.append, 6)
        await asyncio.sleep(0.05)
        assert len(errors) == 1 and isinstance(errors[0]["exception"], ZeroDivisionError)
        with pytest.raises(TypeError):
            loop.call_soon(scenario)  # a coroutine function is not a callback

    event_loop.run(scenario())
    assert seen == [0, 1, 2, 3, 4, 5, 6, "later"]


def test_qt_events_run_between_batches_while_asyncio_keeps_the_loop_busy() -> None:
    application()
    fired: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        spins = 0

        def spin() -> None:  # asyncio work that never lets the queue go empty
            nonlocal spins
            spins += 1
            if not fired:
                loop.call_soon(spin)

        QTimer.singleShot(20, lambda: fired.append(spins))
        loop.call_soon(spin)
        async with asyncio.timeout(5):
            while not fired:
                await asyncio.sleep(0.01)
        assert fired[0] > 10  # the queue really was busy when Qt's timer got its turn

    event_loop.run(scenario())
    assert fired


def test_a_task_woken_after_qt_ended_the_loop_early_still_runs_on_this_loop() -> None:
    """The display going away ends Qt's loop under asyncio; qasync then pumps Qt's events once
    more with no running loop set. A task woken in that pass must still find its loop (it
    used to die with "bound to a different event loop", printed as aiortc's traceback)."""
    app = application()
    loop = event_loop.new_loop(app)
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    got: list[int] = []

    async def reader(queue: asyncio.Queue[int]) -> None:
        got.append(await queue.get())
        got.append(await queue.get())  # a fresh getter future: needs the running loop

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        loop.create_task(reader(queue))
        await asyncio.sleep(0)
        app.exit()  # what Qt does when the X server goes away
        queue.put_nowait(1)  # the reader's wake-up waits for the next batch
        await loop.create_future()

    try:
        with pytest.raises(RuntimeError, match="stopped before"):
            loop.run_until_complete(main())
        assert got == [1]
        assert errors == []
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()
