"""The window end to end: real engine, real local server process, PulseAudio, offscreen Qt.

Each test runs its scenario on a qasync loop over the test's QApplication, as the app
itself does (one thread for Qt and asyncio), so the window, the engine and aiortc
share the loop exactly as in `python main.py`. Qt input goes through QTest (pytest-qt's
qtbot) from inside the coroutine; waiting is asyncio's, never a nested Qt loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import qasync
from PySide6.QtCore import Qt

from core.config import Settings
from core.engine import CallEngine
from engine_helpers import custom_settings, fast_options, is_audible
from gui.app import application, build_window, run_window
from gui.main_window import MainWindow
from pulse_rig import PulseRig
from server_process import TEST_SERVER_KEY, ServerProcess, start_server
from speech_samples import make_speech_wav, read_wav_int16

pytestmark = pytest.mark.timeout(150)

QUESTION = "what time is it"
MODE = "assistant"  # the server's mode that hears, answers and speaks
# Long enough for recognition and synthesis on 2 cores, short enough to fail fast.
ANSWER_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 30.0


def run_on_qasync(scenario: Awaitable[None]) -> None:
    """Run a coroutine on a qasync loop (Qt and asyncio on this thread), then close the loop."""
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(application())) as runner:
        runner.run(scenario)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        await asyncio.sleep(0.05)


def connected(window: MainWindow) -> bool:
    return window.status_line.text().startswith("Connected")


def latency_points(window: MainWindow) -> int:
    plot = window.latency_plot
    return 0 if plot is None or plot.points.xData is None else len(plot.points.xData)


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The spoken question at 48 kHz, with a little silence after it (the rig's tail)."""
    samples, rate = read_wav_int16(make_speech_wav(QUESTION, tmp_path_factory.mktemp("speech") / "q.wav"))
    assert rate == 48000
    return np.concatenate([samples, np.zeros(rate // 5, dtype=np.int16)])


class Speaking:
    """Counts the assistant's finished answers (speaking went True, then False)."""

    def __init__(self, window: MainWindow) -> None:
        self.finished = 0
        self._speaking = False
        window.session.bridge.assistant_speaking.connect(self._on)

    def _on(self, speaking: bool) -> None:
        if self._speaking and not speaking:
            self.finished += 1
        self._speaking = speaking


async def push_to_talk_turn(window: MainWindow, pulse: PulseRig, speech: np.ndarray,
                            press: Callable[[], None], release: Callable[[], None], speaking: Speaking) -> np.ndarray:
    """Hold, speak into the virtual microphone, let go; returns what the speaker played."""
    turns, points, answers = len(window.conversation.turns()), latency_points(window), speaking.finished
    recording = pulse.record_speaker()
    try:
        press()
        assert "release to send" in window.ptt.text()
        # Off the loop: play_into_mic blocks in its pipe write for about as long as the speech
        # lasts, and a stalled loop would starve the call's outgoing audio track.
        await asyncio.get_running_loop().run_in_executor(None, lambda: pulse.play_into_mic(speech).wait())
        await asyncio.sleep(0.3)  # the rig's own latency: the last words are still on their way
        release()
        await until(lambda: len(window.conversation.turns()) >= turns + 2, ANSWER_TIMEOUT_S,
                    "the question and the answer are in the conversation")
        await until(lambda: latency_points(window) == points + 1, ANSWER_TIMEOUT_S, "a latency point is drawn")
        await until(lambda: speaking.finished > answers, ANSWER_TIMEOUT_S, "the answer has been spoken")
        await asyncio.sleep(0.3)  # the null sink's monitor trails the playback a little
    finally:
        heard = recording.stop()
    return heard


def mouse(window: MainWindow, qtbot) -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: qtbot.mousePress(window.ptt, Qt.MouseButton.LeftButton),
            lambda: qtbot.mouseRelease(window.ptt, Qt.MouseButton.LeftButton))


def space(window: MainWindow, qtbot) -> tuple[Callable[[], None], Callable[[], None]]:
    return (lambda: qtbot.keyPress(window, Qt.Key.Key_Space), lambda: qtbot.keyRelease(window, Qt.Key.Key_Space))


def assert_answered(turns: list[tuple[str, str]]) -> None:
    """The newest two turns: the question as heard, then a spoken answer with the time in it."""
    (user_role, user_text), (assistant_role, assistant_text) = turns[-2:]
    assert (user_role, assistant_role) == ("user", "assistant"), turns
    assert user_text.lower().strip(" ?.") == QUESTION, turns
    assert any(ch.isdigit() for ch in assistant_text), f"the answer carries no time: {assistant_text!r}"


def assert_lines_match_telemetry(window: MainWindow, engine: CallEngine, turns: int) -> None:
    stats = engine.telemetry.stats("response_latency")
    assert stats["count"] == turns
    assert window.latency_plot is not None
    assert window.latency_plot.line_values() == (stats["p95"], stats["p99"])


def window_for(server: ServerProcess) -> tuple[MainWindow, CallEngine]:
    settings = custom_settings(server.base_url, input_device="pulse", output_device="pulse")
    engine = CallEngine(settings, api_key=TEST_SERVER_KEY, options=fast_options())
    return build_window(settings, engine=engine), engine


async def close_and_wait(window: MainWindow, running: asyncio.Future[int]) -> None:
    window.close()
    assert await asyncio.wait_for(running, 15) == 0
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftover, f"tasks still pending after the window closed: {leftover}"


def test_mouse_and_space_turns_are_answered_heard_and_plotted(qtbot, pulse, question, tmp_path, private_home):
    server = start_server(tmp_path, "--mode", MODE)
    window, engine = window_for(server)
    qtbot.addWidget(window)
    speaking = Speaking(window)

    async def scenario() -> None:
        running = asyncio.ensure_future(run_window(window))
        await until(lambda: connected(window), CONNECT_TIMEOUT_S, "the window says connected")
        heard_by_mouse = await push_to_talk_turn(window, pulse, question, *mouse(window, qtbot), speaking)
        assert is_audible(heard_by_mouse), "the answer to the mouse turn was not heard on the speaker"
        assert_answered(window.conversation.turns())
        assert_lines_match_telemetry(window, engine, 1)
        heard_by_space = await push_to_talk_turn(window, pulse, question, *space(window, qtbot), speaking)
        assert is_audible(heard_by_space), "the answer to the space-bar turn was not heard on the speaker"
        assert len(window.conversation.turns()) == 4
        assert_answered(window.conversation.turns())
        assert_lines_match_telemetry(window, engine, 2)
        await close_and_wait(window, running)

    try:
        run_on_qasync(scenario())
    finally:
        server.stop()
