"""The main window on the offscreen platform: wiring, status, conversation, latency plot."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PySide6.QtCore import Qt

from core.call.state import CallState, Phase
from core.config import Settings
from core.call.events import EngineEvent, LatencyMeasured, Problem, StateChanged, TranscriptDelta
from core.telemetry import LatencyTracker
from gui.app import application, build_window
from gui.main_window import MainWindow
from gui.status_line import StatusLine


class RecordingEngine:
    """Only for the wiring test: records the push-to-talk calls the window makes."""

    provider_label = "Local (offline)"
    model = "sandra-local"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.state = CallState(Phase.CONNECTED)
        self.observers: list[Callable[[EngineEvent], None]] = []

    def subscribe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def press(self) -> None:
        self.calls.append("press")

    def release(self) -> None:
        self.calls.append("release")


@pytest.fixture
def window(qtbot, private_home) -> MainWindow:
    application()
    tracker = LatencyTracker("test", batch_size=10_000)
    win = build_window(Settings(), latency_stats=lambda: tracker.stats("response_latency"))
    win.tracker = tracker  # type: ignore[attr-defined]
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.allow_close()
    win.close()


def test_window_builds_with_every_part(window: MainWindow) -> None:
    titles = [action.text().replace("&", "") for action in window.menuBar().actions()]
    assert titles == ["File", "Call", "Help"]
    assert window.status_line.text() == "Not connected"
    assert window.ptt.text().startswith("Hold to talk")
    assert window.latency_plot is None  # installed after the first paint, not before
    window.install_latency_plot()
    assert window.latency_plot is not None
    image = window.grab().toImage()
    assert image.width() >= 700 and image.height() >= 450


def test_mouse_and_space_drive_push_to_talk(qtbot, private_home) -> None:
    application()
    engine = RecordingEngine()
    win = build_window(Settings(), engine=engine)  # type: ignore[arg-type]
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    assert win.status_line.text() == "Not connected"
    qtbot.mousePress(win.ptt, Qt.MouseButton.LeftButton)
    assert engine.calls == ["press"]
    assert "release to send" in win.ptt.text()
    qtbot.mouseRelease(win.ptt, Qt.MouseButton.LeftButton)
    assert engine.calls == ["press", "release"]
    qtbot.keyPress(win, Qt.Key.Key_Space)
    qtbot.keyRelease(win, Qt.Key.Key_Space)
    assert engine.calls == ["press", "release", "press", "release"]
    # Space typed into a text field is text, not push-to-talk.
    win.devices.input.setEditable(True)
    win.devices.input.lineEdit().setFocus()
    qtbot.waitUntil(lambda: win.devices.input.lineEdit().hasFocus())
    qtbot.keyPress(win.devices.input.lineEdit(), Qt.Key.Key_Space)
    assert engine.calls == ["press", "release", "press", "release"]
    # Barge-in is the engine's job: pressing while the assistant speaks is just press().
    win.session.bridge.assistant_speaking.emit(True)
    assert "interrupt" in win.ptt.text()
    qtbot.mousePress(win.ptt, Qt.MouseButton.LeftButton)
    qtbot.mouseRelease(win.ptt, Qt.MouseButton.LeftButton)
    assert engine.calls[-2:] == ["press", "release"]
    win.allow_close()
    win.close()


def test_status_for_every_state(qtbot) -> None:
    application()
    line = StatusLine()
    qtbot.addWidget(line)
    line.set_provider("OpenAI", "gpt-realtime")
    line.set_state(CallState(Phase.CONNECTING))
    assert line.text() == "Connecting to OpenAI…"
    line.set_state(CallState(Phase.CONNECTED))
    assert line.text().startswith("Connected to OpenAI · model gpt-realtime")
    line.set_state(CallState(Phase.ENDED, reason="The provider refused the API key."))
    assert line.text() == "Call ended: The provider refused the API key."
    assert line._reconnect.isVisibleTo(line)
    line.set_state(CallState(Phase.RECONNECTING, attempt=2, max_attempts=5, delay=3.0))
    assert line.text() == "Reconnecting in 3 s, attempt 2 of 5"
    assert not line._reconnect.isVisibleTo(line)
    # The countdown ticks by itself, with no new state.
    qtbot.waitUntil(lambda: line.text() == "Reconnecting in 2 s, attempt 2 of 5", timeout=2500)
    qtbot.waitUntil(lambda: line.text() == "Reconnecting in 1 s, attempt 2 of 5", timeout=2500)
    qtbot.waitUntil(lambda: line.text() == "Reconnecting now, attempt 2 of 5", timeout=2500)
    line.set_state(CallState(Phase.CONNECTING, attempt=2, max_attempts=5))
    assert line.text() == "Connecting to OpenAI… (attempt 2 of 5)"


def test_reconnect_button_asks_to_connect(qtbot) -> None:
    application()
    line = StatusLine()
    qtbot.addWidget(line)
    line.set_state(CallState(Phase.ENDED, reason="gone"))
    with qtbot.waitSignal(line.reconnect_requested, timeout=1000):
        qtbot.mouseClick(line._reconnect, Qt.MouseButton.LeftButton)


def test_conversation_streams_deltas_and_final_replaces(window: MainWindow) -> None:
    feed = window.session.bridge.feed
    feed(TranscriptDelta("user", "what ", False, "u1"))
    feed(TranscriptDelta("user", "time", False, "u1"))
    assert window.conversation.turns() == [("user", "what time")]
    feed(TranscriptDelta("assistant", "It is ", False, "a1"))
    feed(TranscriptDelta("user", "What time is it?", True, "u1"))
    feed(TranscriptDelta("assistant", "ten.", False, "a1"))
    assert window.conversation.turns() == [("user", "What time is it?"), ("assistant", "It is ten.")]
    feed(TranscriptDelta("assistant", "It is ten o'clock.", True, "a1"))
    feed(TranscriptDelta("assistant", " late", False, "a1"))  # after the final: ignored
    assert window.conversation.turns()[-1] == ("assistant", "It is ten o'clock.")


def test_latency_lines_sit_at_the_tracker_values(window: MainWindow) -> None:
    tracker: LatencyTracker = window.tracker  # type: ignore[attr-defined]
    feed = window.session.bridge.feed
    early = [310.0, 420.0]
    for ms in early:  # before the plot exists: replayed when it is installed
        tracker.record("response_latency", ms)
        feed(LatencyMeasured("response_latency", ms))
    window.install_latency_plot()
    plot = window.latency_plot
    assert plot is not None
    stats = tracker.stats("response_latency")
    assert plot.line_values() == (stats["p95"], stats["p99"])
    values = [200.0 + (i * 37) % 500 for i in range(40)] + [1500.0, 900.0]
    for count, ms in enumerate(values, start=len(early) + 1):
        tracker.record("response_latency", ms)
        feed(LatencyMeasured("response_latency", ms))
        stats = tracker.stats("response_latency")
        assert plot.line_values() == (stats["p95"], stats["p99"])
        assert plot.figures()["count"] == str(count)
    assert stats["p99"] == 1500.0  # the spike is the top 1 %: the line must have moved to it
    assert plot.figures()["p99"] == f"{stats['p99']:.0f} ms"
    assert plot.figures()["avg"] == f"{stats['avg']:.0f} ms"
    # Other measurements do not become points.
    feed(LatencyMeasured("connect", 50.0))
    assert len(plot.points.xData) == len(early) + len(values)


def test_plot_keeps_a_rolling_window_over_hundreds_of_turns(window: MainWindow) -> None:
    tracker: LatencyTracker = window.tracker  # type: ignore[attr-defined]
    window.install_latency_plot()
    plot = window.latency_plot
    assert plot is not None
    for i in range(600):
        ms = 300.0 + (i % 50) * 10
        tracker.record("response_latency", ms)
        window.session.bridge.feed(LatencyMeasured("response_latency", ms))
    assert len(plot.points.xData) == 200
    assert plot.points.xData[-1] == 600
    stats = tracker.stats("response_latency")
    assert plot.line_values() == (stats["p95"], stats["p99"])


def test_problems_are_shown_readably(window: MainWindow) -> None:
    window.session.bridge.feed(Problem("The microphone is gone. Plug it in and press Reconnect.\nTraceback...", True))
    assert window.banner.isVisibleTo(window)
    assert window.banner.text() == "The microphone is gone. Plug it in and press Reconnect."
    window.session.bridge.feed(StateChanged(CallState(Phase.CONNECTED)))
    assert not window.banner.isVisibleTo(window)
