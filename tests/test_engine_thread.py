"""The call engine on a loop of its own (gui/engine_thread.py), and the tools that stay on the
window's loop (ToolRegistry.loop, ToolRunner.bind): who runs on which thread, in what order."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest

from core.call.events import InputLevel, Observers, StateChanged
from core.call.protocol import ClientEvent
from core.call.state import CallState, Phase
from core.call.tool_runner import ToolRunner
from core.tools.registry import Tool, ToolRegistry
from gui.engine_thread import ThreadedEngine


class FakeEngine:
    """Records the thread of every call; emits what a test asks, on its own loop."""

    def __init__(self) -> None:
        self.made_on = threading.get_ident()
        self.calls: list[tuple[str, int]] = []
        self.observers = Observers(logging.getLogger(__name__))
        self.state = CallState(Phase.IDLE)
        self.provider_label, self.model = "Fake", "fake-model"
        self.history = self.telemetry = None
        self.started = asyncio.Event()
        self.start_error: Exception | None = None
        self.closed = False

    def _note(self, what: str) -> None:
        self.calls.append((what, threading.get_ident()))

    def subscribe(self, observer: Any) -> Any:
        return self.observers.subscribe(observer)

    async def start(self) -> None:
        self._note("start")
        if self.start_error is not None:
            raise self.start_error
        self.started.set()

    async def hang_up(self) -> None:
        self._note("hang_up")
        await asyncio.sleep(3600)  # until cancelled

    async def set_hands_free(self, on: bool) -> None:
        self._note(f"hands_free {on}")

    async def set_devices(self, input_device: str | None, output_device: str | None) -> None:
        self._note(f"devices {input_device} {output_device}")

    async def close(self) -> None:
        self._note("close")
        self.closed = True

    def press(self) -> None:
        self._note("press")

    def release(self) -> None:
        self._note("release")

    def send_text(self, text: str) -> None:
        self._note(f"text {text}")


async def threaded() -> tuple[ThreadedEngine, FakeEngine]:
    engine = await ThreadedEngine.create(FakeEngine)
    fake = engine.call_engine
    assert isinstance(fake, FakeEngine)
    return engine, fake


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_the_engine_is_made_and_driven_on_its_own_thread_in_order() -> None:
    engine, fake = await threaded()
    here = threading.get_ident()
    try:
        assert fake.made_on != here
        await engine.start()
        engine.press()
        engine.release()
        engine.send_text("hello")
        await engine.set_hands_free(True)
        await engine.set_devices("mic", None)
        assert (engine.provider_label, engine.model, engine.state) == ("Fake", "fake-model", CallState(Phase.IDLE))
    finally:
        await engine.close()
    assert [what for what, _ in fake.calls] == ["start", "press", "release", "text hello", "hands_free True",
                                                "devices mic None", "close"]
    assert {thread for _, thread in fake.calls} == {fake.made_on}
    assert not any(t.name == "sandra-engine" and t.is_alive() for t in threading.enumerate())


async def test_an_engine_error_reaches_the_caller_and_cancelling_the_caller_cancels_the_engine() -> None:
    engine, fake = await threaded()
    try:
        fake.start_error = RuntimeError("no such device")
        with pytest.raises(RuntimeError, match="no such device"):
            await engine.start()
        hanging = asyncio.ensure_future(engine.hang_up())
        await until(lambda: any(what == "hang_up" for what, _ in fake.calls))
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
        # the engine's side was cancelled too: nothing of it is left on its loop
        await until(lambda: not asyncio.all_tasks(engine._engine_loop.loop))
    finally:
        await engine.close()
    assert fake.closed


async def test_events_reach_observers_on_the_windows_loop_in_order_and_none_after_unsubscribing() -> None:
    engine, fake = await threaded()
    here = threading.get_ident()
    heard: list[tuple[Any, int]] = []
    try:
        stop = engine.subscribe(lambda event: heard.append((event, threading.get_ident())))
        levels = [InputLevel(float(-n)) for n in range(50)]
        await engine._engine_loop.run(_emit_all(fake, levels))
        await until(lambda: len(heard) == len(levels))
        assert [event for event, _ in heard] == levels
        assert {thread for _, thread in heard} == {here}
        # emitted, then unsubscribed before the window's loop got to it: not delivered
        heard.clear()
        emitted = threading.Event()
        engine._engine_loop.call(lambda: (fake.observers.emit(StateChanged(CallState(Phase.IDLE))), emitted.set()))
        assert emitted.wait(5)  # the window's loop does not run meanwhile: the delivery waits in it
        stop()
        await asyncio.sleep(0.05)
        assert heard == []
    finally:
        await engine.close()


async def _emit_all(fake: FakeEngine, events: list[Any]) -> None:
    for event in events:
        fake.observers.emit(event)


async def test_an_uncaught_error_on_the_engines_loop_goes_to_the_windows_handler() -> None:
    engine, _fake = await threaded()
    seen: list[dict[str, Any]] = []
    window = asyncio.get_running_loop()
    window.set_exception_handler(lambda _loop, context: seen.append((context, threading.get_ident())))
    try:
        def fail() -> None:
            raise ValueError("a bug in a callback")

        engine._engine_loop.call(fail)
        await until(lambda: bool(seen))
        context, thread = seen[0]
        assert isinstance(context["exception"], ValueError) and thread == threading.get_ident()
    finally:
        window.set_exception_handler(None)
        await engine.close()


def _other_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def test_a_tool_runs_on_its_registrys_loop_and_so_does_its_approval() -> None:
    ran: list[str] = []

    async def lamp(on: bool) -> str:
        ran.append(threading.current_thread().name)
        return "on" if on else "off"

    home = asyncio.get_running_loop()
    registry = ToolRegistry(loop=home)
    registry.add([Tool("lamp", "Switch the lamp.", {"type": "object", "properties": {"on": {"type": "boolean"}}},
                       lamp, side_effect=True)])
    approved_on: list[str] = []

    async def approve(_tool: Any, _arguments: Any) -> bool:
        approved_on.append(threading.current_thread().name)
        return True

    loop, thread = _other_loop()
    try:
        output = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            registry.run("lamp", json.dumps({"on": True}), approve), loop))
    finally:
        _stop(loop, thread)
    assert output == "on"
    assert ran == approved_on == [threading.current_thread().name]


async def test_a_tool_call_after_its_registrys_loop_closed_is_an_error_output() -> None:
    gone = asyncio.new_event_loop()
    gone.close()
    registry = ToolRegistry(loop=gone)
    registry.add([Tool("noop", "Nothing.", {"type": "object", "properties": {}}, lambda: None)])
    output = await registry.run("noop", "{}", lambda _t, _a: asyncio.sleep(0, True))
    assert "closing" in json.loads(output)["error"]


async def test_tools_changed_on_another_loop_are_sent_from_the_calls_loop() -> None:
    registry = ToolRegistry()
    sent: list[tuple[ClientEvent, int]] = []
    runner = ToolRunner(registry, lambda event: sent.append((event, threading.get_ident())) or True,
                        lambda _activity: None)
    runner.bind(asyncio.get_running_loop())
    loop, thread = _other_loop()
    try:
        added = asyncio.run_coroutine_threadsafe(_add_tool(registry), loop)
        await asyncio.wrap_future(added)
        await until(lambda: bool(sent))
    finally:
        _stop(loop, thread)
    event, sent_on = sent[0]
    assert sent_on == threading.get_ident()
    assert [tool["name"] for tool in event.to_json()["session"]["tools"]] == ["remote"]


async def _add_tool(registry: ToolRegistry) -> None:
    registry.add([Tool("remote", "An MCP server's tool.", {"type": "object", "properties": {}}, lambda: None)])
